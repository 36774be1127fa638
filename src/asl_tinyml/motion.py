"""Signs that move: `j`, `z` and words from MediaPipe Holistic landmark sequences.

Data: `.npz` files in the shared sequence layout (`x` (N, T, D) float, `label`, `session`), D = 126
(letters: left hand, right hand, 21 x (x, y, z) each) or D = 258 (words: 33 pose points x (x, y, z,
visibility), then both hands). Coordinates are normalised to the image, left/right are Holistic's labels
on the unmirrored image (the person's own hands), and an undetected part is all zeros.

Features per frame (`sequence_features`):
- every hand through `hands.canonical_points` / `HAND_RECIPE` (wrist origin, palm scale, one
  handedness: 70 values) plus a presence flag, its wrist position relative to a reference, and the
  velocities of its wrist, index tip and pinky tip (the path over time);
- the reference is the shoulders when the pose is there (midpoint, shoulder width as the unit), else
  the frame: the window's mean position of the signing hand, in its median palm size;
- the signing hand is the hand seen in more frames (the one that travels further on a tie); when it is
  the left hand, the whole window is mirrored, so a left-handed signer reads like a right-handed one;
- letters use the signing hand only, its shape also with the in-plane roll removed (139 values a frame);
  words use both hands and the upper-body pose (nose, mouth, shoulders, elbows, wrists, index knuckles:
  185 values a frame).

`motion_fastkan` (models/motion.py) reads any number of frames. Training augments the raw landmarks:
time stretch and crop to 15-45 frames (with held frames at the ends), frame drop, missed detections, hand
jitter, 3D rotation of each hand, a roll of the whole scene, a change of aspect ratio, left/right mirror;
letters also a bigger or smaller path, and `z`/`j` paths carried by other static `d`/`i` handshapes
(`transplant_motion`). Words: a window that no class wins outright (under 0.5) counts as `idle` (`decide`).
Measured figures: docs/experiments.md, "Motion models".
"""

from __future__ import annotations

import json
import shutil
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import UserError
from .hands import LEFT as MIRRORED_LABEL
from .hands import RIGHT as UNMIRRORED_LABEL
from .hands import WRIST, FeatureRecipe, canonical_points

HAND_RECIPE = FeatureRecipe(depth=True)  # per-frame handshape: x, y, z of the canonical points + fingertip distances
MOTION_INPUT = "motion"
MODEL_NAME = "motion_fastkan"
KINDS = ("letters", "words")
LETTERS_WIDTH, WORDS_WIDTH = 126, 258
WIDTHS = {LETTERS_WIDTH: "letters", WORDS_WIDTH: "words"}
STEMS = {"letters": "asl_motion_letters", "words": "asl_motion_words"}
DEFAULT_ASPECT = 0.75  # height / width of the recordings (a 640x480 webcam): y is rescaled to x's unit
HAND_POINTS, POSE_POINTS = 21, 33
PATH_POINTS = (0, 8, 20)  # wrist, index tip, pinky tip: their paths over time
POSE_KEEP = (0, 9, 10, 11, 12, 13, 14, 15, 16, 19, 20)  # nose, mouth, shoulders, elbows, wrists, index knuckles
POSE_SWAP = {9: 10, 10: 9, 11: 12, 12: 11, 13: 14, 14: 13, 15: 16, 16: 15, 19: 20, 20: 19}
L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST = 11, 12, 15, 16
HOLDOUT_SESSIONS = ("danial", "cam")
MOTION_LETTERS = ("j", "z")  # the letters only the motion model can tell
IDLE = "idle"
VELOCITY_GAIN = 4.0  # velocities (units per frame) are small next to positions
FRAME_UNIT = 1.0  # without a pose, paths are in palm sizes (a shoulder width is about 2.5-3)
# a window whose best class is under this probability counts as `idle` (words: measured on the held-out
# sessions; letters: no held-out idle to measure it on, so off)
IDLE_BELOW = {"letters": 0.0, "words": 0.5}
ROLLED = {"letters": True, "words": False}  # the signing hand's shape also without its in-plane roll (letters)
CLIP = 4.0  # features are clipped to [-CLIP, CLIP]: a tracking glitch must not dominate a window


# --- data --------------------------------------------------------------------------------------------
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


def load_sequences(path: str | Path) -> SequenceSet:
    """An `.npz` in the shared layout: `x` (N, T, D), `label` (N,), optional `session` (N,)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"sequence file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"x", "label"} - set(z.files)
            if missing:
                raise UserError(f"{path} lacks {sorted(missing)}: expected keys x, label (and session)")
            x = z["x"].astype(np.float32)
            labels = z["label"].astype(str)
            sessions = z["session"].astype(str) if "session" in z.files else np.full(len(labels), "unknown")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz ({exc})") from exc
    if x.ndim != 3 or len(x) != len(labels) or len(sessions) != len(labels):
        raise UserError(f"{path}: x must be (N, T, D) with one label and session per row, got x {x.shape}, "
                        f"{len(labels)} labels, {len(sessions)} sessions")
    kind_for_width(x.shape[-1])
    return SequenceSet(np.nan_to_num(x), labels, sessions, path)


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


# --- features ----------------------------------------------------------------------------------------
def frame_width(kind: str) -> int:
    hand = HAND_RECIPE.size + 1 + 2 + 2 * len(PATH_POINTS)  # handshape, presence, paths
    signing = hand + 60 * ROLLED[kind]
    return signing if kind == "letters" else signing + hand + 2 * len(POSE_KEEP) + 1 + 4


def _mirror(parts: Parts, rows: np.ndarray) -> None:
    """Mirror windows `rows` in place: x -> 1 - x (present parts only), hands and pose sides swapped."""
    if not rows.any():
        return
    for hand in (parts.left, parts.right):
        seen = _present(hand[rows])[..., None]
        hand[rows, ..., 0] = np.where(seen, 1.0 - hand[rows, ..., 0], 0.0)
    parts.left[rows], parts.right[rows] = parts.right[rows].copy(), parts.left[rows].copy()
    if parts.pose is not None:
        pose = parts.pose[rows]
        seen = _present(pose)[..., None]
        pose[..., 0] = np.where(seen, 1.0 - pose[..., 0], 0.0)
        order = np.arange(POSE_POINTS)
        for a, b in POSE_SWAP.items():
            order[a] = b
        parts.pose[rows] = pose[:, :, order]


def _path_length(hand: np.ndarray, seen: np.ndarray) -> np.ndarray:
    wrist = hand[..., WRIST, :2]
    step = np.linalg.norm(np.diff(wrist, axis=1), axis=-1) * (seen[:, 1:] & seen[:, :-1])
    return step.sum(axis=1)


def signing_hand_is_left(parts: Parts) -> np.ndarray:
    """(N,) bool: the left hand is the signing one (seen in more frames; on a near tie, the one moving more)."""
    seen_l, seen_r = _present(parts.left), _present(parts.right)
    n_l, n_r = seen_l.sum(1), seen_r.sum(1)
    tie = np.abs(n_l - n_r) <= max(1, parts.left.shape[1] // 10)
    moves_more = _path_length(parts.left, seen_l) > _path_length(parts.right, seen_r)
    return np.where(tie, moves_more & (n_l > 0), n_l > n_r)


def _hand_block(hand: np.ndarray, handedness: int, ref: np.ndarray, scale: np.ndarray, rolled: bool = False) -> np.ndarray:
    """One hand's per-frame features (N, T, 79): canonical point features, presence, the wrist's position and
    the velocities of the wrist, index tip and pinky tip (`z` is drawn with the index, `j` with the pinky)."""
    n, t = hand.shape[:2]
    seen = _present(hand)
    flat = hand.reshape(n * t, HAND_POINTS, 3)
    canon = canonical_points(flat, handedness, mirror=True)
    feats = HAND_RECIPE.features(canon).reshape(n, t, -1)
    if rolled:  # the handshape again with its in-plane roll removed (wrist -> middle knuckle points up)
        a = -np.arctan2(canon[:, 9, 0], -canon[:, 9, 1])
        c, s_ = np.cos(a)[:, None], np.sin(a)[:, None]
        x, y = canon[:, 1:, 0], canon[:, 1:, 1]
        rolled = np.stack([c * x - s_ * y, s_ * x + c * y, canon[:, 1:, 2]], -1).reshape(n, t, -1)
        feats = np.concatenate([feats, rolled.astype(np.float32)], axis=-1)
    feats[~seen] = 0.0
    pos = (hand[..., PATH_POINTS, :2] - ref[:, :, None]) / scale[:, None, None, None]  # (N, T, 3, 2)
    pos[~seen] = 0.0
    vel = np.zeros_like(pos)
    both = seen[:, 1:] & seen[:, :-1]
    vel[:, 1:] = np.where(both[..., None, None], pos[:, 1:] - pos[:, :-1], 0.0) * VELOCITY_GAIN
    return np.concatenate([feats, seen[..., None].astype(np.float32), pos[:, :, 0], vel.reshape(n, t, -1)], axis=-1)


def _median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row medians (N,) of `values` (N, T) over the frames where `mask` (N, T); NaN for a row without any
    (numpy's nanmedian, without its masked-array cost on a live window)."""
    ordered = np.sort(np.where(mask, values, np.inf), axis=1)
    k = mask.sum(axis=1)
    last = values.shape[1] - 1
    lo = np.take_along_axis(ordered, np.clip((k - 1) // 2, 0, last)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(ordered, np.clip(k // 2, 0, last)[:, None], axis=1)[:, 0]
    return np.where(k > 0, (lo + hi) / 2, np.nan)


def _mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row means (N, C) of `values` (N, T, C) over the frames where `mask` (N, T); NaN for a row without any."""
    k = mask.sum(axis=1)[:, None]
    total = np.where(mask[..., None], values, 0.0).sum(axis=1)
    return np.where(k > 0, total / np.maximum(k, 1), np.nan)


def _palm_size(hand: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(N,) median palm size (wrist to index..pinky knuckles, x-y) over the frames with the hand."""
    palm = np.linalg.norm(hand[..., [5, 9, 13, 17], :2] - hand[..., WRIST : WRIST + 1, :2], axis=-1).mean(-1)
    out = _median(palm, seen)
    return np.where(np.isfinite(out) & (out > 1e-4), out, 1.0)


def sequence_features(x: np.ndarray | Parts, aspect: float | np.ndarray = DEFAULT_ASPECT, kind: str | None = None) -> np.ndarray:
    """Windows (N, T, D) in the shared layout (or Parts) -> per-frame features (N, T, F) float32.

    `aspect` is the frames' height / width (y is brought to x's unit); `kind` is read from D unless Parts
    are given (Parts without a pose are letters).
    """
    parts = x.copy() if isinstance(x, Parts) else split_parts(x)
    kind = kind or ("letters" if parts.pose is None else "words")
    n, t = parts.left.shape[:2]
    aspect = np.broadcast_to(np.asarray(aspect, np.float32), (n,))
    _mirror(parts, signing_hand_is_left(parts))
    for part in (parts.left, parts.right) + (() if parts.pose is None else (parts.pose,)):
        part[..., 1] *= aspect[:, None, None]
    seen_r, seen_l = _present(parts.right), _present(parts.left)
    # the reference point (N, T, 2) and unit (N,): the shoulders where the pose is seen, else the frame
    ref = np.zeros((n, t, 2), np.float32)
    scale = _palm_size(parts.right, seen_r) * FRAME_UNIT
    for_frame = np.ones(n, bool)
    if kind == "words" and parts.pose is not None:
        pose_seen = _present(parts.pose[..., [L_SHOULDER, R_SHOULDER], :3])
        shoulders = parts.pose[..., [L_SHOULDER, R_SHOULDER], :2]
        mid = shoulders.mean(axis=2)
        width = np.linalg.norm(shoulders[:, :, 0] - shoulders[:, :, 1], axis=-1)
        has = pose_seen.any(1)
        med_mid = np.stack([_median(mid[..., 0], pose_seen), _median(mid[..., 1], pose_seen)], axis=-1)
        med_width = _median(width, pose_seen)
        ref[has] = np.where(pose_seen[has][..., None], mid[has], med_mid[has][:, None])
        good = has & np.isfinite(med_width) & (med_width > 1e-3)
        scale = np.where(good, np.nan_to_num(med_width, nan=1.0), scale)
        for_frame = ~good
    if for_frame.any():  # the frame: the window's mean position of the signing hand (else of the other)
        centre = _mean(parts.right[..., WRIST, :2], seen_r)
        centre = np.where(np.isfinite(centre), centre, _mean(parts.left[..., WRIST, :2], seen_l))
        centre = np.nan_to_num(centre, nan=0.5)
        ref[for_frame] = centre[for_frame][:, None]
    blocks = [_hand_block(parts.right, MIRRORED_LABEL, ref, scale, ROLLED[kind])]
    if kind == "words":
        blocks.append(_hand_block(parts.left, UNMIRRORED_LABEL, ref, scale))
        pose = parts.pose if parts.pose is not None else np.zeros((n, t, POSE_POINTS, 4), np.float32)
        pose_seen = _present(pose[..., :3])
        rel = (pose[..., list(POSE_KEEP), :2] - ref[:, :, None]) / scale[:, None, None, None]
        rel[~pose_seen] = 0.0
        wrists = rel[:, :, [POSE_KEEP.index(L_WRIST), POSE_KEEP.index(R_WRIST)]].reshape(n, t, 4)
        vel = np.zeros_like(wrists)
        both = pose_seen[:, 1:] & pose_seen[:, :-1]
        vel[:, 1:] = np.where(both[..., None], wrists[:, 1:] - wrists[:, :-1], 0.0) * VELOCITY_GAIN
        blocks += [rel.reshape(n, t, -1), pose_seen[..., None].astype(np.float32), vel]
    return np.clip(np.nan_to_num(np.concatenate(blocks, axis=-1).astype(np.float32)), -CLIP, CLIP)


# --- augmentation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """Augmentation strengths (training only)."""

    min_frames: int = 15
    max_frames: int = 45
    min_crop: float = 0.65  # the kept part of the recording, as a fraction of its frames
    hold: float = 0.3  # chance of extending the window past an end (the edge frame held)
    frame_drop: float = 0.1  # chance that a frame is skipped (the next one shown twice)
    miss: float = 0.06  # chance that a hand is not detected in a frame
    jitter: float = 0.004  # per-point noise, image units
    hand_degrees: float = 20.0  # 3D rotation of each hand about its wrist
    roll_degrees: float = 10.0  # in-plane rotation of the whole scene
    aspect: float = 0.35  # log-uniform change of the y/x ratio: 0.53-1.07 around 0.75 (16:9 webcams to the page's squares)
    mirror: float = 0.5
    amplitude: float = 0.7  # without a pose: log-uniform scaling of each hand's path about its mean (bigger or smaller signing)


def _rotation(n: int, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """(n, 3, 3) rotations: yaw and pitch up to `degrees`, roll up to half of it."""
    a, b, c = (rng.uniform(-1, 1, (3, n)) * np.radians(degrees)) * np.array([[1.0], [1.0], [0.5]])
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    zero, one = np.zeros(n), np.ones(n)
    yaw = np.stack([ca, zero, sa, zero, one, zero, -sa, zero, ca], 1).reshape(n, 3, 3)
    pitch = np.stack([one, zero, zero, zero, cb, -sb, zero, sb, cb], 1).reshape(n, 3, 3)
    roll = np.stack([cc, -sc, zero, sc, cc, zero, zero, zero, one], 1).reshape(n, 3, 3)
    return yaw @ pitch @ roll


def time_indices(n: int, length: int, frames: int, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """(n, frames) source frame indices: a random crop of a `length`-frame recording stretched to `frames`,
    sometimes held at an end, with dropped (repeated) frames."""
    crop = rng.uniform(aug.min_crop, 1.0, n) * (length - 1)
    start = rng.uniform(0, 1, n) * (length - 1 - crop)
    extend = rng.uniform(0, 0.4, n) * (length - 1) * (rng.random(n) < aug.hold)
    left = rng.random(n) < 0.5
    start = start - np.where(left, extend, 0.0)
    stop = start + crop + extend
    pos = start[:, None] + (stop - start)[:, None] * np.linspace(0, 1, frames)[None]
    idx = np.clip(np.rint(pos), 0, length - 1).astype(np.int64)
    drop = rng.random((n, frames)) < aug.frame_drop
    drop[:, 0] = False
    for k in range(1, frames):  # a dropped frame shows the previous one again
        idx[:, k] = np.where(drop[:, k], idx[:, k - 1], idx[:, k])
    return idx


def augment_parts(parts: Parts, frames: int, rng: np.random.Generator, aug: Augment = Augment()) -> tuple[Parts, np.ndarray]:
    """A randomly changed copy of windows `parts`, `frames` long, and each window's aspect (height / width)."""
    n, length = parts.left.shape[:2]
    out = parts.take(time_indices(n, length, frames, rng, aug))
    hands = [out.left, out.right]
    seen = [_present(h) for h in hands]
    if aug.amplitude > 0 and out.pose is None:  # people draw a j or z bigger or smaller
        gain = np.exp(rng.uniform(-aug.amplitude, aug.amplitude, n)).astype(np.float32)[:, None, None]
        for h, s in zip(hands, seen):
            centre = np.nan_to_num(_mean(h[..., WRIST, :2], s))[:, None]
            shift = (gain - 1.0) * (h[..., WRIST, :2] - centre)
            h[..., :2] = np.where(s[..., None, None], h[..., :2] + shift[:, :, None], 0.0)
    for h, s in zip(hands, seen):  # each hand: 3D rotation about its wrist, jitter, missed detections
        wrist = h[..., WRIST : WRIST + 1, :]
        rot = _rotation(n, rng, aug.hand_degrees)
        local = (h - wrist).reshape(n, -1, 3)
        moved = np.matmul(local, rot.transpose(0, 2, 1)).reshape(h.shape) + wrist
        moved = moved + rng.normal(0, aug.jitter, moved.shape).astype(np.float32)
        keep = s & (rng.random(s.shape) >= aug.miss)
        h[...] = np.where(keep[..., None, None], moved, 0.0)
    if out.pose is not None:
        pose_seen = _present(out.pose[..., :3])
        noisy = out.pose[..., :2] + rng.normal(0, aug.jitter, out.pose[..., :2].shape)
        out.pose[..., :2] = np.where(pose_seen[..., None, None], noisy, 0.0)
    # the scene: roll about the frame centre (in x units, taking the aspect into account)
    aspect = DEFAULT_ASPECT * np.exp(rng.uniform(-aug.aspect, aug.aspect, n)).astype(np.float32)
    angle = rng.uniform(-1, 1, n) * np.radians(aug.roll_degrees)
    c, s_ = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    for part in hands + ([] if out.pose is None else [out.pose]):
        present = _present(part[..., :3])[..., None]
        x = part[..., 0] - 0.5
        y = (part[..., 1] - 0.5) * DEFAULT_ASPECT
        part[..., 0] = np.where(present, c * x - s_ * y + 0.5, 0.0)
        part[..., 1] = np.where(present, (s_ * x + c * y) / DEFAULT_ASPECT + 0.5, 0.0)
    _mirror(out, rng.random(n) < aug.mirror)
    return out, aspect


# a moving letter -> (the static letter whose handshape draws it, share of its training windows transplanted)
# (a `j` keeps the recorded hand's turn: a still `i` moved along a `j` path made held-out i and j confusable)
TRANSPLANT = {"z": ("d", 0.5, False), "j": ("i", 0.5, True)}


PALM = (WRIST, 5, 9, 13, 17)  # the rigid part of a hand: wrist and knuckles


def _align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations turning each frame's source palm onto the target palm (Kabsch, no reflection)."""
    a = source[:, PALM] - source[:, PALM].mean(1, keepdims=True)
    b = target[:, PALM] - target[:, PALM].mean(1, keepdims=True)
    u, _, vt = np.linalg.svd(np.einsum("tpi,tpj->tij", a, b))
    d = np.sign(np.linalg.det(np.einsum("tij,tjk->tik", u, vt)))
    fix = np.ones((len(a), 3))
    fix[:, 2] = d
    return np.einsum("tij,tj,tjk->tki", u, fix, vt)


def transplant_motion(parts: Parts, rows: np.ndarray, donors: np.ndarray, rng: np.random.Generator,
                      keep_turn: bool = False) -> None:
    """In place: the signing (right) hand of windows `rows` keeps its path (wrist positions and palm size)
    but takes the handshape of the donor hands `donors` (N, T, 21, 3) (static letters), frame by frame.

    A `z` is an index finger drawing a Z and a `j` a little finger drawing a J, whoever signs them: moving
    a recorded `d` (`i`) hand along a recorded `z` (`j`) path makes a `z` (`j`) with another person's
    handshape and hand orientation, so the model learns the letter from its path, not from how the few
    people in the training set hold their hand. With `keep_turn`, each frame's donor hand is first turned
    to the recorded hand's palm orientation (a `j` twists the hand: only the fingers are exchanged)."""
    for row, source in zip(rows, donors):
        target = parts.right[row]
        seen_t, seen_s = _present(target), _present(source)
        if not seen_t.any() or not seen_s.any():
            continue
        frames = np.flatnonzero(seen_s)
        pick = frames[np.clip(np.rint(np.linspace(0, len(frames) - 1, len(target))).astype(int)
                              + rng.integers(-1, 2), 0, len(frames) - 1)]
        shape = source[pick] - source[pick, WRIST : WRIST + 1]
        if keep_turn:
            rot = _align(shape, target - target[:, WRIST : WRIST + 1])
            shape = np.einsum("tij,tpj->tpi", rot, shape)
        ratio = _palm_size(target[None], seen_t[None])[0] / _palm_size(source[None], seen_s[None])[0]
        moved = target[:, WRIST : WRIST + 1] + shape * ratio
        parts.right[row] = np.where(seen_t[:, None, None], moved, 0.0)


# --- training ----------------------------------------------------------------------------------------
def make_model(kind: str, num_classes: int, **options: Any) -> nn.Module:
    from .models import create_model

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
    progress: bool = False,
    **options: Any,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train `motion_fastkan` on `train_idx` windows of `data` with `engine.fit` (class-weighted cross-entropy,
    AdamW, one-cycle); every batch is a fresh augmentation at one random length in [min_frames, max_frames], and
    (letters) some `j`/`z` windows take a static `i`/`d` handshape (`transplant_motion`; `TRANSPLANT`'s shares
    times `transplant`).
    `ema` > 0 keeps an exponential moving average of the weights (and BatchNorm statistics) and returns it.
    Returns (model in eval mode, per-epoch history). There is no validation set to select on: the
    held-out session is the test, so the last epoch is kept."""
    from .engine import FitOptions, class_weights, fit

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

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(train_idx)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:  # BatchNorm needs two windows
                continue
            frames = int(rng.integers(aug.min_frames, aug.max_frames + 1))
            rows = Parts(parts.left[idx], parts.right[idx], None if parts.pose is None else parts.pose[idx])
            for label, (pool, share, turn) in donors.items():
                chosen = np.flatnonzero((y_all[idx] == label) & (rng.random(len(idx)) < share))
                if len(chosen):
                    transplant_motion(rows, chosen, parts.right[rng.choice(pool, len(chosen))], rng, turn)
            batch, aspect = augment_parts(rows, frames, rng, aug)
            yield torch.as_tensor(sequence_features(batch, aspect, kind)), torch.as_tensor(y_all[idx])

    opts = FitOptions(epochs=epochs, lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing, ema_decay=ema, seed=seed)
    result = fit(model, batches, opts, steps_per_epoch=-(-len(train_idx) // batch_size),
                 class_weight=class_weights(y_all[train_idx], len(classes)), progress=progress, desc=f"motion {kind}")
    return result.model, result.history


# --- metrics -----------------------------------------------------------------------------------------
def decide(proba: np.ndarray, classes: list[str], idle_below: float = 0.0) -> np.ndarray:
    """Class indices (N,): the most probable class, or `idle` (when the model has it) where that class's
    probability is under `idle_below`: a window no sign wins outright shows no sign."""
    proba = np.asarray(proba)
    pred = proba.argmax(1) if len(proba) else np.zeros(0, np.int64)
    if idle_below > 0 and IDLE in classes and len(proba):
        pred = np.where(proba.max(1) < idle_below, classes.index(IDLE), pred)
    return pred


def score(labels: np.ndarray, proba: np.ndarray, classes: list[str], idle_below: float = 0.0) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the classes present in `labels`), per-class precision/recall/F1 and the
    confusion matrix of `decide`'s classes, for windows whose label is one of `classes` (the others are
    counted and skipped)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels).astype(str)
    known = np.isin(labels, classes)
    skipped = {str(k): int(v) for k, v in zip(*np.unique(labels[~known], return_counts=True))}
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels[known]], dtype=np.int64)
    pred = decide(np.asarray(proba)[known], list(classes), idle_below) if known.any() else np.zeros(0, np.int64)
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


# --- checkpoints, ONNX and predictors -----------------------------------------------------------------
def save_motion_model(path: str | Path, model: nn.Module, kind: str, classes: list[str], metrics: dict[str, Any],
                      **options: Any) -> Path:
    from .models import save_checkpoint

    meta = {
        "model": MODEL_NAME, "model_options": {"in_features": frame_width(kind), **options}, "classes": list(classes),
        "image_size": None, "input": MOTION_INPUT,
        "features": {"kind": kind, "width": LETTERS_WIDTH if kind == "letters" else WORDS_WIDTH,
                     "aspect": DEFAULT_ASPECT, "idle_below": IDLE_BELOW[kind]},
        "metrics": metrics,
    }
    save_checkpoint(path, model, meta)
    return Path(path)


def export_motion_onnx(checkpoint: str | Path, out_path: str | Path, int8_path: str | Path | None,
                       calibration: np.ndarray | None = None) -> dict[str, Path]:
    """A motion checkpoint -> float ONNX (input (N, T, F) features, both axes dynamic) and, with `int8_path`
    and calibration windows (N, T, F), a static int8 QDQ copy. Both carry the classes and feature recipe."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    from .export import _set_metadata, _strip_debug_info, finish_quantized, float_head
    from .inference import META_INPUT, ONNX_INPUT, ONNX_OUTPUT, onnx_metadata
    from .models import count_parameters, load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    if meta.get("input") != MOTION_INPUT:
        raise UserError(f"{checkpoint} is not a motion model")
    features = int(meta["model_options"]["in_features"])
    batch, frames = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("frames", min=2, max=1024)
    program = torch.onnx.export(
        model, (torch.rand(2, 20, features),), dynamo=True, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: batch, 1: frames},), external_data=False, verbose=False,
    )
    proto = program.model_proto
    _strip_debug_info(proto)
    props = onnx_metadata(list(meta["classes"]), 0, MODEL_NAME, count_parameters(model))
    props |= {META_INPUT: MOTION_INPUT, "features": json.dumps(meta.get("features", {}))}
    _set_metadata(proto, props)
    proto.producer_name = "asl-tinyml"
    onnx.checker.check_model(proto)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, out_path)
    out = {"onnx": out_path}
    if int8_path is None:
        return out
    if calibration is None or len(calibration) == 0:
        raise UserError("int8 export of a motion model needs calibration windows")
    calib = np.asarray(calibration, np.float32)

    class Reader:
        def __init__(self) -> None:
            self.it = iter([{ONNX_INPUT: calib[i : i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    int8_path = Path(int8_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(out_path), str(prepped), skip_symbolic_shape=True)
        graph = onnx.load(prepped)
        quantize_static(
            str(prepped), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=float_head(graph),
        )
    out["onnx_int8"] = finish_quantized(int8_path, props)
    return out


class MotionPredictor:
    """A motion model file (`.pt` checkpoint or `.onnx`): raw windows (N, T, D) -> probabilities (N, C)."""

    def __init__(self, path: str | Path, threads: int | None = 1) -> None:
        from .inference import META_CLASSES, ONNX_INPUT

        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"motion model {self.path} not found; make it with `asl-tinyml motion train` "
                            "or `asl-tinyml pipeline`, or pass --model")
        if self.path.suffix == ".onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            props = self.session.get_modelmeta().custom_metadata_map
            if props.get("input") != MOTION_INPUT:
                raise UserError(f"{self.path} is not a motion model (input {props.get('input')!r})")
            self.classes = json.loads(props[META_CLASSES])
            self.recipe = json.loads(props.get("features", "{}"))
            self.model = None
            self._input = ONNX_INPUT
        else:
            from .models import load_checkpoint

            if threads:
                torch.set_num_threads(threads)
            self.model, meta = load_checkpoint(self.path)
            if meta.get("input") != MOTION_INPUT:
                raise UserError(f"{self.path} is not a motion model")
            self.classes = list(meta["classes"])
            self.recipe = dict(meta.get("features", {}))
        self.kind = str(self.recipe.get("kind", "letters"))
        self.idle_below = float(self.recipe.get("idle_below", 0.0))
        self.width = LETTERS_WIDTH if self.kind == "letters" else WORDS_WIDTH

    def logits_features(self, feats: np.ndarray) -> np.ndarray:
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if self.model is None:
            return self.session.run(None, {self._input: feats})[0]
        with torch.no_grad():
            return self.model(torch.as_tensor(feats)).numpy()

    def predict_proba(self, windows: np.ndarray, aspect: float | np.ndarray = DEFAULT_ASPECT, batch: int = 256) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim == 2:
            windows = windows[None]
        if windows.shape[-1] != self.width:
            raise UserError(f"{self.path} reads {self.kind} windows of width {self.width}, got {windows.shape[-1]}")
        if windows.shape[1] < 2:
            raise UserError(f"a window needs at least 2 frames, got {windows.shape[1]}")
        from scipy.special import softmax

        out = []
        for i in range(0, len(windows), batch):
            asp = aspect if np.ndim(aspect) == 0 else np.asarray(aspect)[i : i + batch]
            feats = sequence_features(windows[i : i + batch], asp, self.kind)
            out.append(softmax(self.logits_features(feats).astype(np.float64), axis=1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.classes)), np.float32)


def default_model_path(kind: str, models_dir: str | Path = "models") -> Path:
    return Path(models_dir) / f"{STEMS[kind]}_int8.onnx"


# --- stages ------------------------------------------------------------------------------------------
MODEL_OPTIONS = ("channels", "blocks", "kernel", "hidden", "num_grids", "dropout")  # the rest of **options is training's


def _calibration(data: SequenceSet, n: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    return sequence_features(data.x[rows], DEFAULT_ASPECT, data.kind)


def holdout(
    data: SequenceSet, held_out: str, *, classes: list[str] | None = None, seed: int = 0, epochs: int = 20,
    progress: bool = False, **options: Any,
) -> tuple[dict[str, Any], nn.Module, np.ndarray]:
    """Train on every session but `held_out`, score `held_out`: (metrics, model, test probabilities)."""
    classes = classes or [str(c) for c in sorted(set(data.labels))]
    train, test = holdout_split(data.sessions, held_out)
    start = time.perf_counter()
    model, history = train_motion_model(data, classes, train, seed=seed, epochs=epochs, progress=progress, **options)
    seconds = time.perf_counter() - start
    proba = _softmax(_predict_logits(model, sequence_features(data.x[test], DEFAULT_ASPECT, data.kind)))
    trained = sorted({str(c) for c in data.labels[train]} & set(classes))
    idle_below = IDLE_BELOW[data.kind]
    metrics = score(data.labels[test], proba, classes, idle_below)
    seen = np.isin(data.labels[test], trained)
    # classes absent from the training sessions cannot be predicted: scored apart, on the trained classes
    metrics_trained = score(data.labels[test][seen], proba[seen], classes, idle_below)
    signs = seen & (data.labels[test] != IDLE)  # the signs alone: `idle` differs most between sessions
    metrics_signs = score(data.labels[test][signs], proba[signs], classes, idle_below)
    return {
        "held_out": held_out, "n_train": len(train), "n_test": len(test), "train_seconds": round(seconds, 1),
        "epochs": epochs, "seed": seed, "untrained_classes": sorted({str(c) for c in data.labels[test]} - set(trained)),
        "all": _brief(metrics), "trained_classes": _brief(metrics_trained), "signs_only": _brief(metrics_signs),
        "per_class": metrics_trained.get("per_class", {}), "final_train_loss": history[-1]["train_loss"] if history else None,
    }, model, proba


def _softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(logits.astype(np.float64), axis=1).astype(np.float32) if len(logits) else logits


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "accuracy", "macro_f1", "skipped")}


def train_motion(
    data_path: str | Path,
    out_dir: str | Path,
    models_dir: str | Path | None = "models",
    *,
    holdouts: tuple[str, ...] = HOLDOUT_SESSIONS,
    epochs: int = 20,
    seed: int = 0,
    limit: int | None = None,
    final: bool = True,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """The held-out-session folds (train on the other sessions, score this one), then the shipped model on
    every session, exported to `models_dir/asl_motion_<kind>.pt`, `.onnx` and `_int8.onnx` (checked
    against PyTorch). Writes `out_dir/<kind>/metrics.json` and confusion figures; returns the metrics.
    `limit`: at most this many windows per class and session (a quick slice)."""
    data = load_sequences(data_path)
    if limit:
        keep = np.concatenate([
            np.flatnonzero((data.labels == c) & (data.sessions == s))[:limit]
            for c in np.unique(data.labels) for s in np.unique(data.sessions)
        ])
        data = data.subset(np.sort(keep))
    kind = data.kind
    classes = [str(c) for c in sorted(set(data.labels))]
    out = Path(out_dir) / kind
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"kind": kind, "data": str(data_path), "n": len(data), "frames": int(data.x.shape[1]),
                              "classes": classes, "model": MODEL_NAME, "folds": []}
    for held in holdouts:
        if held not in set(data.sessions):
            continue
        fold, _, proba = holdout(data, held, classes=classes, seed=seed, epochs=epochs, progress=progress, **options)
        test = holdout_split(data.sessions, held)[1]
        m = score(data.labels[test], proba, classes, IDLE_BELOW[kind])
        _plot_confusion(m, out / f"confusion_{held}.png", f"{kind}: held-out session {held}")
        result["folds"].append(fold)
    if result["folds"]:
        accs = [f["trained_classes"]["accuracy"] for f in result["folds"]]
        result["holdout_mean_accuracy"] = float(np.mean(accs))
        result["holdout_mean_macro_f1"] = float(np.mean([f["trained_classes"]["macro_f1"] for f in result["folds"]]))
        for letter in MOTION_LETTERS if kind == "letters" else ():
            recalls = [f["per_class"][letter]["recall"] for f in result["folds"] if letter in f["per_class"]]
            result[f"{letter}_recall"] = float(np.mean(recalls)) if recalls else None
    if final:
        start = time.perf_counter()
        model, _ = train_motion_model(data, classes, np.arange(len(data)), seed=seed, epochs=epochs,
                                      progress=progress, **options)
        result["final_train_seconds"] = round(time.perf_counter() - start, 1)
        from .models import count_parameters

        result["params"] = count_parameters(model)
        arch = {k: v for k, v in options.items() if k in MODEL_OPTIONS}
        ckpt = save_motion_model(out / "best.pt", model, kind, classes, {"holdout": result.get("holdout_mean_accuracy")},
                                 **arch)
        if models_dir is not None:
            result["export"] = export_motion(ckpt, models_dir, data)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def export_motion(checkpoint: str | Path, models_dir: str | Path, data: SequenceSet) -> dict[str, Any]:
    """`asl_motion_<kind>.pt`, `.onnx`, `_int8.onnx` into `models_dir`, with their agreement with PyTorch
    on `data` (the float and int8 files' top-1 agreement and max probability difference) and sizes."""
    from .models import load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    kind = meta["features"]["kind"]
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    stem = STEMS[kind]
    shutil.copyfile(checkpoint, models_dir / f"{stem}.pt")
    paths = export_motion_onnx(checkpoint, models_dir / f"{stem}.onnx", models_dir / f"{stem}_int8.onnx",
                               _calibration(data))
    reference = MotionPredictor(models_dir / f"{stem}.pt").predict_proba(data.x)
    checks = {}
    for key, path in paths.items():
        proba = MotionPredictor(path).predict_proba(data.x)
        checks[key] = {"argmax_agreement": float(np.mean(proba.argmax(1) == reference.argmax(1))),
                       "max_abs_diff": float(np.abs(proba - reference).max()), "n": len(data)}
    return {"paths": {"pt": str(models_dir / f"{stem}.pt"), **{k: str(v) for k, v in paths.items()}},
            "bytes": {k: Path(v).stat().st_size for k, v in paths.items()}, "checks": checks}


def _plot_confusion(metrics: dict[str, Any], path: Path, title: str) -> Path | None:
    from .plots import plot_confusion

    if not metrics.get("confusion"):
        return None
    classes = metrics["classes"]
    cm = np.asarray(metrics["confusion"])
    used = np.flatnonzero(cm.sum(0) + cm.sum(1) > 0)
    return plot_confusion(cm[np.ix_(used, used)], [classes[i] for i in used], path, title)


def evaluate_motion(data_path: str | Path, model: str | Path | None = None, out_dir: str | Path | None = None,
                    models_dir: str | Path = "models", aspect: float = DEFAULT_ASPECT, threads: int = 1) -> dict[str, Any]:
    """Score a motion model on an `.npz` of windows (any number of frames): accuracy, macro-F1, per-class
    precision/recall/F1, the confusion matrix (and its figure in `out_dir`). Labels outside the model's
    classes are counted under `skipped`. Without `model`, the shipped letters or words model is picked
    by the landmark width (126 or 258)."""
    data = load_sequences(data_path)
    path = Path(model) if model else default_model_path(data.kind, models_dir)
    predictor = MotionPredictor(path, threads=threads)
    if predictor.kind != data.kind:
        raise UserError(f"{path} is a {predictor.kind} model but {data_path} holds {data.kind} windows")
    start = time.perf_counter()
    proba = predictor.predict_proba(data.x, aspect)
    ms = (time.perf_counter() - start) * 1000 / max(len(data), 1)
    metrics = score(data.labels, proba, predictor.classes, predictor.idle_below)
    metrics.update(model=str(path), data=str(data_path), kind=data.kind, frames=int(data.x.shape[1]),
                   ms_per_window=round(ms, 3))
    for letter in MOTION_LETTERS if data.kind == "letters" else ():
        if letter in metrics.get("per_class", {}):
            metrics[f"{letter}_recall"] = metrics["per_class"][letter]["recall"]
    out = Path(out_dir) if out_dir else Path("eval") / f"motion_{data.kind}"
    out.mkdir(parents=True, exist_ok=True)
    figure = _plot_confusion(metrics, out / "confusion_matrix.png", f"{path.name} on {Path(data_path).name}")
    metrics["figures"] = [str(figure)] if figure else []
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def predict_motion(data_path: str | Path, model: str | Path | None = None, models_dir: str | Path = "models",
                   topk: int = 3, aspect: float = DEFAULT_ASPECT) -> list[dict[str, Any]]:
    """The top-k classes of every window of an `.npz` (its `label` is reported next to them when present)."""
    data = load_sequences(data_path)
    predictor = MotionPredictor(Path(model) if model else default_model_path(data.kind, models_dir))
    proba = predictor.predict_proba(data.x, aspect)
    decided = decide(proba, predictor.classes, predictor.idle_below)
    rows = []
    for i, p in enumerate(proba):
        order = np.argsort(-p)[:topk]
        rows.append({"index": i, "label": str(data.labels[i]), "prediction": predictor.classes[decided[i]],
                     "top": [{"label": predictor.classes[k], "prob": round(float(p[k]), 4)} for k in order]})
    return rows


def window_latency(path: str | Path, frames: int = 30, runs: int = 300) -> dict[str, float]:
    """Median milliseconds of one window on one thread: features + model, and the model alone."""
    predictor = MotionPredictor(path, threads=1)
    rng = np.random.default_rng(0)
    window = rng.uniform(0.3, 0.7, (1, frames, predictor.width)).astype(np.float32)
    feats = sequence_features(window, DEFAULT_ASPECT, predictor.kind)
    for _ in range(20):
        predictor.predict_proba(window)
    full, model_only = [], []
    for _ in range(runs):
        t = time.perf_counter()
        predictor.predict_proba(window)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        predictor.logits_features(feats)
        model_only.append(time.perf_counter() - t)
    return {"frames": frames, "ms_window": round(1000 * float(np.median(full)), 4),
            "ms_model": round(1000 * float(np.median(model_only)), 4)}


# --- live --------------------------------------------------------------------------------------------
def holistic_row(result: Any, kind_width: int = WORDS_WIDTH) -> np.ndarray:
    """A MediaPipe Holistic result -> one frame in the shared layout (258 values; zeros where undetected)."""
    row = np.zeros(WORDS_WIDTH, np.float32)
    if getattr(result, "pose_landmarks", None) is not None:
        row[:132] = np.array([(p.x, p.y, p.z, p.visibility) for p in result.pose_landmarks.landmark], np.float32).ravel()
    for offset, name in ((132, "left_hand_landmarks"), (195, "right_hand_landmarks")):
        hand = getattr(result, name, None)
        if hand is not None:
            row[offset : offset + 63] = np.array([(p.x, p.y, p.z) for p in hand.landmark], np.float32).ravel()
    return row if kind_width == WORDS_WIDTH else row[132:]


class HolisticTracker:
    """MediaPipe Holistic in video (tracking) mode for one stream of frames; `close()` when the stream ends."""

    def __init__(self, model_complexity: int = 1) -> None:
        from .hands import quiet_native_stderr, require_mediapipe

        mp = require_mediapipe()
        with quiet_native_stderr():
            self._holistic = mp.solutions.holistic.Holistic(
                static_image_mode=False, model_complexity=model_complexity, smooth_landmarks=True,
                enable_segmentation=False, refine_face_landmarks=False,
                min_detection_confidence=0.5, min_tracking_confidence=0.5,
            )

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> one 258-value frame (the person's own left/right, as in the recordings)."""
        return holistic_row(self._holistic.process(np.ascontiguousarray(rgb)))

    def close(self) -> None:
        if self._holistic is not None:
            self._holistic.close()
            self._holistic = None

    def __enter__(self) -> HolisticTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LiveConfig:
    """The rolling window and when a motion sign is typed."""

    window: int = 24  # frames the model reads (about 1.5-2 s at 12-15 fps)
    min_frames: int = 12  # no prediction before this many frames
    threshold: float = 0.7  # smoothed probability needed
    stable: int = 4  # consecutive predictions of one label before it is typed
    smooth: int = 3  # predictions averaged
    replace_frames: int = 24  # a j/z replaces the static letter typed within this many frames (its handshape)


class MotionStream:
    """One connection's rolling window of landmark frames and the decisions on it.

    `push(row, aspect)` adds one 258-value frame (the shared words layout) and returns what the motion
    model says about the window: the top classes and, when a sign has been held long enough, `commit`.
    Letters mode commits only `j` and `z` (the static model types the other letters); words mode commits
    any word but `idle`, once until the sign changes.
    """

    def __init__(self, letters: MotionPredictor | None, words: MotionPredictor | None, config: LiveConfig = LiveConfig()) -> None:
        self.models = {"letters": letters, "words": words}
        self.config = config
        self.mode = "letters"
        self.frames: deque[np.ndarray] = deque(maxlen=config.window)
        self.reset()

    def reset(self) -> None:
        self.frames.clear()
        self._recent: deque[np.ndarray] = deque(maxlen=self.config.smooth)
        self._candidate: str | None = None
        self._count = 0
        self._held: str | None = None

    def set_mode(self, mode: str) -> None:
        if mode not in KINDS:
            raise ValueError(f"mode must be letters or words, got {mode!r}")
        if mode != self.mode:
            self.mode = mode
            self._recent.clear()
            self._candidate, self._count, self._held = None, 0, None

    @property
    def model(self) -> MotionPredictor | None:
        return self.models.get(self.mode)

    def push(self, row: np.ndarray, aspect: float = DEFAULT_ASPECT, topk: int = 3) -> dict[str, Any]:
        row = np.asarray(row, np.float32).ravel()
        if row.shape != (WORDS_WIDTH,):
            raise ValueError(f"a landmark frame has {WORDS_WIDTH} values (pose, left hand, right hand), got {row.size}")
        self.frames.append(np.nan_to_num(row))
        model = self.model
        out: dict[str, Any] = {"mode": self.mode, "frames": len(self.frames), "hand": bool(np.abs(row[132:]).sum() > 0),
                               "top": [], "commit": None}
        if model is None or len(self.frames) < self.config.min_frames:
            return out
        window = np.stack(self.frames)[None]
        if model.kind == "letters":
            window = window[..., 132:]
        start = time.perf_counter()
        probs = model.predict_proba(window, aspect)[0]
        out["ms"] = round((time.perf_counter() - start) * 1000, 3)
        self._recent.append(probs)
        smoothed = np.mean(self._recent, axis=0)
        order = np.argsort(-smoothed)[:topk]
        out["top"] = [{"label": model.classes[k], "prob": round(float(smoothed[k]), 4)} for k in order]
        label, prob = model.classes[order[0]], float(smoothed[order[0]])
        typable = label != IDLE and (self.mode == "words" or label in MOTION_LETTERS)
        if prob >= self.config.threshold and typable:
            self._count = self._count + 1 if label == self._candidate else 1
            self._candidate = label
            if self._count >= self.config.stable and label != self._held:
                out["commit"] = label
                self._held = label
                self.frames.clear()  # the next sign starts a fresh window
                self._recent.clear()
        else:
            self._candidate, self._count = None, 0
            if label == IDLE or not out["hand"]:
                self._held = None
        out["candidate"] = self._candidate
        return out


@dataclass
class MotionModels:
    """The live app's motion models (either may be None) and the window/decision settings."""

    letters: MotionPredictor | None = None
    words: MotionPredictor | None = None
    config: LiveConfig = LiveConfig()
    max_side: int = 320  # frames are downscaled to this longer side before MediaPipe
    tracker_factory: Any = None  # makes a connection's tracker (default: HolisticTracker; tests pass a stand-in)

    @classmethod
    def load(cls, models_dir: str | Path = "models", threads: int = 1) -> MotionModels | None:
        """The shipped int8 models found in `models_dir` (None when there is neither or MediaPipe is missing)."""
        import importlib.util

        if importlib.util.find_spec("mediapipe") is None:
            return None
        found = {k: default_model_path(k, models_dir) for k in KINDS}
        found = {k: MotionPredictor(p, threads) for k, p in found.items() if p.exists()}
        return cls(found.get("letters"), found.get("words")) if found else None

    def describe(self) -> dict[str, Any]:
        return {"modes": [k for k in KINDS if getattr(self, k) is not None],
                **{k: getattr(self, k).classes for k in KINDS if getattr(self, k) is not None},
                "window": self.config.window}


class LiveSession:
    """One WebSocket client's landmark path: a Holistic tracker (made on the first camera frame, closed
    with `close()`), the rolling window, and how motion signs enter the client's spelled text.

    Letters mode: a `j` or `z` is appended, replacing the static letter typed during the same movement
    (its handshape, e.g. `i` for `j`). Words mode: the word is appended with a space; the static letters
    are not typed meanwhile.
    """

    def __init__(self, models: MotionModels) -> None:
        self.models = models
        self.stream = MotionStream(models.letters, models.words, models.config)
        self.stream.set_mode("letters" if models.letters is not None else "words")
        self._factory = models.tracker_factory or HolisticTracker
        self.tracker: Any = None
        self.frame_no = 0
        self.last_letter_frame = -(10**9)

    @property
    def mode(self) -> str:
        return self.stream.mode

    def set_mode(self, mode: str) -> None:
        if getattr(self.models, mode, None) is None:
            raise ValueError(f"no {mode} motion model is loaded; modes: {self.models.describe()['modes']}")
        self.stream.set_mode(mode)

    def image(self, rgb: np.ndarray) -> dict[str, Any]:
        """One camera frame (RGB uint8) -> MediaPipe (timed apart) -> the window -> the motion output."""
        from PIL import Image

        h, w = rgb.shape[:2]
        if max(h, w) > self.models.max_side:
            im = Image.fromarray(rgb)
            im.thumbnail((self.models.max_side, self.models.max_side), Image.Resampling.BILINEAR)
            rgb = np.asarray(im)
        if self.tracker is None:
            self.tracker = self._factory()
        start = time.perf_counter()
        row = self.tracker.process(rgb)
        mediapipe_ms = (time.perf_counter() - start) * 1000
        out = self.landmarks(row, rgb.shape[0] / rgb.shape[1])
        out["mediapipe_ms"] = round(mediapipe_ms, 2)
        return out

    def landmarks(self, row: np.ndarray, aspect: float = DEFAULT_ASPECT) -> dict[str, Any]:
        self.frame_no += 1
        return self.stream.push(row, aspect)

    def letter_typed(self) -> None:
        """The static path just typed a letter (a later j/z within `replace_frames` replaces it)."""
        self.last_letter_frame = self.frame_no

    def apply(self, text: str, commit: str | None) -> str:
        """The spelled text after a motion commit."""
        if not commit:
            return text
        if self.mode == "words":
            return (text if not text or text.endswith(" ") else text + " ") + commit + " "
        if text and self.frame_no - self.last_letter_frame <= self.models.config.replace_frames:
            text = text[:-1]
        self.last_letter_frame = -(10**9)
        return text + commit

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


# --- figures -----------------------------------------------------------------------------------------
def plot_trajectories(data_path: str | Path, path: str | Path, letters: tuple[str, ...] = ("j", "z", "i"),
                      per_letter: int = 6, seed: int = 0) -> Path:
    """The fingertip paths of a few recordings per letter (pinky tip for `j` and `i`, index tip otherwise),
    relative to their mean and in palm sizes, image y downwards: `j` and `z` travel, a static letter stays."""
    from .plots import new_figure as _figure

    data = load_sequences(data_path)
    parts = split_parts(data.x)
    _mirror(parts, signing_hand_is_left(parts))
    rng = np.random.default_rng(seed)
    fig = _figure(3.2 * len(letters), 3.4)
    axes = fig.subplots(1, len(letters), sharex=True, sharey=True)
    for ax, letter in zip(np.atleast_1d(axes), letters):
        rows = np.flatnonzero(data.labels == letter)
        tip = 20 if letter in ("j", "i") else 8
        for k, row in enumerate(rng.choice(rows, size=min(per_letter, len(rows)), replace=False)):
            hand = parts.right[row]
            seen = _present(hand)
            if seen.sum() < 2:
                continue
            xy = hand[seen, tip, :2] * np.array([1.0, DEFAULT_ASPECT])
            xy = (xy - xy.mean(0)) / _palm_size(hand[None], seen[None])[0]
            ax.plot(xy[:, 0], xy[:, 1], "-", lw=1.2, alpha=0.8, color=f"C{k}")
            ax.plot(xy[-1, 0], xy[-1, 1], "o", ms=3, color=f"C{k}")
        ax.set_title(f"{letter}: {'pinky' if tip == 20 else 'index'} tip, {min(per_letter, len(rows))} recordings")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    first = np.atleast_1d(axes)[0]
    first.invert_yaxis()
    first.set_ylabel("palm sizes (image y down)")
    fig.supxlabel("palm sizes (camera view; dots mark the last frame)")
    fig.savefig(path)
    return Path(path)
