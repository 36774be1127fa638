"""Fused prediction: the hand-landmark model where MediaPipe finds a hand, the pixel model everywhere.

Where a hand is found the two models' probabilities are blended as a weighted geometric mean,
p ~ p_landmark^w * p_pixel^(1 - w), with `w` chosen on a validation split; where no hand is found the
pixel model decides alone. So one number covers every image and a missed detection costs what it costs.
Landmarks generalise to new signers (no background, no skin tone), pixels cover the images where the
palm detector fails; the blend also lets a confident model overrule an unsure one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.metrics import accuracy_score, f1_score

from .config import UserError
from .inference import LANDMARK_INPUT, META_CLASSES, META_INPUT, Predictor, load_predictor, open_session
from .preprocess import Cache, load_splits, make_folds

WEIGHT_GRID = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 11), 2))
DEFAULT_WEIGHT = 0.7  # what the val split of the shared data chose (README, "Beyond pixels"); --fusion-weight
EPS = 1e-9
FUSED_NAME = "fused"  # RUN/train/fused-loso[-source]


def fuse_proba(pixel: np.ndarray, landmark: np.ndarray, found: np.ndarray, weight: float) -> np.ndarray:
    """(N, C) pixel and landmark probabilities -> fused (N, C): the weighted geometric mean, renormalised,
    where `found`; the pixel row where not. `weight` 0 is the pixel model alone, 1 the landmark model."""
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"the fusion weight must lie in [0, 1], got {weight}")
    pixel, landmark = np.asarray(pixel, np.float64), np.asarray(landmark, np.float64)
    if pixel.shape != landmark.shape:
        raise UserError(f"pixel and landmark probabilities differ in shape: {pixel.shape} vs {landmark.shape}")
    logp = weight * np.log(np.clip(landmark, EPS, 1.0)) + (1.0 - weight) * np.log(np.clip(pixel, EPS, 1.0))
    found = np.asarray(found, dtype=bool)[:, None]
    return np.where(found, softmax(logp, axis=1), pixel).astype(np.float32)


def choose_weight(
    pixel: np.ndarray, landmark: np.ndarray, found: np.ndarray, labels: np.ndarray, grid: tuple[float, ...] = WEIGHT_GRID
) -> tuple[float, dict[float, float]]:
    """The weight of `grid` with the best macro-F1 on these (validation) rows, ties to the middle; and all scores."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    scores = {
        float(w): float(f1_score(labels, fuse_proba(pixel, landmark, found, w).argmax(1), labels=present,
                                 average="macro", zero_division=0))
        for w in grid
    }
    best = max(scores, key=lambda w: (round(scores[w], 6), -abs(w - 0.5)))
    return best, scores


# --- the landmark model ----------------------------------------------------------------------------------
class LandmarkPredictor:
    """A `landmark_fastkan` file (`.pt` checkpoint or `.onnx` export) and the feature recipe it was trained on.

    `hands_for_run` / `hands_for_files` turn a run's landmark cache or image files into its input features
    and a `found` mask; `predict_proba` maps features (N, F) to probabilities (N, C).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"landmark model {self.path} not found; train one with `asl-tinyml landmarks --train`")
        suffix = self.path.suffix.lower()
        if suffix == ".pt":
            from .models import count_parameters, load_checkpoint

            self.model, meta = load_checkpoint(self.path)
            self.kind, self.params = "torch", count_parameters(self.model)
            props = {META_INPUT: meta.get("input"), META_CLASSES: meta["classes"], "features": meta.get("features")}
        elif suffix == ".onnx":
            fix = "export one with `asl-tinyml landmarks --train --export DIR`"
            self.session, raw = open_session(self.path, threads, fix=fix)
            props = {META_INPUT: raw.get(META_INPUT), META_CLASSES: json.loads(raw.get(META_CLASSES, "[]")),
                     "features": json.loads(raw.get("features", "{}"))}
            self.kind, self.params = "onnx", int(raw["params"]) if raw.get("params", "").isdigit() else None
        else:
            raise UserError(f"{self.path} is neither a checkpoint nor an ONNX model; pass a .pt or .onnx landmark model")
        if props[META_INPUT] != LANDMARK_INPUT:
            raise UserError(f"{self.path} is not a hand-landmark model; pass a best.pt from `asl-tinyml landmarks --train`")
        self.classes = [str(c) for c in props[META_CLASSES]]
        features = props["features"] or {}
        self.mirror, self.distances = bool(features.get("mirror", True)), bool(features.get("distances", True))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Normalised features (N, F) float32 -> probabilities (N, C) float32."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if len(features) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        if self.kind == "torch":
            import torch

            with torch.no_grad():
                logits = self.model(torch.from_numpy(features)).numpy()
        else:
            logits = self.session.run(None, {self.session.get_inputs()[0].name: features})[0]
        return softmax(logits.astype(np.float64), axis=1).astype(np.float32)

    def hands_for_run(self, run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, F), found (N,)) for every row of a run's cache, from its `landmarks.npz`."""
        from .landmarks import load_landmark_data, point_features

        data = load_landmark_data(run_dir, self.mirror)
        return point_features(data.points, self.distances), data.found

    def hands_for_files(self, paths: list[str | Path], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(features, found) of image files, detected with MediaPipe Hands (an unreadable file: not found)."""
        from .hands import image_features

        return image_features(paths, mirror=self.mirror, distances=self.distances, progress=progress)

    def __repr__(self) -> str:
        return f"LandmarkPredictor({self.path}, {self.kind}, {len(self.classes)} classes)"


def load_landmark_predictor(path: str | Path, threads: int | None = None) -> LandmarkPredictor:
    return LandmarkPredictor(path, threads)


@dataclass
class FusedPredictor:
    """A pixel `Predictor` and a `LandmarkPredictor` over the same classes, blended with `weight`."""

    pixel: Predictor
    landmark: LandmarkPredictor
    weight: float = DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        if self.pixel.classes != self.landmark.classes:
            raise UserError(
                f"{self.pixel.path} and {self.landmark.path} know different classes; pair models trained on the same run"
            )

    @property
    def classes(self) -> list[str]:
        return self.pixel.classes

    def predict_proba(self, images: np.ndarray, features: np.ndarray, found: np.ndarray) -> np.ndarray:
        """uint8 images (N, S, S, 3) and their landmark features/found mask -> fused probabilities (N, C)."""
        return fuse_proba(self.pixel.predict_proba(images), self.landmark.predict_proba(features), found, self.weight)


# --- held-out folds --------------------------------------------------------------------------------------
def fused_folds(
    run_dir: str | Path, kind: str = "signer", pixel_model: str = "convkan", out_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Fuse the fold models that `train.train_folds` (pixels) and `landmarks.landmark_folds` left behind:
    per fold, choose the weight on the fold's val rows, then score all its held-out images.

    Writes `folds.json`/`.csv` to `out_dir` (default `RUN/train/fused-loso[-source]`); one dict per fold.
    """
    from .train import folds_dir, write_folds

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else folds_dir(run_dir, FUSED_NAME, kind)
    cache = Cache.load(run_dir)
    rows: list[dict[str, Any]] = []
    hands: tuple[np.ndarray, np.ndarray] | None = None
    for fold in make_folds(kind, cache.labels, cache.groups, cache.sources, load_splits(run_dir, len(cache))):
        paths = [folds_dir(run_dir, m, kind) / fold.name / "best.pt" for m in (pixel_model, "landmark_fastkan")]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UserError(
                f"{missing[0]} not found; train the fold models first (`asl-tinyml compare --run {run_dir}` does)"
            )
        fused = FusedPredictor(load_predictor(paths[0]), LandmarkPredictor(paths[1]))
        if hands is None:
            hands = fused.landmark.hands_for_run(run_dir)
        features, found = hands
        val, test = fold.val, fold.test
        p_val = (fused.pixel.predict_proba(cache.images[val]), fused.landmark.predict_proba(features[val]))
        weight, _ = choose_weight(*p_val, found[val], cache.labels[val])
        proba = fuse_proba(fused.pixel.predict_proba(cache.images[test]), fused.landmark.predict_proba(features[test]),
                           found[test], weight)
        pred, y = proba.argmax(1), cache.labels[test]
        rows.append({
            "fold": fold.name, "kind": kind, "n_images": int(len(test)), "hand_found": int(found[test].sum()),
            "weight": weight, "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)),
        })
    write_folds(rows, out_dir)
    return rows
