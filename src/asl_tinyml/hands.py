"""Hand detection and hand features: MediaPipe Hands -> 21 (x, y, z) points -> canonical points, features, crop box.

MediaPipe's palm detector misses tightly cropped hands (Massey) unless the image gets a plain border, so
each image is tried with a border first and, failing that, with the lighter landmark model and without
the border (`attempts_for`). Everything a model sees of a hand is built here, for training and inference
alike: `canonical_points` (wrist origin, palm scale, one handedness), `FeatureRecipe` (the landmark
model's input) and `hand_box` (the square the pixel model is cropped to).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .config import UserError, usable_cores
from .images import read_rgb
from .progress import bar as progress_bar

NUM_LANDMARKS = 21
WRIST, THUMB_TIP, INDEX_MCP, INDEX_TIP, MIDDLE_MCP, MIDDLE_TIP, RING_MCP, RING_TIP, PINKY_MCP, PINKY_TIP = (
    0, 4, 5, 8, 9, 12, 13, 16, 17, 20,
)
FINGERTIPS = (THUMB_TIP, INDEX_TIP, MIDDLE_TIP, RING_TIP, PINKY_TIP)
RIGHT, LEFT, NO_HAND = 1, 0, -1  # handedness codes, in MediaPipe's labels (which assume a mirrored image)



def require_mediapipe() -> Any:
    """Import MediaPipe, or raise a UserError naming the install command."""
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise UserError(
            "the landmark path needs MediaPipe; install it with `pip install 'asl-tinyml[landmarks]'`"
        ) from exc
    return mp


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[io.TextIOWrapper]:
    """Send file descriptor 2 (MediaPipe's C++/TFLite start-up logging) to /dev/null for the block.

    Yields a text stream on the real stderr, for progress bars. Also hides protobuf's deprecation warning
    about MediaPipe 0.10's use of `SymbolDatabase.GetPrototype`.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        with os.fdopen(os.dup(saved), "w") as real, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*GetPrototype", category=UserWarning)
            yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def attempts_for(pad_fraction: float = 0.5, retry: bool = True) -> list[tuple[float, int]]:
    """The (border, model_complexity) attempts: bordered with the full model, then (with `retry`) the lighter
    model, then no border. The border is `pad_fraction` of the image's longer side on every side (`pad_image`);
    it lets the palm detector find hands that fill the frame."""
    attempts = [(float(pad_fraction), 1)] + ([(float(pad_fraction), 0), (0.0, 1)] if retry else [])
    return list(dict.fromkeys(attempts))  # without a border to begin with, skip the duplicate retry


def pad_image(image: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """A black border of `fraction` x the longer side on every side: (padded image, border in pixels)."""
    border = int(round(fraction * max(image.shape[:2])))
    if border == 0:
        return image, 0
    return np.pad(image, ((border, border), (border, border), (0, 0))), border


@dataclass
class HandResult:
    """One image's detection. Landmarks are in units of the image's longer side, origin at its top-left."""

    found: bool
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((NUM_LANDMARKS, 3), np.float32))
    world: np.ndarray = field(default_factory=lambda: np.zeros((NUM_LANDMARKS, 3), np.float32))  # metres, hand-centred
    handedness: int = NO_HAND
    score: float = 0.0  # MediaPipe's handedness score
    attempt: int = -1  # index into the detector's attempts
    seconds: float = 0.0  # detection time


class HandDetector:
    """MediaPipe Hands in static-image mode, one hand, with the border/model retries of `attempts`.

    Use as a context manager (or call `close()`): each model complexity holds a MediaPipe graph.
    """

    def __init__(
        self,
        attempts: Sequence[tuple[float, int]] | None = None,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        mp = require_mediapipe()
        self.attempts = [(float(f), int(c)) for f, c in (attempts_for() if attempts is None else attempts)]
        if not self.attempts:
            raise ValueError("attempts must list at least one (pad_fraction, model_complexity)")
        self._hands: dict[int, Any] = {}
        for _, complexity in self.attempts:
            if complexity not in self._hands:
                self._hands[complexity] = mp.solutions.hands.Hands(
                    static_image_mode=True, max_num_hands=1, model_complexity=complexity,
                    min_detection_confidence=min_detection_confidence,
                    min_tracking_confidence=min_tracking_confidence,
                )

    def __enter__(self) -> HandDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for hands in self._hands.values():
            hands.close()
        self._hands.clear()

    def detect(self, image: np.ndarray) -> HandResult:
        """Landmarks of the most confident hand in an RGB uint8 (H, W, 3) image, or `found=False`."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        start = time.perf_counter()
        for k, (fraction, complexity) in enumerate(self.attempts):
            padded, border = pad_image(image, fraction)
            out = self._hands[complexity].process(np.ascontiguousarray(padded))
            if not out.multi_hand_landmarks:
                continue
            ph, pw = padded.shape[:2]
            pts = np.array([(p.x, p.y, p.z) for p in out.multi_hand_landmarks[0].landmark], dtype=np.float64)
            # normalised coords of the padded image -> pixels of the original -> units of its longer side
            pixels = np.stack([pts[:, 0] * pw - border, pts[:, 1] * ph - border, pts[:, 2] * pw], axis=1)
            world = np.array([(p.x, p.y, p.z) for p in out.multi_hand_world_landmarks[0].landmark], dtype=np.float32)
            label = out.multi_handedness[0].classification[0]
            return HandResult(
                True, (pixels / max(height, width)).astype(np.float32), world,
                RIGHT if label.label == "Right" else LEFT, float(label.score), k, time.perf_counter() - start,
            )
        return HandResult(False, seconds=time.perf_counter() - start)


def _images(images_or_paths: Iterable[np.ndarray | str | Path]) -> Iterator[np.ndarray | str]:
    """Decoded RGB images; an unreadable file yields its error message instead."""
    for item in images_or_paths:
        if isinstance(item, (str, Path)):
            try:
                yield read_rgb(item)
            except (ValueError, FileNotFoundError) as exc:
                yield str(exc)
        else:
            yield np.asarray(item)


def extract_landmarks(
    images_or_paths: Iterable[np.ndarray | str | Path],
    *,
    pad_fraction: float = 0.5,
    retry: bool = True,
    min_detection_confidence: float = 0.5,
    progress: bool = False,
    details: bool = False,
) -> tuple[np.ndarray, ...]:
    """Run MediaPipe Hands on RGB uint8 arrays or image files.

    Returns `(landmarks (N, 21, 3) float32, handedness (N,) int8, found (N,) bool)`; rows without a hand
    (or with an unreadable file) are zeros, handedness -1, found False. With `retry`, an image without a
    hand is tried again with the lighter model, then without the border. `details=True` appends
    `world (N, 21, 3)`, `attempt (N,) int8` and `seconds (N,)` (wall time per image).
    """
    attempts = attempts_for(pad_fraction, retry)
    items = list(images_or_paths)
    rows: list[HandResult] = []
    seconds: list[float] = []
    with quiet_native_stderr() as stderr, HandDetector(attempts, min_detection_confidence) as detector:
        bar = progress_bar(
            _images(items), progress=progress, total=len(items), desc="landmarks", unit="img", leave=False, file=stderr,
        )
        start = time.perf_counter()
        for image in bar:
            rows.append(detector.detect(image) if isinstance(image, np.ndarray) else HandResult(False))
            now = time.perf_counter()
            seconds.append(now - start)
            start = now
    landmarks = np.stack([r.landmarks for r in rows]) if rows else np.zeros((0, NUM_LANDMARKS, 3), np.float32)
    handedness = np.array([r.handedness for r in rows], dtype=np.int8)
    found = np.array([r.found for r in rows], dtype=bool)
    if not details:
        return landmarks, handedness, found
    world = np.stack([r.world for r in rows]) if rows else np.zeros((0, NUM_LANDMARKS, 3), np.float32)
    attempt = np.array([r.attempt for r in rows], dtype=np.int8)
    return landmarks, handedness, found, world, attempt, np.array(seconds)


# --- normalisation -----------------------------------------------------------------------------------
PALM_MCPS = (INDEX_MCP, MIDDLE_MCP, RING_MCP, PINKY_MCP)
TIP_PAIRS = [(a, b) for i, a in enumerate(FINGERTIPS) for b in FINGERTIPS[i + 1 :]]  # 10 fingertip distances


def canonical_points(landmarks: np.ndarray, handedness: np.ndarray | int, mirror: bool = True) -> np.ndarray:
    """Wrist at the origin, unit palm size, one-handed: (N, 21, 3) float32.

    Palm size is the mean wrist-to-knuckle (index..pinky MCP) distance, stable between a fist and an open
    hand. With `mirror`, hands MediaPipe labels "Right" get x -> -x: MediaPipe assumes a mirrored (selfie)
    image, so on ordinary photos that label marks a left hand, and every hand then reads as a right hand.
    """
    pts = np.asarray(landmarks, dtype=np.float32)
    single = pts.ndim == 2
    pts = pts[None] if single else pts
    hand = np.broadcast_to(np.asarray(handedness), pts.shape[:1])
    pts = pts - pts[:, WRIST : WRIST + 1]
    if mirror:
        flip = np.ones((len(pts), 1, 3), np.float32)
        flip[hand == RIGHT, :, 0] = -1.0
        pts = pts * flip
    palm = np.linalg.norm(pts[:, PALM_MCPS], axis=2).mean(axis=1)
    pts = pts / np.where(palm > 1e-6, palm, 1.0)[:, None, None]
    pts = pts.astype(np.float32)
    return pts[0] if single else pts


@dataclass(frozen=True)
class FeatureRecipe:
    """How canonical points become the landmark model's input: coordinates without the (zero) wrist, x and y
    only unless `depth` (MediaPipe's z; off by default, docs/experiments.md has the comparison), plus the 10
    fingertip distances with `distances`.

    Handedness: with `symmetric` (the default) points are taken as seen and the model averages itself over a
    hand and its mirror image (`mirror_dims`), so no left/right label is needed; `mirror` instead flips hands
    by MediaPipe's label (`canonical_points`), as models from before the keypoint collection did."""

    mirror: bool = False
    distances: bool = True
    depth: bool = False
    symmetric: bool = True

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> FeatureRecipe:
        """The recipe a model file records; files from before `depth` existed used z, those from before
        `symmetric` mirrored by MediaPipe's label."""
        meta = meta or {}
        return cls(bool(meta.get("mirror", True)), bool(meta.get("distances", True)), bool(meta.get("depth", True)),
                   bool(meta.get("symmetric", False)))

    def to_meta(self) -> dict[str, bool]:
        return {"mirror": self.mirror, "distances": self.distances, "depth": self.depth, "symmetric": self.symmetric}

    @property
    def mirror_dims(self) -> list[int]:
        """Feature positions a left/right mirror negates (the points' x); empty unless `symmetric`."""
        step = 3 if self.depth else 2
        return list(range(0, (NUM_LANDMARKS - 1) * step, step)) if self.symmetric else []

    @property
    def size(self) -> int:
        return (NUM_LANDMARKS - 1) * (3 if self.depth else 2) + (len(TIP_PAIRS) if self.distances else 0)

    def features_torch(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 21, 3) canonical points -> (N, `size`) features."""
        points = points if self.depth else points[..., :2]
        parts = [points[:, 1:].flatten(1)]
        if self.distances:
            a, b = zip(*TIP_PAIRS)
            parts.append(torch.linalg.vector_norm(points[:, list(a)] - points[:, list(b)], dim=2))
        return torch.cat(parts, dim=1)

    def features(self, points: np.ndarray) -> np.ndarray:
        """NumPy form of `features_torch`."""
        return self.features_torch(torch.as_tensor(np.asarray(points, dtype=np.float32))).numpy()

    def normalize(self, landmarks: np.ndarray, handedness: np.ndarray | int) -> np.ndarray:
        """Raw landmarks (N, 21, 3) or (21, 3) -> translation-, scale- and hand-invariant features (N, F)."""
        pts = canonical_points(landmarks, handedness, self.mirror)
        return self.features(pts[None] if pts.ndim == 2 else pts)


def image_features(
    images_or_paths: Iterable[np.ndarray | str | Path], recipe: FeatureRecipe = FeatureRecipe(), **detect: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Images or files -> (`landmark_fastkan` input (N, F) float32, found (N,) bool): detection + normalisation.

    Rows without a hand are zeros; a caller reports them as "no hand found" instead of predicting.
    """
    landmarks, handedness, found = extract_landmarks(images_or_paths, **detect)
    features = recipe.normalize(landmarks, handedness)
    features[~found] = 0.0
    return features, found


# --- detection of many files, on every core, cached by content hash -----------------------------------------
_WORKER_DETECTOR: HandDetector | None = None  # one per worker process (`_init_worker`)


def _init_worker(attempts: list[tuple[float, int]], min_detection_confidence: float) -> None:
    global _WORKER_DETECTOR
    torch.set_num_threads(1)
    with open(os.devnull, "w") as null:  # this process's MediaPipe logging: the parent shows the progress bar
        os.dup2(null.fileno(), 2)
    warnings.filterwarnings("ignore", message=".*GetPrototype", category=UserWarning)
    _WORKER_DETECTOR = HandDetector(attempts, min_detection_confidence)


def _detect_file(path: str) -> HandResult:
    assert _WORKER_DETECTOR is not None
    try:
        image = read_rgb(path)
    except (ValueError, FileNotFoundError):
        return HandResult(False)
    return _WORKER_DETECTOR.detect(image)


def detect_files(
    files: Sequence[str | Path],
    *,
    attempts: Sequence[tuple[float, int]] | None = None,
    min_detection_confidence: float = 0.5,
    workers: int | None = None,
    progress: bool = True,
) -> list[HandResult]:
    """MediaPipe Hands on image files, in `workers` processes (default: every usable core), in order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor


    attempts = list(attempts_for() if attempts is None else attempts)
    workers = max(1, min(workers or usable_cores(), len(files)))
    if workers == 1 or len(files) < 8:
        with quiet_native_stderr() as stderr, HandDetector(attempts, min_detection_confidence) as detector:
            images = progress_bar(_images(files), progress=progress, total=len(files), desc="hands", unit="img",
                          leave=False, file=stderr)
            return [detector.detect(im) if isinstance(im, np.ndarray) else HandResult(False) for im in images]
    context = multiprocessing.get_context("spawn")  # MediaPipe's graphs do not survive a fork
    with ProcessPoolExecutor(workers, context, initializer=_init_worker,
                             initargs=(attempts, min_detection_confidence)) as pool:
        results = pool.map(_detect_file, [str(f) for f in files], chunksize=16)
        return list(progress_bar(results, progress=progress, total=len(files), desc="hands", unit="img", leave=False))


@dataclass
class HandTable:
    """Detections keyed by image content (sha256), so that a file is detected once across runs."""

    keys: np.ndarray  # (N,) str
    landmarks: np.ndarray  # (N, 21, 3) float32, units of the image's longer side
    world: np.ndarray  # (N, 21, 3) float32, metres
    handedness: np.ndarray  # (N,) int8
    found: np.ndarray  # (N,) bool
    attempt: np.ndarray  # (N,) int8
    seconds: np.ndarray  # (N,) float32, detection time
    attempts: list[tuple[float, int]]

    @classmethod
    def empty(cls, attempts: Sequence[tuple[float, int]]) -> HandTable:
        z = np.zeros((0, NUM_LANDMARKS, 3), np.float32)
        return cls(np.zeros(0, dtype=str), z, z.copy(), np.zeros(0, np.int8), np.zeros(0, bool),
                   np.zeros(0, np.int8), np.zeros(0, np.float32), list(attempts))

    @classmethod
    def from_results(cls, keys: Sequence[str], results: Sequence[HandResult], attempts: Sequence[tuple[float, int]]) -> HandTable:
        if not results:
            return cls.empty(attempts)
        return cls(
            np.array(keys, dtype=str), np.stack([r.landmarks for r in results]).astype(np.float32),
            np.stack([r.world for r in results]).astype(np.float32),
            np.array([r.handedness for r in results], np.int8), np.array([r.found for r in results], bool),
            np.array([r.attempt for r in results], np.int8), np.array([r.seconds for r in results], np.float32),
            list(attempts),
        )

    def __len__(self) -> int:
        return len(self.keys)

    ARRAYS = ("keys", "landmarks", "world", "handedness", "found", "attempt", "seconds")

    def take(self, index: np.ndarray) -> HandTable:
        return HandTable(*(getattr(self, k)[index] for k in self.ARRAYS), self.attempts)

    def concat(self, other: HandTable) -> HandTable:
        return HandTable(*(np.concatenate([getattr(self, k), getattr(other, k)]) for k in self.ARRAYS), self.attempts)

    def lookup(self, keys: Sequence[str]) -> HandTable:
        """The rows of `keys`, in their order (KeyError for a key not held)."""
        index = {k: i for i, k in enumerate(self.keys.tolist())}
        return self.take(np.array([index[k] for k in keys], dtype=np.int64))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **{k: getattr(self, k) for k in self.ARRAYS},
                            attempts=np.array(self.attempts, np.float32).reshape(-1, 2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, attempts: Sequence[tuple[float, int]]) -> HandTable:
        """The table at `path`, or an empty one when there is none or it was made with other attempts. Any other
        file there (a text file, another archive, a folder) is a UserError: saving the cache would overwrite it."""
        path = Path(path)
        if not path.exists():
            return cls.empty(attempts)
        fix = "pass --hand-cache a new file or a hands.npz it wrote, or move that file away"
        if not path.is_file() or not zipfile.is_zipfile(path):
            raise UserError(f"{path} is not a hand cache ({'a folder' if path.is_dir() else 'not an .npz'}); {fix}")
        try:
            with np.load(path, allow_pickle=False) as z:
                held = [(float(f), int(c)) for f, c in z["attempts"]]
                table = cls(*(z[k] for k in cls.ARRAYS), held)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"{path} is not a hand cache ({type(exc).__name__}: {exc}); {fix}") from exc
        return table if held == list(attempts) else cls.empty(attempts)


def cached_hands(
    files: Sequence[str | Path],
    keys: Sequence[str],
    cache_path: str | Path | None,
    *,
    attempts: Sequence[tuple[float, int]] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> HandTable:
    """Detections of `files` (whose contents hash to `keys`), aligned with them; only files whose key
    `cache_path` does not hold yet are detected, and the table is saved back with them."""
    attempts = list(attempts_for() if attempts is None else attempts)
    table = HandTable.load(cache_path, attempts) if cache_path else HandTable.empty(attempts)
    held = set(table.keys.tolist())
    todo: dict[str, str | Path] = {}
    for f, k in zip(files, keys):
        if k not in held:
            todo.setdefault(k, f)  # one detection per distinct content
    if todo:
        results = detect_files(list(todo.values()), attempts=attempts, workers=workers, progress=progress)
        table = table.concat(HandTable.from_results(list(todo), results, attempts))
        if cache_path:
            table.save(cache_path)
    return table.lookup(list(keys))


# --- the hand crop that the pixel model sees ------------------------------------------------------------
def hand_box(landmarks: np.ndarray, width: int, height: int, margin: float = 0.25) -> tuple[float, float, float]:
    """The square (left, top, side) in pixels around a hand: the landmarks' extent plus `margin` x that extent
    on every side, no larger than the image's longer side, shifted inside the image where it fits."""
    scale = max(width, height)
    xy = np.asarray(landmarks, np.float64)[:, :2] * scale
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    side = float(np.clip((hi - lo).max() * (1 + 2 * margin), 0.05 * scale, scale))
    origin = []
    for centre, extent in zip((lo + hi) / 2, (width, height)):
        start = centre - side / 2
        origin.append(float(np.clip(start, 0, extent - side)) if side <= extent else start)
    return origin[0], origin[1], side


def crop_square(image: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """The (left, top, side) square of an RGB uint8 image resized to (size, size, 3); edges repeat outside."""
    height, width = image.shape[:2]
    left, top, side = (int(round(v)) for v in box)
    side = max(side, 1)
    pad = max(0, -left, -top, left + side - width, top + side - height)
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        left, top = left + pad, top + pad
    patch = Image.fromarray(np.ascontiguousarray(image[top : top + side, left : left + side]))
    return np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def hand_crop(image: np.ndarray, landmarks: np.ndarray | None, size: int, margin: float = 0.25) -> np.ndarray:
    """The pixel model's input: the square around the hand (`landmarks`), else the centre square (as
    `images.load_image` crops)."""
    if landmarks is None:
        fitted = ImageOps.fit(Image.fromarray(image), (size, size), method=Image.Resampling.BILINEAR)
        return np.asarray(fitted, dtype=np.uint8)
    height, width = image.shape[:2]
    return crop_square(image, hand_box(landmarks, width, height, margin), size)
