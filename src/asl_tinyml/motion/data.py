"""Motion data: sequence files in the shared layout and their raw parts (hands, pose)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import UserError
from ..sources import read_npz

KINDS = ("letters", "words")
LETTERS_WIDTH, WORDS_WIDTH = 126, 258
WIDTHS = {LETTERS_WIDTH: "letters", WORDS_WIDTH: "words"}
DEFAULT_ASPECT = 0.75  # height / width of the recordings (a 640x480 webcam): y is rescaled to x's unit
HAND_POINTS, POSE_POINTS = 21, 33
HOLDOUT_SESSIONS = ("danial", "cam")
MOTION_LETTERS = ("j", "z")  # the letters only the motion model can tell
IDLE = "idle"


@dataclass
class SequenceSet:
    """A sequence file: raw landmarks (N, T, D) float32, labels, sessions."""

    x: np.ndarray
    labels: np.ndarray  # (N,) str
    sessions: np.ndarray  # (N,) str
    path: Path | None = None

    @property
    def kind(self) -> str:
        return kind_for_width(self.x.shape[-1])

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: np.ndarray) -> SequenceSet:
        return SequenceSet(self.x[index], self.labels[index], self.sessions[index], self.path)


def kind_for_width(width: int) -> str:
    if width not in WIDTHS:
        raise UserError(
            f"landmark width {width} is neither {LETTERS_WIDTH} (letters: two hands) nor {WORDS_WIDTH} "
            "(words: pose + two hands); see the sequence README for the layout"
        )
    return WIDTHS[width]


SEQUENCES_FIX = "pass an .npz in the shared layout: x (N, T, 126 or 258), label (N,), optional session (N,)"


def load_sequences(path: str | Path) -> SequenceSet:
    """An `.npz` in the shared layout: `x` (N, T, D) numbers, `label` (N,), optional `session` (N,), at least
    one window; anything else is a one-line `UserError` naming the file."""
    z = read_npz(path, {"x": 3, "label": 1}, SEQUENCES_FIX, optional={"session": 1})
    x = z["x"]
    if not len(x):
        raise UserError(f"{path} holds no windows (x has shape {x.shape}); {SEQUENCES_FIX}")
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"{path}: x holds {x.dtype} values, not numbers; {SEQUENCES_FIX}")
    try:
        kind_for_width(x.shape[-1])
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from exc
    labels = z["label"].astype(str)
    sessions = z["session"].astype(str) if "session" in z else np.full(len(labels), "unknown")
    return SequenceSet(np.nan_to_num(x.astype(np.float32)), labels, sessions, Path(path))


# --- raw layout --------------------------------------------------------------------------------------
@dataclass
class Parts:
    """A batch of windows split into parts: hands (N, T, 21, 3), pose (N, T, 33, 4) or None."""

    left: np.ndarray
    right: np.ndarray
    pose: np.ndarray | None

    def copy(self) -> Parts:
        return Parts(self.left.copy(), self.right.copy(), None if self.pose is None else self.pose.copy())

    def take(self, index: np.ndarray) -> Parts:
        """Frames `index` (N, T') of every window."""
        rows = np.arange(len(self.left))[:, None]
        return Parts(self.left[rows, index], self.right[rows, index], None if self.pose is None else self.pose[rows, index])


def split_parts(x: np.ndarray) -> Parts:
    """(N, T, 126) or (N, T, 258) in the shared layout -> Parts (float32 copies)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    n, t, d = x.shape
    kind = kind_for_width(d)
    hands = x[..., :126] if kind == "letters" else x[..., 132:]
    pose = None if kind == "letters" else x[..., :132].reshape(n, t, POSE_POINTS, 4).copy()
    return Parts(hands[..., :63].reshape(n, t, HAND_POINTS, 3).copy(),
                 hands[..., 63:].reshape(n, t, HAND_POINTS, 3).copy(), pose)


def _present(points: np.ndarray) -> np.ndarray:
    """(..., P, C) -> (...) bool: the part was detected (not all zeros)."""
    return np.abs(points).sum(axis=(-1, -2)) > 0

