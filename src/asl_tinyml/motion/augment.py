"""Training augmentation of raw windows: time stretch and crop, frame drop, missed detections, jitter,
rotations, aspect, mirror, path scale, `j`/`z` paths carried by other handshapes (`transplant_motion`), and
letters caught between two others (`carry_over`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hands import WRIST
from .data import DEFAULT_ASPECT, Parts, _present
from .features import _mean, _mirror, _palm_size


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
    transition: float = 0.3  # letters: share of windows whose first or last frames show another window's hands


def _rotation(n: int, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """(n, 3, 3) rotations: yaw and pitch up to `degrees`, roll up to half of it."""
    a, b, c = (rng.uniform(-1, 1, (3, n)) * np.radians(degrees)) * np.array([[1.0], [1.0], [0.5]])
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    zero, one = np.zeros(n), np.ones(n)
    yaw = np.stack([ca, zero, sa, zero, one, zero, -sa, zero, ca], 1).reshape(n, 3, 3)
    pitch = np.stack([one, zero, zero, zero, cb, -sb, zero, sb, cb], 1).reshape(n, 3, 3)
    roll = np.stack([cc, -sc, zero, sc, cc, zero, zero, zero, one], 1).reshape(n, 3, 3)
    return yaw @ pitch @ roll


def time_indices(n: int, length: int | np.ndarray, frames: int, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """(n, frames) source frame indices: a random crop of a `length`-frame recording (or (n,) lengths)
    stretched to `frames`, sometimes held at an end, with dropped (repeated) frames."""
    length = np.asarray(length)
    crop = rng.uniform(aug.min_crop, 1.0, n) * (length - 1)
    start = rng.uniform(0, 1, n) * (length - 1 - crop)
    extend = rng.uniform(0, 0.4, n) * (length - 1) * (rng.random(n) < aug.hold)
    left = rng.random(n) < 0.5
    start = start - np.where(left, extend, 0.0)
    stop = start + crop + extend
    pos = start[:, None] + (stop - start)[:, None] * np.linspace(0, 1, frames)[None]
    idx = np.clip(np.rint(pos), 0, (length - 1)[..., None]).astype(np.int64)
    drop = rng.random((n, frames)) < aug.frame_drop
    drop[:, 0] = False
    for k in range(1, frames):  # a dropped frame shows the previous one again
        idx[:, k] = np.where(drop[:, k], idx[:, k - 1], idx[:, k])
    return idx


def augment_parts(parts: Parts, frames: int, rng: np.random.Generator, aug: Augment = Augment(),
                  lengths: np.ndarray | None = None) -> tuple[Parts, np.ndarray]:
    """A randomly changed copy of windows `parts`, `frames` long, and each window's aspect (height / width);
    `lengths` (n,): the real frames of windows padded at the end."""
    n, length = parts.left.shape[:2]
    out = parts.take(time_indices(n, length if lengths is None else lengths, frames, rng, aug))
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


def carry_over(parts: Parts, rows: np.ndarray, donors: np.ndarray, rng: np.random.Generator) -> None:
    """In place: windows `rows` take the hands of windows `donors` in their first or last 1 to T/6 frames.

    A letter read from a live window shows the hand leaving the previous sign or moving to the next one, and
    every traduttore `j`/`z` recording (but few still ones) starts with such a jump (frame 0 precedes the
    sign). Without these windows the model took the jump for the `j`/`z` motion and read still letters that
    start with one as `j` or `z`; with them, a window's edges tell no class from another."""
    frames = parts.left.shape[1]
    for row, donor in zip(rows, donors):
        k = int(rng.integers(1, max(2, frames // 6) + 1))
        span = slice(0, k) if rng.random() < 0.5 else slice(frames - k, frames)
        parts.left[row, span], parts.right[row, span] = parts.left[donor, span], parts.right[donor, span]
