"""Training a motion model (`train_motion_model`, with `Sampling` by class and group for many-group data),
its metrics (`decide`, `score`), the held-out folds (`holdout_split` for a session, `grouped_folds` for the
repositories of the word collection) and one fold's figures (`holdout`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import UserError
from .augment import TRANSPLANT, Augment, augment_parts, carry_over, transplant_motion
from .data import DEFAULT_ASPECT, IDLE, MOTION_LETTERS, Parts, SequenceSet, split_parts
from .features import frame_width, sequence_features

MODEL_NAME = "motion_fastkan"
# a window whose best class is under this probability counts as `idle`. Words: 0.5 helped on the traduttore
# sessions but read 14% of new repositories' signs as idle; `idle` is a trained class (the collection's blank
# recordings), so the best class decides. Letters: no held-out idle to measure it on, so off.
IDLE_BELOW = {"letters": 0.0, "words": 0.0}
# a `j` or `z` under this probability gives way to the best still letter. With letters caught between two
# others in training (`Augment.transition`) a threshold only cost j/z recall on the held-out sessions, so 0
# (docs/experiments.md, issue 24); the model file records it, and predictors and the live page read it there.
MOTION_BELOW = {"letters": 0.0, "words": 0.0}
NOT_STATIC = (*MOTION_LETTERS, IDLE, "space")  # letters-file classes that are not a still handshape


def thresholds(kind: str) -> dict[str, float]:
    """`decide`'s thresholds of a kind's models (also written into the model file's feature recipe)."""
    return {"idle_below": IDLE_BELOW[kind], "motion_below": MOTION_BELOW[kind]}


def stray_rate(labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Static-letter recordings (`labels` not in `NOT_STATIC`) whose `predicted` label is `j` or `z`: share,
    count and the letters they came from."""
    labels, predicted = np.asarray(labels).astype(str), np.asarray(predicted).astype(str)
    static = ~np.isin(labels, NOT_STATIC)
    stray = static & np.isin(predicted, MOTION_LETTERS)
    return {"rate": float(stray.sum() / max(static.sum(), 1)), "n": int(stray.sum()), "static": int(static.sum()),
            "from": {str(k): int(v) for k, v in zip(*np.unique(labels[stray], return_counts=True))}}


@dataclass(frozen=True)
class Sampling:
    """Batches drawn with replacement instead of epochs over the recordings: `samples` windows an epoch; a
    class is drawn in proportion to its recordings to the power `class_power` (0: every class alike, 1: as
    recorded), then a group of that class uniformly (a repository with 6 recordings counts as much as a
    session with 180), then a recording of that group. The draws balance the classes, so the loss is not
    class-weighted."""

    samples: int = 4000
    class_power: float = 1.0


def sampling_weights(labels: np.ndarray, groups: np.ndarray, class_power: float = 1.0) -> np.ndarray:
    """(N,) probabilities of drawing each recording (`Sampling`)."""
    labels, groups = np.asarray(labels).astype(str), np.asarray(groups).astype(str)
    weights = np.zeros(len(labels))
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        _, which, per_group = np.unique(groups[rows], return_inverse=True, return_counts=True)
        weights[rows] = len(rows) ** class_power / len(per_group) / per_group[which]
    return weights / weights.sum()


def make_model(kind: str, num_classes: int, **options: Any) -> nn.Module:
    from ..models import create_model

    return create_model(MODEL_NAME, num_classes, in_features=frame_width(kind), **options)


def _predict_logits(model: nn.Module, feats: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(feats), batch):
            out.append(model(torch.as_tensor(feats[i : i + batch])).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def train_motion_model(
    data: SequenceSet,
    classes: list[str],
    train_idx: np.ndarray,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    label_smoothing: float = 0.05,
    seed: int = 0,
    aug: Augment = Augment(),
    transplant: float = 1.0,
    ema: float = 0.0,
    sampling: Sampling | None = None,
    progress: bool = False,
    **options: Any,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train `motion_fastkan` on `train_idx` windows of `data` with `engine.fit` (AdamW, one-cycle; epochs over
    the windows with class-weighted cross-entropy, or `sampling`'s draws); every batch is a fresh augmentation
    at one random length in [min_frames, max_frames], and (letters) some `j`/`z` windows take a static `i`/`d`
    handshape (`transplant_motion`; `TRANSPLANT`'s shares times `transplant`).
    `ema` > 0 keeps an exponential moving average of the weights (and BatchNorm statistics) and returns it.
    Returns (model in eval mode, per-epoch history). There is no validation set to select on: the
    held-out session is the test, so the last epoch is kept."""
    from ..engine import FitOptions, class_weights, fit

    torch.manual_seed(seed)
    index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([index.get(str(c), -1) for c in data.labels])
    train_idx = np.asarray(train_idx)[y_all[train_idx] >= 0]
    if len(train_idx) == 0:
        raise UserError("no training window carries one of the model's classes")
    parts = split_parts(data.x)
    kind = data.kind
    model = make_model(kind, len(classes), **options)
    donors = {index[m]: (train_idx[data.labels[train_idx] == s], share * transplant, turn)
              for m, (s, share, turn) in TRANSPLANT.items() if kind == "letters" and m in index and s in index}
    donors = {k: v for k, v in donors.items() if len(v[0]) and v[1] > 0}

    rng = np.random.default_rng(seed)  # one stream over the epochs: orders, lengths, transplants, augmentation
    if sampling is not None:
        chance = sampling_weights(data.labels[train_idx], data.groups[train_idx], sampling.class_power)
        steps = max(1, sampling.samples // batch_size)

    def orders() -> Iterator[np.ndarray]:
        if sampling is not None:
            yield from (rng.choice(train_idx, batch_size, p=chance) for _ in range(steps))
            return
        order = rng.permutation(train_idx)
        yield from (order[i : i + batch_size] for i in range(0, len(order), batch_size))

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in orders():
            if len(idx) < 2:  # BatchNorm needs two windows
                continue
            frames = int(rng.integers(aug.min_frames, aug.max_frames + 1))
            rows = Parts(parts.left[idx], parts.right[idx], None if parts.pose is None else parts.pose[idx])
            for label, (pool, share, turn) in donors.items():
                chosen = np.flatnonzero((y_all[idx] == label) & (rng.random(len(idx)) < share))
                if len(chosen):
                    transplant_motion(rows, chosen, parts.right[rng.choice(pool, len(chosen))], rng, turn)
            batch, aspect = augment_parts(rows, frames, rng, aug, data.lengths[idx])
            if kind == "letters" and aug.transition > 0:  # letters caught between two others
                caught = np.flatnonzero(rng.random(len(idx)) < aug.transition)
                others = rng.integers(0, len(idx), len(caught))
                carry_over(batch, caught[others != caught], others[others != caught], rng)
            yield torch.as_tensor(sequence_features(batch, aspect, kind)), torch.as_tensor(y_all[idx])

    opts = FitOptions(epochs=epochs, lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing, ema_decay=ema, seed=seed)
    weight = class_weights(y_all[train_idx], len(classes)) if sampling is None else None
    result = fit(model, batches, opts, steps_per_epoch=steps if sampling is not None else -(-len(train_idx) // batch_size),
                 class_weight=weight, progress=progress, desc=f"motion {kind}")
    return result.model, result.history


# --- metrics -----------------------------------------------------------------------------------------
def decide(proba: np.ndarray, classes: list[str], idle_below: float = 0.0, motion_below: float = 0.0) -> np.ndarray:
    """Class indices (N,): the most probable class, or `idle` (when the model has it) where that class's
    probability is under `idle_below` (a window no sign wins outright shows no sign), and the best other class
    where a `j` or `z` wins with less than `motion_below` (a static letter must not turn into a moving one on
    a weak call)."""
    proba = np.asarray(proba)
    pred = proba.argmax(1) if len(proba) else np.zeros(0, np.int64)
    moving = [classes.index(c) for c in MOTION_LETTERS if c in classes]
    if motion_below > 0 and moving and len(proba):
        weak = np.isin(pred, moving) & (proba.max(1) < motion_below)
        static = np.where(np.isin(np.arange(proba.shape[1]), moving), -np.inf, proba)
        pred = np.where(weak, static.argmax(1), pred)
    if idle_below > 0 and IDLE in classes and len(proba):
        pred = np.where(proba.max(1) < idle_below, classes.index(IDLE), pred)
    return pred


def score(labels: np.ndarray, proba: np.ndarray, classes: list[str], idle_below: float = 0.0,
          motion_below: float = 0.0) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the classes present in `labels`), per-class precision/recall/F1 and the
    confusion matrix of `decide`'s classes, for windows whose label is one of `classes` (the others are
    counted and skipped)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels).astype(str)
    known = np.isin(labels, classes)
    skipped = {str(k): int(v) for k, v in zip(*np.unique(labels[~known], return_counts=True))}
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels[known]], dtype=np.int64)
    pred = decide(np.asarray(proba)[known], list(classes), idle_below, motion_below) if known.any() else np.zeros(0, np.int64)
    present = np.unique(y)
    out: dict[str, Any] = {"n": int(known.sum()), "skipped": skipped, "classes": list(classes)}
    if not len(y):
        out.update(accuracy=float("nan"), macro_f1=float("nan"), per_class={}, confusion=[])
        return out
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=np.arange(len(classes)), zero_division=0)
    out["accuracy"] = float(np.mean(pred == y))
    out["macro_f1"] = float(np.mean(f[present]))
    out["per_class"] = {
        classes[i]: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4), "f1": round(float(f[i]), 4),
                     "support": int(s[i])}
        for i in range(len(classes)) if s[i] > 0 or (pred == i).any()
    }
    out["confusion"] = confusion_matrix(y, pred, labels=np.arange(len(classes))).tolist()
    return out


def holdout_split(sessions: np.ndarray, held_out: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: every window of session `held_out` is test, all others train."""
    sessions = np.asarray(sessions).astype(str)
    test = np.flatnonzero(sessions == held_out)
    train = np.flatnonzero(sessions != held_out)
    if not len(test):
        raise UserError(f"no window of session {held_out!r}; sessions: {sorted(set(sessions))}")
    return train, test


def grouped_folds(labels: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 0,
                  among: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of a grouped, label-stratified k-fold (scikit-learn's StratifiedGroupKFold,
    shuffled with `seed`) over the rows `among` (a bool mask; all rows without it): every group is tested once
    and never trains its own fold; rows outside `among` train every fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = np.asarray(labels).astype(str), np.asarray(groups).astype(str)
    among = np.ones(len(labels), bool) if among is None else np.asarray(among, bool)
    rows, always = np.flatnonzero(among), np.flatnonzero(~among)
    if len(np.unique(groups[rows])) < k:
        raise UserError(f"{k} grouped folds need at least {k} groups, got {len(np.unique(groups[rows]))}")
    split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(np.concatenate([rows[tr], always])), rows[te])
            for tr, te in split.split(rows, labels[rows], groups[rows])]


def predict_recordings(model: nn.Module, data: SequenceSet, index: np.ndarray) -> np.ndarray:
    """Probabilities (len(index), C) of the recordings `index`, each read at its own length."""
    parts = [(rows, _softmax(_predict_logits(model, sequence_features(windows, DEFAULT_ASPECT, data.kind))))
             for rows, windows in data.by_length(index)]
    proba = np.zeros((len(index), parts[0][1].shape[1] if parts else 0), np.float32)
    for rows, p in parts:
        proba[rows] = p
    return proba


def holdout(
    data: SequenceSet, held_out: str, *, classes: list[str] | None = None, seed: int = 0, epochs: int = 20,
    progress: bool = False, split: tuple[np.ndarray, np.ndarray] | None = None, **options: Any,
) -> tuple[dict[str, Any], nn.Module, np.ndarray]:
    """Train on every session but `held_out` (or on `split`'s train rows, scoring its test rows, a fold
    named `held_out`), score the held-out recordings: (metrics, model, test probabilities)."""
    classes = classes or [str(c) for c in sorted(set(data.labels))]
    train, test = split if split is not None else holdout_split(data.sessions, held_out)
    start = time.perf_counter()
    model, history = train_motion_model(data, classes, train, seed=seed, epochs=epochs, progress=progress, **options)
    seconds = time.perf_counter() - start
    proba = predict_recordings(model, data, test)
    trained = sorted({str(c) for c in data.labels[train]} & set(classes))
    rule = thresholds(data.kind)
    metrics = score(data.labels[test], proba, classes, **rule)
    seen = np.isin(data.labels[test], trained)
    # classes absent from the training sessions cannot be predicted: scored apart, on the trained classes
    metrics_trained = score(data.labels[test][seen], proba[seen], classes, **rule)
    signs = seen & (data.labels[test] != IDLE)  # the signs alone: `idle` differs most between sessions
    metrics_signs = score(data.labels[test][signs], proba[signs], classes, **rule)
    strays = ({"strays": stray_rate(data.labels[test], np.asarray(classes)[decide(proba, classes, **rule)])}
              if data.kind == "letters" else {})
    return {
        **strays, "held_out": held_out, "n_train": len(train), "n_test": len(test), "train_seconds": round(seconds, 1),
        "epochs": epochs, "seed": seed, "untrained_classes": sorted({str(c) for c in data.labels[test]} - set(trained)),
        "groups": len(np.unique(data.groups[test])),
        "all": _brief(metrics), "trained_classes": _brief(metrics_trained), "signs_only": _brief(metrics_signs),
        "per_class": metrics_trained.get("per_class", {}), "final_train_loss": history[-1]["train_loss"] if history else None,
    }, model, proba


def _softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(logits.astype(np.float64), axis=1).astype(np.float32) if len(logits) else logits


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "accuracy", "macro_f1", "skipped")}
