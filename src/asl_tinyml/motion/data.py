"""Motion data: sequence files in the shared layout and their raw parts (hands, pose).

Two layouts: the traduttore files (`letters.npz`, `words.npz`: `x`, `label`, `session`; `load_sequences`)
and the word collection of many people's webcams (`words_people.npz`: `x`, `label`, `group`, a repository;
`load_word_collection`). Every recording carries a group, the unit that splits and held-out folds keep
whole: the repository, or `session-<name>` for the traduttore sessions. `concat_sequences` joins files of
different lengths (20 and 30 frames), keeping each recording's own length."""

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
    """Recordings: raw landmarks (N, T, D) float32, labels, sessions, groups and frames per recording (a
    recording shorter than T is padded with its last frame)."""

    x: np.ndarray
    labels: np.ndarray  # (N,) str
    sessions: np.ndarray  # (N,) str: the traduttore session, or the group
    path: Path | None = None
    groups: np.ndarray | None = None  # (N,) str: the split unit; default `session-<session>`
    lengths: np.ndarray | None = None  # (N,) int: real frames; default T

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = np.char.add("session-", np.asarray(self.sessions).astype(str))
        if self.lengths is None:
            self.lengths = np.full(len(self.x), self.x.shape[1] if self.x.ndim == 3 else 0, np.int64)

    @property
    def kind(self) -> str:
        return kind_for_width(self.x.shape[-1])

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: np.ndarray) -> SequenceSet:
        return SequenceSet(self.x[index], self.labels[index], self.sessions[index], self.path, self.groups[index],
                           self.lengths[index])

    def by_length(self, index: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(positions in `index`, windows (n, L, D) at their own length L) for each length among `index`."""
        index = np.arange(len(self)) if index is None else np.asarray(index)
        lengths = self.lengths[index]
        return [(np.flatnonzero(lengths == n), self.x[index[lengths == n], :n]) for n in np.unique(lengths)]


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


WORDS_PEOPLE_FIX = ("pass the word collection's words_people.npz (x (N, T, 258) float, label, group), "
                    "see ../shared/sequences/sign_words_people/README.md")


def load_word_collection(path: str | Path) -> SequenceSet:
    """The word collection (`x` (N, T, 258), `label`, `group`): every recording's session and group is its
    repository. A missing field or a wrong shape is a one-line `UserError` naming the file and the fix."""
    z = read_npz(path, {"x": 3, "label": 1, "group": 1}, WORDS_PEOPLE_FIX)
    x = z["x"]
    if not len(x) or not np.issubdtype(x.dtype, np.number):
        raise UserError(f"{path}: x must hold at least one window of numbers, got shape {x.shape} of {x.dtype}; "
                        f"{WORDS_PEOPLE_FIX}")
    if x.shape[2] != WORDS_WIDTH or x.shape[1] < 2:
        raise UserError(f"{path}: x has shape {x.shape}, expected (N, T >= 2, {WORDS_WIDTH}) "
                        f"(pose, left hand, right hand); {WORDS_PEOPLE_FIX}")
    groups = z["group"].astype(str)
    return SequenceSet(np.nan_to_num(x.astype(np.float32)), z["label"].astype(str), groups, Path(path), groups)


def concat_sequences(sets: list[SequenceSet]) -> SequenceSet:
    """One set of several files of one kind; shorter recordings are padded to the longest with their last
    frame (their `lengths` keep the real count, which training and prediction use)."""
    kinds = {s.kind for s in sets}
    if len(kinds) != 1:
        raise UserError(f"cannot join sequence files of different kinds ({', '.join(sorted(kinds))})")
    frames = max(s.x.shape[1] for s in sets)
    x = np.concatenate([np.concatenate([s.x, np.repeat(s.x[:, -1:], frames - s.x.shape[1], axis=1)], axis=1)
                        for s in sets])
    joined = [np.concatenate([getattr(s, f) for s in sets]) for f in ("labels", "sessions")]
    return SequenceSet(x, *joined, None, np.concatenate([s.groups for s in sets]),
                       np.concatenate([s.lengths for s in sets]))


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

