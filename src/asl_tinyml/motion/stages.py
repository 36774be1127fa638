"""The motion stages the CLI and the pipeline call: train (held-out folds, then the shipped model, exported),
evaluate, predict, and the latency of one window."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import UserError, output_dir
from .data import DEFAULT_ASPECT, HOLDOUT_SESSIONS, MOTION_LETTERS, SequenceSet, load_sequences
from .export import MotionPredictor, default_model_path, export_motion, save_motion_model
from .features import sequence_features
from .train import IDLE_BELOW, MODEL_NAME, decide, holdout, holdout_split, score, train_motion_model

MODEL_OPTIONS = ("channels", "blocks", "kernel", "hidden", "num_grids", "dropout")  # the rest of **options is training's


def holdout_sessions(sessions: np.ndarray, asked: tuple[str, ...] | None, path: str | Path) -> tuple[str, ...]:
    """The sessions held out in turn: each of `asked`, which must be sessions of the file at `path`, or with
    `asked` None the default ones (`HOLDOUT_SESSIONS`) the file holds."""
    present = sorted(set(np.asarray(sessions).astype(str)))
    if asked is None:
        return tuple(h for h in HOLDOUT_SESSIONS if h in present)
    unknown = [h for h in asked if h not in present]
    if unknown:
        raise UserError(f"{path} has no session {', '.join(unknown)} to hold out (its sessions: {', '.join(present)}); "
                        "pass --holdout some of them, or --holdout alone to skip the folds")
    return tuple(asked)


def per_class_and_session(data: SequenceSet, limit: int) -> SequenceSet:
    """At most `limit` windows of each class and session (a quick slice), in file order."""
    if limit < 1:
        raise UserError(f"limit must be at least 1 window per class and session, got {limit}")
    keep = np.concatenate([
        np.flatnonzero((data.labels == c) & (data.sessions == s))[:limit]
        for c in np.unique(data.labels) for s in np.unique(data.sessions)
    ])
    return data.subset(np.sort(keep))


def train_motion(
    data_path: str | Path,
    out_dir: str | Path,
    models_dir: str | Path | None = "models",
    *,
    holdouts: tuple[str, ...] | None = None,
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
    `holdouts`: the sessions held out (`holdout_sessions`; None: the default ones the file holds); `limit`: at
    most this many windows per class and session (a quick slice)."""
    from ..plots import plot_motion_confusion

    if epochs < 1:
        raise UserError(f"a motion model needs at least 1 epoch, got {epochs}")
    data = load_sequences(data_path)
    if limit is not None:
        data = per_class_and_session(data, limit)
    holdouts = holdout_sessions(data.sessions, holdouts, data_path)
    kind = data.kind
    classes = [str(c) for c in sorted(set(data.labels))]
    out = Path(out_dir) / kind
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"kind": kind, "data": str(data_path), "n": len(data), "frames": int(data.x.shape[1]),
                              "classes": classes, "model": MODEL_NAME, "folds": []}
    for held in holdouts:
        fold, _, proba = holdout(data, held, classes=classes, seed=seed, epochs=epochs, progress=progress, **options)
        test = holdout_split(data.sessions, held)[1]
        m = score(data.labels[test], proba, classes, IDLE_BELOW[kind])
        plot_motion_confusion(m, out / f"confusion_{held}.png", f"{kind}: held-out session {held}")
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
        from ..models import count_parameters

        result["params"] = count_parameters(model)
        arch = {k: v for k, v in options.items() if k in MODEL_OPTIONS}
        ckpt = save_motion_model(out / "best.pt", model, kind, classes, {"holdout": result.get("holdout_mean_accuracy")},
                                 **arch)
        if models_dir is not None:
            result["export"] = export_motion(ckpt, models_dir, data)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def evaluate_motion(data_path: str | Path, model: str | Path | None = None, out_dir: str | Path | None = None,
                    models_dir: str | Path | None = None, aspect: float = DEFAULT_ASPECT, threads: int = 1) -> dict[str, Any]:
    """Score a motion model on an `.npz` of windows (any number of frames): accuracy, macro-F1, per-class
    precision/recall/F1, the confusion matrix (with `out_dir`: `metrics.json` and its figure there; without,
    nothing is written). Labels outside the model's classes are counted under `skipped`; a file with none of
    them is a UserError. Without `model`, the shipped letters or words model is picked by the landmark
    width (126 or 258)."""
    from ..plots import plot_motion_confusion

    data = load_sequences(data_path)
    path = Path(model) if model else default_model_path(data.kind, models_dir)
    predictor = MotionPredictor(path, threads=threads)
    if predictor.kind != data.kind:
        raise UserError(f"{path} is a {predictor.kind} model but {data_path} holds {data.kind} windows")
    start = time.perf_counter()
    proba = predictor.predict_proba(data.x, aspect)
    ms = (time.perf_counter() - start) * 1000 / max(len(data), 1)
    metrics = score(data.labels, proba, predictor.classes, predictor.idle_below)
    if metrics["n"] == 0:
        raise UserError(f"no window of {data_path} is labelled with a class of {path} (labels: "
                        f"{', '.join(sorted(metrics['skipped']))}; classes: {', '.join(predictor.classes)}); "
                        "pass windows of its classes or another --model")
    metrics.update(model=str(path), data=str(data_path), kind=data.kind, frames=int(data.x.shape[1]),
                   ms_per_window=round(ms, 3))
    for letter in MOTION_LETTERS if data.kind == "letters" else ():
        if letter in metrics.get("per_class", {}):
            metrics[f"{letter}_recall"] = metrics["per_class"][letter]["recall"]
    metrics["figures"] = []
    if out_dir is None:
        return metrics
    out = output_dir(out_dir, "--out")
    figure = plot_motion_confusion(metrics, out / "confusion_matrix.png", f"{path.name} on {Path(data_path).name}")
    metrics["figures"] = [str(figure)] if figure else []
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def predict_motion(data_path: str | Path, model: str | Path | None = None, models_dir: str | Path | None = None,
                   topk: int = 3, aspect: float = DEFAULT_ASPECT) -> list[dict[str, Any]]:
    """The top-k classes of every window of an `.npz` (its `label` is reported next to them when present)."""
    if topk < 1:
        raise UserError(f"--topk must be at least 1, got {topk}")
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
