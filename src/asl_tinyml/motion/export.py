"""A motion model's files: the checkpoint (`save_motion_model`), float and int8 ONNX (`export_motion_onnx`,
through `export.py`'s exporter and quantizer), the shipped set checked against PyTorch (`export_motion`),
and the predictor that reads any of them (`MotionPredictor`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import UserError
from ..inference import META_CLASSES, MOTION_INPUT, ONNX_INPUT, check_model_kind, open_session
from .data import DEFAULT_ASPECT, LETTERS_WIDTH, WORDS_WIDTH, SequenceSet
from .features import frame_width, sequence_features
from .train import MODEL_NAME, _softmax, thresholds

STEMS = {"letters": "asl_motion_letters", "words": "asl_motion_words"}


def save_motion_model(path: str | Path, model: nn.Module, kind: str, classes: list[str], metrics: dict[str, Any],
                      **options: Any) -> Path:
    """A motion checkpoint: the weights, the classes and the feature recipe (kind, width, aspect, `decide`'s thresholds)."""
    from ..models import save_checkpoint

    meta = {
        "model": MODEL_NAME, "model_options": {"in_features": frame_width(kind), **options}, "classes": list(classes),
        "image_size": None, "input": MOTION_INPUT,
        "features": {"kind": kind, "width": LETTERS_WIDTH if kind == "letters" else WORDS_WIDTH,
                     "aspect": DEFAULT_ASPECT, **thresholds(kind)},
        "metrics": metrics,
    }
    save_checkpoint(path, model, meta)
    return Path(path)


def export_motion_onnx(checkpoint: str | Path, out_path: str | Path, int8_path: str | Path | None,
                       calibration: np.ndarray | None = None) -> dict[str, Path]:
    """A motion checkpoint -> float ONNX (input (N, T, F) features, both axes dynamic) and, with `int8_path`
    and calibration windows (N, T, F), a static int8 QDQ copy (per-tensor, the head's element-wise ops
    float). Both carry the classes and feature recipe."""
    from ..export import quantize_onnx, save_onnx
    from ..models import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    check_model_kind(checkpoint, meta.get("input"), "motion", "`asl-tinyml motion export`")
    out = {"onnx": save_onnx(model, meta, out_path, opset=None)}
    if int8_path is None:
        return out
    if calibration is None or len(calibration) == 0:
        raise UserError("int8 export of a motion model needs calibration windows")
    calib = np.asarray(calibration, np.float32)
    out["onnx_int8"] = quantize_onnx(out["onnx"], int8_path, calib, per_channel=False, float_convs=0)
    return out


class MotionPredictor:
    """A motion model file (`.pt` checkpoint or `.onnx`): raw windows (N, T, D) -> probabilities (N, C)."""

    def __init__(self, path: str | Path, threads: int | None = 1) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"motion model {self.path} not found; make it with `asl-tinyml motion train` "
                            "or `asl-tinyml pipeline`, or pass --model")
        if self.path.suffix == ".onnx":
            self.session, props = open_session(self.path, threads, fix="export one with `asl-tinyml motion export`")
            check_model_kind(self.path, props.get("input"), "motion", "a motion command's --model")
            self.classes = json.loads(props[META_CLASSES])
            self.recipe = json.loads(props.get("features", "{}"))
            self.model = None
            self._input = ONNX_INPUT
        else:
            from ..models import load_checkpoint

            if threads:
                torch.set_num_threads(threads)
            self.model, meta = load_checkpoint(self.path)
            check_model_kind(self.path, meta.get("input"), "motion", "a motion command's --model")
            self.classes = list(meta["classes"])
            self.recipe = dict(meta.get("features", {}))
        self.kind = str(self.recipe.get("kind", "letters"))
        self.rule = {k: float(self.recipe.get(k, 0.0)) for k in ("idle_below", "motion_below")}  # `decide`'s thresholds
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
        if np.ndim(aspect) == 0 and not (np.isfinite(aspect) and aspect > 0):
            raise UserError(f"the aspect (frame height / width) must be a number above 0, got {aspect}")
        out = []
        for i in range(0, len(windows), batch):
            asp = aspect if np.ndim(aspect) == 0 else np.asarray(aspect)[i : i + batch]
            feats = sequence_features(windows[i : i + batch], asp, self.kind)
            out.append(_softmax(self.logits_features(feats)))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


def default_model_path(kind: str, models_dir: str | Path | None = None) -> Path:
    """The shipped int8 model of `kind` in the model set `models_dir` (`model_sets.resolve_models`)."""
    from ..model_sets import resolve_models

    return resolve_models(models_dir).path / f"{STEMS[kind]}_int8.onnx"


def _calibration(data: SequenceSet, n: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    return sequence_features(data.x[rows], DEFAULT_ASPECT, data.kind)


def export_motion(checkpoint: str | Path, models_dir: str | Path, data: SequenceSet) -> dict[str, Any]:
    """`asl_motion_<kind>.pt`, `.onnx`, `_int8.onnx` into `models_dir`, with their agreement with PyTorch
    on `data` (the float and int8 files' top-1 agreement and max probability difference) and sizes."""
    from ..models import load_checkpoint

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
