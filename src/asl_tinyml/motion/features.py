"""Per-frame features of a window: handshape, presence and paths of each hand, relative to the shoulders
(or the frame), the window mirrored to a right-handed signer (`sequence_features`)."""

from __future__ import annotations

import numpy as np

from ..hands import LEFT as MIRRORED_LABEL
from ..hands import RIGHT as UNMIRRORED_LABEL
from ..hands import WRIST, FeatureRecipe, canonical_points
from .data import DEFAULT_ASPECT, HAND_POINTS, POSE_POINTS, Parts, _present, split_parts

HAND_RECIPE = FeatureRecipe(depth=True)  # per-frame handshape: x, y, z of the canonical points + fingertip distances
PATH_POINTS = (0, 8, 20)  # wrist, index tip, pinky tip: their paths over time
POSE_KEEP = (0, 9, 10, 11, 12, 13, 14, 15, 16, 19, 20)  # nose, mouth, shoulders, elbows, wrists, index knuckles
POSE_SWAP = {9: 10, 10: 9, 11: 12, 12: 11, 13: 14, 14: 13, 15: 16, 16: 15, 19: 20, 20: 19}
L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST = 11, 12, 15, 16
VELOCITY_GAIN = 4.0  # velocities (units per frame) are small next to positions
FRAME_UNIT = 1.0  # without a pose, paths are in palm sizes (a shoulder width is about 2.5-3)
ROLLED = {"letters": True, "words": False}  # the signing hand's shape also without its in-plane roll (letters)
CLIP = 4.0  # features are clipped to [-CLIP, CLIP]: a tracking glitch must not dominate a window


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
