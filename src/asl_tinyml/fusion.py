"""Fused prediction: the hand-landmark model where MediaPipe finds a hand, the pixel model everywhere.

Where a hand is found the two models' probabilities are blended as a weighted geometric mean,
p ~ p_landmark^w * p_pixel^(1 - w), with `w` chosen on held-out folds (`fused_folds`; else
`Config.fusion_weight`) and recorded in the landmark model file; where no hand is found the pixel model
decides alone. So one number covers every image and a missed detection costs what it costs.
Landmarks generalise to new signers (no background, no skin tone), pixels cover the images where the
palm detector fails; the blend also lets a confident model overrule an unsure one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy.special import softmax
from sklearn.metrics import accuracy_score, f1_score

from .answers import NO_HAND_LABEL, predict_in_kind
from .config import Config, UserError
from .hands import FeatureRecipe, HandResult
from .inference import (
    META_CLASSES,
    META_INPUT,
    Predictor,
    check_model_kind,
    load_predictor,
    open_session,
)
from .preprocess import Cache, load_splits, make_folds, person_ids

WEIGHT_GRID = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 11), 2))
DEFAULT_WEIGHT = Config.fusion_weight  # for a landmark file that records no weight of its own (`fusion_weight`)
PIXEL_INT8 = "asl_fastkan_int8.onnx"  # the shipped files in models/
LANDMARK_INT8 = "asl_landmarks_int8.onnx"
EPS = 1e-9
FUSED_NAME = "fused"
FUSION_WEIGHT = "fusion_weight"  # landmark model metadata: the weight the pipeline chose for the shipped pair  # RUN/train/fused-loso[-source]


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
    pixel: np.ndarray, landmark: np.ndarray, found: np.ndarray, labels: np.ndarray, grid: tuple[float, ...] = WEIGHT_GRID,
    classes: list[str] | None = None,
) -> tuple[float, dict[float, float]]:
    """The weight of `grid` with the best score on these rows, ties to the middle; and all scores. The score is
    macro-F1, or with `classes` the accuracy of answers kept to the true label's kind (letters or digits), the
    answers a user gets with `--classes`."""
    labels = np.asarray(labels)
    present = np.unique(labels)

    def score(proba: np.ndarray) -> float:
        if classes is not None:
            return float(np.mean(predict_in_kind(proba, labels, classes) == labels))
        return float(f1_score(labels, proba.argmax(1), labels=present, average="macro", zero_division=0))

    scores = {float(w): score(fuse_proba(pixel, landmark, found, w)) for w in grid}
    best = max(scores, key=lambda w: (round(scores[w], 6), -abs(w - 0.5)))
    return best, scores


# --- the landmark model ----------------------------------------------------------------------------------
class LandmarkPredictor:
    """A `landmark_fastkan` file (`.pt` checkpoint or `.onnx` export) and the feature recipe it was trained on.

    `hands_for_run` turns a run's landmark cache into its input features and a `found` mask (`SignPredictor`
    does it for images); `predict_proba` maps features (N, F) to probabilities (N, C).
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
            props = {META_INPUT: meta.get("input"), META_CLASSES: meta["classes"], "features": meta.get("features"),
                     FUSION_WEIGHT: meta.get(FUSION_WEIGHT)}
            width = meta.get("model_options", {}).get("in_features")
        elif suffix == ".onnx":
            fix = "export one with `asl-tinyml landmarks --train --export DIR`"
            self.session, raw = open_session(self.path, threads, fix=fix)
            props = {META_INPUT: raw.get(META_INPUT), META_CLASSES: json.loads(raw.get(META_CLASSES, "[]")),
                     "features": json.loads(raw.get("features", "{}")), FUSION_WEIGHT: raw.get(FUSION_WEIGHT)}
            self.kind, self.params = "onnx", int(raw["params"]) if raw.get("params", "").isdigit() else None
            width = self.session.get_inputs()[0].shape[-1]
        else:
            raise UserError(f"{self.path} is neither a checkpoint nor an ONNX model; pass a .pt or .onnx landmark model")
        check_model_kind(self.path, props[META_INPUT], "hand-landmark", "--landmark-model")
        self.classes = [str(c) for c in props[META_CLASSES]]
        features = props["features"] or {}
        self.recipe = FeatureRecipe.from_meta(features)
        if isinstance(width, int) and width != self.recipe.size:
            raise UserError(f"{self.path} takes {width} features but the recipe it records makes {self.recipe.size}; "
                            "re-train it with `asl-tinyml landmarks --train`")
        weight = props[FUSION_WEIGHT]
        self.fusion_weight = float(weight) if weight not in (None, "") else DEFAULT_WEIGHT  # chosen at export

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
        from .landmarks import load_landmark_data

        data = load_landmark_data(run_dir, self.recipe.mirror)
        return self.recipe.features(data.points), data.found

    def __repr__(self) -> str:
        return f"LandmarkPredictor({self.path}, {self.kind}, {len(self.classes)} classes)"


@dataclass
class HandInputs:
    """What the models see of N images: pixel crops (N, S, S, 3) uint8, landmark features (N, F), `found`."""

    crops: np.ndarray
    features: np.ndarray | None
    found: np.ndarray


class FilePredictions(NamedTuple):
    """`SignPredictor.predict_files`: per file, probabilities (N, C), hand found, read error, pixel crop."""

    proba: np.ndarray
    found: np.ndarray
    errors: list[str | None]
    crops: np.ndarray


class SignPredictor:
    """The shipped predictor: a pixel model, on hand crops when it was trained on them, optionally fused with
    the landmark model where MediaPipe finds a hand (`fuse_proba` with `weight`; the pixel model alone where
    it finds none). Takes RGB images or files; `predict_proba` works on prepared `HandInputs`."""

    def __init__(self, pixel: Predictor, landmark: LandmarkPredictor | None = None, weight: float | None = None,
                 no_hand_threshold: float = 0.5) -> None:
        if landmark is not None and pixel.classes != landmark.classes:
            raise UserError(
                f"{pixel.path} and {landmark.path} know different classes; pair models trained on the same run"
            )
        self.pixel, self.landmark = pixel, landmark
        self.weight = float(weight if weight is not None else (landmark.fusion_weight if landmark else 0.0))
        fuse_proba(np.ones((1, 1)), np.ones((1, 1)), np.ones(1, bool), self.weight)  # a bad weight fails now
        self.no_hand_threshold = no_hand_threshold
        self._detector: Any = None

    @property
    def classes(self) -> list[str]:
        return self.pixel.classes

    @property
    def needs_hands(self) -> bool:
        return self.landmark is not None or self.pixel.crop == "hand"

    @property
    def name(self) -> str:
        return f"{self.pixel.path}" + (f" + {self.landmark.path} (fused, weight {self.weight})" if self.landmark else "")

    def inputs(self, images: list[np.ndarray], landmarks: np.ndarray, handedness: np.ndarray, found: np.ndarray) -> HandInputs:
        """RGB uint8 images (any size) and their detections -> the models' inputs."""
        from .hands import hand_crop

        size, hand = self.pixel.image_size, self.pixel.crop == "hand"
        crops = [hand_crop(im, lm if hand and ok else None, size, self.pixel.crop_margin)
                 for im, lm, ok in zip(images, landmarks, found)]
        crops_array = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        features = None
        if self.landmark is not None:
            features = self.landmark.recipe.normalize(landmarks, handedness)
            features[~np.asarray(found, bool)] = 0.0
        return HandInputs(crops_array, features, np.asarray(found, bool))

    def predict_proba(self, inputs: HandInputs) -> np.ndarray:
        """Probabilities (N, C): fused where a hand was found (with a landmark model), pixels elsewhere."""
        proba = self.pixel.predict_proba(inputs.crops)
        if self.landmark is None or inputs.features is None:
            return proba
        return fuse_proba(proba, self.landmark.predict_proba(inputs.features), inputs.found, self.weight)

    def predict_files(self, paths: list[Path], progress: bool = False) -> FilePredictions:
        """Probabilities, `found`, read errors and the pixel crops of image files; an unreadable file has an
        error message and zero rows."""
        from .hands import NUM_LANDMARKS, detect_files
        from .images import read_rgb

        images: list[np.ndarray] = []
        errors: list[str | None] = []
        for path in paths:
            try:
                images.append(read_rgb(path))
                errors.append(None)
            except (ValueError, OSError) as exc:
                errors.append(str(exc))
        ok = [p for p, e in zip(paths, errors) if e is None]
        if self.needs_hands:
            results = detect_files(ok, progress=progress)
            landmarks = np.stack([r.landmarks for r in results]) if results else np.zeros((0, NUM_LANDMARKS, 3))
            handedness = np.array([r.handedness for r in results], np.int8)
            found = np.array([r.found for r in results], bool)
        else:
            landmarks, handedness = np.zeros((len(ok), NUM_LANDMARKS, 3)), np.full(len(ok), -1, np.int8)
            found = np.zeros(len(ok), bool)
        inputs = self.inputs(images, landmarks, handedness, found)
        size = self.pixel.image_size
        out = FilePredictions(np.zeros((len(paths), len(self.classes)), np.float32), np.zeros(len(paths), bool),
                              errors, np.zeros((len(paths), size, size, 3), np.uint8))
        rows = np.array([e is None for e in errors], bool)
        out.proba[rows], out.found[rows], out.crops[rows] = self.predict_proba(inputs), found, inputs.crops
        return out

    def predict_image(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """One RGB uint8 image -> (probabilities (C,), hand found); keeps one MediaPipe detector open."""
        proba, hand = self.predict_hand(image)
        return proba, hand.found

    def predict_hand(self, image: np.ndarray) -> tuple[np.ndarray, HandResult]:
        """One RGB uint8 image -> (probabilities (C,), MediaPipe's detection: `found`, landmarks, handedness),
        the detection also for the live page's moving signs; keeps one MediaPipe detector open."""
        from .hands import NUM_LANDMARKS, HandDetector

        result = HandResult(False)
        if self.needs_hands:
            if self._detector is None:
                self._detector = HandDetector()
            result = self._detector.detect(image)
        landmarks = result.landmarks if result.found else np.zeros((NUM_LANDMARKS, 3), np.float32)
        inputs = self.inputs([image], landmarks[None], np.array([result.handedness]), np.array([result.found]))
        return self.predict_proba(inputs)[0], result

    def label(self, proba: np.ndarray, found: bool) -> str:
        """The answer for one image: its top class, or `NO_HAND_LABEL` where no hand was found (by a predictor
        that looks for hands) and the top class is below `no_hand_threshold`: the pixel model, trained to be
        unsure on empty scenes (`negatives`), is not sure a hand is there. The live page types nothing then."""
        top = int(np.argmax(proba))
        if self.needs_hands and not found and proba[top] < self.no_hand_threshold:
            return NO_HAND_LABEL
        return self.classes[top]

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None


def load_sign_predictor(
    model: str | Path | None = None, landmark_model: str | Path | None = None, *, models_dir: str | Path | None = None,
    weight: float | None = None, threads: int | None = None, no_hand_threshold: float = 0.5,
) -> SignPredictor:
    """The predictor `predict`, `evaluate` and `serve` use. With no `model`, the files of the model set
    (`model_sets.resolve_models(models_dir)`): the int8 pixel model, fused with the int8 landmark model when
    that file exists."""
    from .model_sets import resolve_models

    models_dir = resolve_models(models_dir).path
    if model is None:
        model = models_dir / PIXEL_INT8
        if landmark_model is None and (models_dir / LANDMARK_INT8).exists():
            landmark_model = models_dir / LANDMARK_INT8
        if not Path(model).exists():
            raise UserError(f"no shipped model in {models_dir}/ ({PIXEL_INT8}); pass --models-dir DIR or --model FILE, "
                            "or run `asl-tinyml pipeline`")
    pixel = load_predictor(model, threads)
    landmark = LandmarkPredictor(landmark_model, threads) if landmark_model is not None else None
    return SignPredictor(pixel, landmark, weight, no_hand_threshold)


def held_out_weight(run_dir: str | Path) -> float | None:
    """The fusion weight `fused_folds` chose on held-out sources for a run (`compare`), if it has run."""
    from .train import folds_dir

    path = folds_dir(Path(run_dir), FUSED_NAME, "source") / "weight.json"
    return float(json.loads(path.read_text())["weight"]) if path.exists() else None


# --- held-out folds --------------------------------------------------------------------------------------
def fused_folds(
    run_dir: str | Path, kind_name: str = "person", pixel_model: str = "convkan", out_dir: str | Path | None = None,
    person_folds: int = 4,
) -> list[dict[str, Any]]:
    """Fuse the fold models that `train.train_folds` (pixels) and `landmarks.landmark_folds` left behind.

    The weight is chosen on held-out data, never on the fold's own in-source validation rows (where pixels
    look better than they are on a new camera): fold k is scored with the weight whose answers, kept to the
    true label's kind as `--classes` does, are right most often on the other folds' held-out images. Writes `folds.json`/`.csv` to `out_dir` (default
    `RUN/train/fused-loso[-source]`), one dict per fold, and `weight.json` with the weight chosen on every
    fold's held-out images (the one to ship).
    """
    from .train import folds_dir, per_person, write_folds

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else folds_dir(run_dir, FUSED_NAME, kind_name)
    cache = Cache.load(run_dir)
    persons = person_ids(cache.groups, cache.sources)
    held: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # fold, p_pix, p_lm, found, y
    hands: tuple[np.ndarray, np.ndarray] | None = None
    for fold in make_folds(kind_name, cache.labels, cache.groups, cache.sources, load_splits(run_dir, len(cache)),
                           person_folds):
        paths = [folds_dir(run_dir, m, kind_name) / fold.name / "best.pt" for m in (pixel_model, "landmark_fastkan")]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UserError(
                f"{missing[0]} not found; train the fold models first (`asl-tinyml compare --run {run_dir}` does)"
            )
        landmark = LandmarkPredictor(paths[1])
        if hands is None:
            hands = landmark.hands_for_run(run_dir)
        features, found = hands
        test = fold.test
        held.append((fold, load_predictor(paths[0]).predict_proba(cache.images[test]),
                     landmark.predict_proba(features[test]), found[test], cache.labels[test]))

    def pooled(folds: list[int]) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate([held[k][i] for k in folds]) for i in range(1, 5))

    rows: list[dict[str, Any]] = []
    for k, (fold, p_pix, p_lm, found, y) in enumerate(held):
        others = [j for j in range(len(held)) if j != k] or [k]
        weight, _ = choose_weight(*pooled(others), classes=cache.classes)
        fused = fuse_proba(p_pix, p_lm, found, weight)
        pred, lm_pred = fused.argmax(1), np.where(found, p_lm.argmax(1), -1)
        kind = {name: predict_in_kind(p, y, cache.classes) for name, p in (("fused", fused), ("pixel", p_pix), ("lm", p_lm))}
        kind["lm"] = np.where(found, kind["lm"], -1)
        who = persons[fold.test]
        rows.append({
            "fold": fold.name, "kind": kind_name, "n_images": int(len(y)), "hand_found": int(found.sum()),
            "weight": weight, "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)),
            "pixel_accuracy": float(accuracy_score(y, p_pix.argmax(1))),
            "landmark_accuracy": float(np.mean(lm_pred == y)),
            "accuracy_in_kind": float(np.mean(kind["fused"] == y)),
            "pixel_accuracy_in_kind": float(np.mean(kind["pixel"] == y)),
            "landmark_accuracy_in_kind": float(np.mean(kind["lm"] == y)),
            "per_person": per_person(who, pred == y), "pixel_per_person": per_person(who, p_pix.argmax(1) == y),
            "landmark_per_person": per_person(who, lm_pred == y),
            "per_person_in_kind": per_person(who, kind["fused"] == y),
        })
    write_folds(rows, out_dir)
    weight, scores = choose_weight(*pooled(list(range(len(held)))), classes=cache.classes)
    (out_dir / "weight.json").write_text(json.dumps({"weight": weight, "kind": kind_name,
                                                     "accuracy_in_kind_by_weight": scores}, indent=2))
    return rows
