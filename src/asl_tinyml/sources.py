"""Every landmark source in one form, for the landmark model and the motion models alike.

Still hands become a `HandSet` (points, found, label, group, source): wrist at the origin, unit palm size,
as seen (never mirrored by a left/right label, which the keypoint rows lack and a mirrored photo flips):
- a run's images: MediaPipe Hands on every cached image (`landmarks.LandmarkCache`, `image_hands`);
- `landmarks/asl_keypoints/letters.npz`: 2D webcam keypoints of 9 repositories (`keypoint_hands`);
- `sequences/sign_sequences/letters.npz`: static frames of Holistic recordings (`sequence_hands`).

Sequence files (`letters.npz`, `words.npz`, `words_people.npz`) are read by `read_npz`, which checks their
fields and shapes with a one-line error; each recording's group is its `group` (a repository) or its
`session`. A group is one person, camera and sitting: the unit that splits and held-out folds keep whole.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import UserError
from .hands import LEFT, NUM_LANDMARKS, canonical_points

KEYPOINT_SOURCE = "asl_keypoints"  # 2D hand keypoints of many repositories' webcams (no images)
SEQUENCE_SOURCE = "sign_sequences"  # static letters of Holistic webcam recordings
SEQUENCE_FRAMES = (6, 12, 18)  # frames taken from each 20-frame recording (frame 0 may precede the sign)
SEQUENCE_ASPECT = 0.75  # height / width of the recordings' webcam frames (measured: 4:3 transfers best)
MOVING = ("j", "z", "idle")  # not static handshapes


@dataclass
class HandSet:
    """Still hands of one or more landmark sources, row-aligned."""

    points: np.ndarray  # (N, 21, 3) float32: wrist origin, palm units, as seen; z is 0 where a source has none
    found: np.ndarray  # (N,) bool: a hand was detected (points are zeros otherwise)
    labels: np.ndarray  # (N,) str class names
    groups: np.ndarray  # (N,) str "<source>:<group>": one person, camera and sitting
    sources: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> HandSet:
        return HandSet(self.points[index], self.found[index], self.labels[index], self.groups[index], self.sources[index])

    @staticmethod
    def concat(sets: list[HandSet]) -> HandSet:
        return HandSet(*(np.concatenate([getattr(s, f) for s in sets]) for f in
                         ("points", "found", "labels", "groups", "sources")))


def read_npz(path: str | Path, fields: dict[str, int], fix: str,
             optional: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """The arrays `fields` (name -> number of dimensions) of an `.npz`, and those of `optional` it holds, read
    without pickles, all with one row count. Anything else (a missing file or field, object arrays, a wrong
    shape) is a one-line `UserError` naming the file and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; {fix}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a readable .npz (not a zip archive); {fix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [f for f in fields if f not in z.files]
            if missing:
                raise UserError(f"{path} has no field {', '.join(missing)} (it has {', '.join(z.files) or 'none'}); {fix}")
            fields = fields | {f: n for f, n in (optional or {}).items() if f in z.files}
            out = {f: z[f] for f in fields}
    except UserError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UserError(f"{path} holds Python objects (pickled arrays), which are never loaded; {fix}") from exc
        raise UserError(f"{path} is not a readable .npz ({exc}); {fix}") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz ({type(exc).__name__}); {fix}") from exc
    for name, ndim in fields.items():
        if out[name].ndim != ndim:
            raise UserError(f"{path}: field {name} has shape {out[name].shape}, expected {ndim} dimension(s); {fix}")
    rows = {len(a) for a in out.values()}
    if len(rows) > 1:
        raise UserError(f"{path}: fields {', '.join(fields)} disagree in length ({sorted(rows)}); {fix}")
    return out


def palm_points(points: np.ndarray) -> np.ndarray:
    """Hand points (N, 21, 2 or 3) as seen -> wrist origin, unit palm size, (N, 21, 3) float32 (z 0 if absent)."""
    pts = np.asarray(points, np.float32)
    if pts.shape[-1] == 2:
        pts = np.concatenate([pts, np.zeros((*pts.shape[:-1], 1), np.float32)], axis=-1)
    return canonical_points(pts, np.full(len(pts), LEFT), mirror=False)


def _known(labels: np.ndarray, classes: list[str] | None) -> np.ndarray:
    return np.ones(len(labels), bool) if classes is None else np.isin(labels, classes)


KEYPOINT_FIX = "pass the asl_keypoints letters.npz (xy (N, 21, 2), label, group), see its README"


def keypoint_hands(path: str | Path, classes: list[str] | None = None) -> HandSet:
    """The keypoint collection (`xy` (N, 21, 2), `label`, `group`): rows of `classes` (all without)."""
    z = read_npz(path, {"xy": 3, "label": 1, "group": 1}, KEYPOINT_FIX)
    if z["xy"].shape[1:] != (NUM_LANDMARKS, 2):
        raise UserError(f"{path}: xy has shape {z['xy'].shape}, expected (N, 21, 2); {KEYPOINT_FIX}")
    labels, groups = z["label"].astype(str), z["group"].astype(str)
    keep = _known(labels, classes)
    n = int(keep.sum())
    return HandSet(palm_points(z["xy"][keep]), np.ones(n, bool), labels[keep],
                   np.char.add(f"{KEYPOINT_SOURCE}:", groups[keep]), np.full(n, KEYPOINT_SOURCE))


SEQUENCE_FIX = "pass a letters.npz of the shared sequences layout (x (N, T, 126), label, session)"


def sequence_hands(path: str | Path, classes: list[str] | None = None, frames: tuple[int, ...] = SEQUENCE_FRAMES,
                   aspect: float = SEQUENCE_ASPECT) -> HandSet:
    """`frames` of each static-letter recording of a `letters.npz` (not j, z, idle), one row per frame; the
    right-hand slot is preferred. Group: `sign_sequences:session-<name>`."""
    z = read_npz(path, {"x": 3, "label": 1, "session": 1}, SEQUENCE_FIX)
    x, label, session = z["x"], z["label"].astype(str), z["session"].astype(str)
    if x.shape[2] != 2 * NUM_LANDMARKS * 3:
        raise UserError(f"{path}: x has {x.shape[2]} values a frame, expected 126 (two hands); {SEQUENCE_FIX}")
    keep = _known(label, classes) & ~np.isin(label, MOVING)
    frames = tuple(f for f in frames if f < x.shape[1])
    x = x[keep][:, frames].astype(np.float32)
    right = x[..., 63:126].reshape(*x.shape[:2], NUM_LANDMARKS, 3)
    left = x[..., 0:63].reshape(*x.shape[:2], NUM_LANDMARKS, 3)
    has_right = np.abs(right).sum(axis=(2, 3)) > 0
    pts = np.where(has_right[..., None, None], right, left).reshape(-1, NUM_LANDMARKS, 3)
    pts[:, :, 1] *= aspect  # x, y are fractions of the width and height; make them one unit
    found = np.abs(pts).sum(axis=(1, 2)) > 0
    points = palm_points(pts)
    points[~found] = 0.0
    n = len(found)
    return HandSet(points, found, np.repeat(label[keep], len(frames)),
                   np.repeat(np.char.add(f"{SEQUENCE_SOURCE}:session-", session[keep]), len(frames)),
                   np.full(n, SEQUENCE_SOURCE))


def image_hands(landmarks: np.ndarray, found: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                sources: np.ndarray) -> HandSet:
    """A run's MediaPipe landmarks (N, 21, 3), in units of each image's longer side, as a `HandSet`."""
    points = palm_points(landmarks)
    points[~found] = 0.0
    return HandSet(points, np.asarray(found, bool), np.asarray(labels).astype(str), np.asarray(groups).astype(str),
                   np.asarray(sources).astype(str))


__all__ = [
    "KEYPOINT_SOURCE", "MOVING", "SEQUENCE_SOURCE", "HandSet", "image_hands", "keypoint_hands", "palm_points",
    "read_npz", "sequence_hands",
]
