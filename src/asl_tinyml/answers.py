"""What an answer may be: the class sets of `--classes`, ASL handshape twins, and "no hand found".

ASL signs some digits and letters with one handshape (`0`/`o`, `2`/`v`, `6`/`w`, `9`/`f`); only context
tells them apart, so a user says whether they spell letters or digits (`class_mask`), and scores also count
a twin as right (`twin_of`) or restrict each answer to its true label's kind (`predict_in_kind`).
"""

from __future__ import annotations

import numpy as np

from .config import UserError

NO_HAND_LABEL = "no hand found"  # the answer for a photo without a detected hand and no confident pixel guess
CLASS_SETS = ("all", "letters", "digits")
TWINS = (("0", "o"), ("2", "v"), ("6", "w"), ("9", "f"))  # ASL handshape twins: the same shape, told by context


def class_mask(classes: list[str], which: str = "all") -> np.ndarray:
    """(C,) bool: the classes an answer may take under `--classes` (`letters`: a-z and space, `digits`: 0-9)."""
    if which not in CLASS_SETS:
        raise UserError(f"--classes must be one of {', '.join(CLASS_SETS)}, got {which!r}")
    if which == "all":
        return np.ones(len(classes), bool)
    mask = np.array([c.isdigit() == (which == "digits") for c in classes])
    if not mask.any():
        raise UserError(f"the model knows no {which} (its classes: {' '.join(classes)}); use --classes all")
    return mask


def restrict_proba(proba: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Probabilities with the classes outside `mask` set to 0 and each row renormalised."""
    out = np.where(mask[None, :], np.asarray(proba, np.float64), 0.0)
    total = out.sum(axis=1, keepdims=True)
    return (out / np.where(total > 0, total, 1.0)).astype(np.float32)


def twin_of(classes: list[str]) -> np.ndarray:
    """(C,) int: each class's handshape twin (itself where it has none)."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.arange(len(classes))
    for a, b in TWINS:
        if a in index and b in index:
            out[index[a]], out[index[b]] = index[b], index[a]
    return out


def is_digit_class(classes: list[str]) -> np.ndarray:
    """(C,) bool: which classes are digits."""
    return np.array([c.isdigit() for c in classes], bool)


def predict_in_kind(proba: np.ndarray, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Each row's best class among those of its true label's kind (digits or the rest): the answer a user
    gets who tells the app whether they spell letters or digits (`--classes`)."""
    digit = is_digit_class(classes)
    same = digit[None, :] == digit[np.asarray(labels)][:, None]
    return np.where(same, np.asarray(proba, np.float64), -1.0).argmax(axis=1)

