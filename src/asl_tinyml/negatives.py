"""Empty scenes: what the pixel model sees when no hand is in view, so that it learns to be unsure there.

A frame in which MediaPipe finds no hand reaches the pixel model as its centre square (`hands.hand_crop`
without landmarks). Trained on hands alone, the model still answered such a frame with a confident letter
(an `m` at 0.7 on a grey wall), which the live page then typed. Training adds these scenes to every batch with
a uniform target (outlier exposure, Hendrycks et al., ICLR 2019), so on them the model spreads its probability
over every class; `SignPredictor.label` then answers "no hand found" and the live speller types nothing.

The scenes (`build_negatives`), at the cache's image size:
- every image of a source's `nothing` folder (an empty room), centre-cropped as a frame without a hand is;
- backgrounds cut from the merged images: the largest square outside the detected hand's box (`free_square`)
  that shows no skin of the palm's colour (`skin_share`);
- plain colours and gradients with sensor noise (`plain_scenes`).

`preprocess` writes them to `RUN/negatives.npz`; `train` adds them to each batch when the file is there.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from .config import IMAGE_EXTENSIONS, UserError
from .hands import HandTable, hand_box, hand_crop
from .images import read_rgb
from .merge import read_manifest

NEGATIVES_NAME = "negatives.npz"
EMPTY_FOLDER = "nothing"  # a source's folder of empty scenes (the alphabet source's empty room)
CUT_MARGIN = 0.5  # a background cut keeps this much of the hand's extent clear on every side
MIN_CUT = 0.4  # a background cut is at least this fraction of the image's shorter side
SKIN_DISTANCE, MAX_SKIN = 40.0, 0.02  # a cut with over 2% of pixels near the palm's colour shows skin: dropped
CUTS_PER_SOURCE = 300
PLAIN_SCENES = 300


def free_square(box: tuple[float, float, float], width: int, height: int) -> tuple[float, float, float]:
    """The largest square (left, top, side) of a `width` x `height` image that lies outside a hand's square
    `box` (left, top, side), centred in the widest of the four strips around it."""
    left, top, side = box
    right, bottom = min(width, left + side), min(height, top + side)
    strips = [(0.0, 0.0, max(0.0, left), float(height)), (right, 0.0, width - right, float(height)),
              (0.0, 0.0, float(width), max(0.0, top)), (0.0, bottom, float(width), height - bottom)]
    x, y, w, h = max(strips, key=lambda s: min(s[2], s[3]))
    square = max(0.0, min(w, h))
    return x + (w - square) / 2, y + (h - square) / 2, square


def plain_scenes(n: int, size: int, seed: int = 0) -> np.ndarray:
    """`n` (size, size, 3) uint8 scenes without a hand: plain colours and two-colour gradients in any
    direction, with sensor noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6) if i % 3 else np.zeros_like(t)  # every third a plain colour
        image = a * (1 - t[..., None]) + b * t[..., None] + rng.normal(0, rng.uniform(0, 8), (size, size, 3))
        out[i] = np.clip(image, 0, 255).astype(np.uint8)
    return out


def empty_folders(original_paths: list[str]) -> list[Path]:
    """The `nothing` folders (any case) of the sources the merged images came from (a source is the folder
    above each image's class folder)."""
    roots = sorted({Path(p).parent.parent for p in original_paths if p})
    return [d for root in roots if root.is_dir() for d in sorted(root.iterdir())
            if d.is_dir() and d.name.lower() == EMPTY_FOLDER]


def empty_scenes(folders: list[Path], size: int) -> np.ndarray:
    """Every readable image of `folders`, centre-cropped to (size, size, 3) as a frame without a hand is."""
    files = [f for d in folders for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    scenes = []
    for f in files:
        try:
            scenes.append(hand_crop(read_rgb(f), None, size))
        except ValueError:  # images.BadImageError: skip an unreadable file
            continue
    return np.stack(scenes) if scenes else np.zeros((0, size, size, 3), np.uint8)


def palm_colour(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The median RGB colour of a 5x5 patch at the palm's centre (the wrist and four knuckles' mean)."""
    height, width = image.shape[:2]
    x, y = (np.asarray(landmarks)[[0, 5, 9, 13, 17], :2] * max(width, height)).mean(axis=0)
    x, y = int(np.clip(x, 2, width - 3)), int(np.clip(y, 2, height - 3))
    return np.median(image[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).astype(np.float64), axis=0)


def skin_share(image: np.ndarray, colour: np.ndarray, distance: float = SKIN_DISTANCE) -> float:
    """The share of pixels within `distance` (RGB) of `colour`: a cut showing the signer's other hand or arm."""
    return float((np.linalg.norm(image.astype(np.float64) - colour, axis=-1) < distance).mean())


def background_cuts(merged_dir: Path, hands: HandTable, size: int, per_source: int = CUTS_PER_SOURCE,
                    seed: int = 0) -> np.ndarray:
    """Squares of the merged images away from their detected hand (`free_square` around the hand's box with
    `CUT_MARGIN`), at least `MIN_CUT` of the shorter side and without the palm's colour (`skin_share`: the
    signer's other hand is often in view); at most `per_source` per source, drawn at random."""
    rows = read_manifest(merged_dir)
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[int]] = {}
    for i in rng.permutation(len(rows)):
        if hands.found[i]:
            by_source.setdefault(rows[i]["source"], []).append(int(i))
    cuts = []
    for source in sorted(by_source):
        taken = 0
        for i in by_source[source]:
            if taken == per_source:
                break
            width, height = int(rows[i]["width"]), int(rows[i]["height"])  # the manifest's: no decoding
            x, y, side = free_square(hand_box(hands.landmarks[i], width, height, CUT_MARGIN), width, height)
            if side < max(MIN_CUT * min(width, height), 16):
                continue
            try:
                image = read_rgb(merged_dir / rows[i]["merged_path"])
            except ValueError:
                continue
            if image.shape[:2] != (height, width):  # turned by its EXIF orientation: the box again
                height, width = image.shape[:2]
                x, y, side = free_square(hand_box(hands.landmarks[i], width, height, CUT_MARGIN), width, height)
            crop = Image.fromarray(image).crop((round(x), round(y), round(x + side), round(y + side)))
            if skin_share(np.asarray(crop), palm_colour(image, hands.landmarks[i])) > MAX_SKIN:
                continue  # the other hand, an arm: not an empty scene
            cuts.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), np.uint8))
            taken += 1
    return np.stack(cuts) if cuts else np.zeros((0, size, size, 3), np.uint8)


def build_negatives(merged_dir: Path, size: int, hands: HandTable | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The empty scenes of a merged folder at `size`: {"nothing", "cuts", "plain"} arrays (N, S, S, 3) uint8
    (no cuts without `hands`, the detections aligned with the manifest rows)."""
    merged_dir = Path(merged_dir)
    folders = empty_folders([r.get("original_path", "") for r in read_manifest(merged_dir)])
    cuts = background_cuts(merged_dir, hands, size, seed=seed) if hands is not None else np.zeros((0, size, size, 3), np.uint8)
    return {"nothing": empty_scenes(folders, size), "cuts": cuts, "plain": plain_scenes(PLAIN_SCENES, size, seed)}


def save_negatives(scenes: dict[str, np.ndarray], run_dir: Path) -> Path:
    """`RUN/negatives.npz`: the scenes of every kind, and `kinds` naming each row's kind."""
    path = Path(run_dir) / NEGATIVES_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.concatenate(list(scenes.values()))
    kinds = np.concatenate([np.full(len(v), k) for k, v in scenes.items()])
    np.savez_compressed(path, images=images, kinds=kinds)
    return path


def load_negatives(run_dir: Path, size: int) -> np.ndarray | None:
    """The run's empty scenes (N, size, size, 3) uint8, or None when it has none. Raises UserError for an
    unreadable file or one of another image size."""
    path = Path(run_dir) / NEGATIVES_NAME
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a readable negatives file ({type(exc).__name__}); re-run `asl-tinyml preprocess`") from exc
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise UserError(f"{path} holds {images.shape} {images.dtype} scenes, not {size}x{size} RGB; re-run `asl-tinyml preprocess`")
    return images
