"""One table over every model: unseen sources, unseen people, the test split, size and single-image latency.

`run_comparison` trains and scores whatever a run folder lacks (the pixel models, their leave-one-source-out
and leave-people-out folds, the landmark model and its folds, the fused predictor and the fusion weight
chosen on held-out sources, the motion words on held-out repositories), exports int8 ONNX models, then
`comparison_table` reads everything back from the files, so every figure has a file behind it.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.metrics import f1_score

from .config import Config, UserError
from .preprocess import FOLD_KINDS, Cache, load_splits
from .progress import bar

PIXEL_MODELS = ("convkan", "fastkan", "efficientnet_lite0")
LANDMARK, FUSED = "landmark_fastkan", "fused"
ALL_MODELS = (*PIXEL_MODELS, LANDMARK, FUSED)
COMPARE_DIR = "compare"
COLUMNS = [
    "model", "unseen_source_accuracy", "unseen_source_min", "unseen_person_accuracy", "unseen_person_min",
    "unseen_source_accuracy_in_kind", "unseen_person_accuracy_in_kind",
    "test_macro_f1", "test_accuracy", "params", "int8_bytes", "latency_ms", "notes",
]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _mean(rows: list[dict[str, Any]] | None, key: str) -> float | None:
    return float(np.mean([r[key] for r in rows])) if rows else None


def _min(rows: list[dict[str, Any]] | None, key: str) -> float | None:
    return float(np.min([r[key] for r in rows])) if rows else None


def person_accuracy(rows: list[dict[str, Any]] | None, key: str = "per_person") -> dict[str, float]:
    """{person: accuracy} from leave-people-out folds (every person is in one fold's test set)."""
    return {p: v["accuracy"] for r in rows or [] for p, v in r.get(key, {}).items()}


def held_out_figures(source: list[dict[str, Any]] | None, person: list[dict[str, Any]] | None, acc: str = "accuracy",
              per: str = "per_person") -> dict[str, float | None]:
    """Mean and worst held-out source and person accuracy, and both means with answers kept to the true
    label's kind (letters or digits, as `--classes` does), from fold rows."""
    people = list(person_accuracy(person, per).values())
    people_in_kind = list(person_accuracy(person, f"{per}_in_kind").values())
    in_kind = [r for r in source or [] if f"{acc}_in_kind" in r]
    return {"unseen_source_accuracy": _mean(source, acc), "unseen_source_min": _min(source, acc),
            "unseen_person_accuracy": float(np.mean(people)) if people else None,
            "unseen_person_min": float(np.min(people)) if people else None,
            "unseen_source_accuracy_in_kind": _mean(in_kind, f"{acc}_in_kind"),
            "unseen_person_accuracy_in_kind": float(np.mean(people_in_kind)) if people_in_kind else None}


def model_epochs(cfg: Config, model: str) -> int:
    """Epochs per model: the baseline keeps its budget, the transfer model its own, others `cfg.epochs`."""
    return {"fastkan": cfg.baseline_epochs, "efficientnet_lite0": cfg.transfer_epochs}.get(model, cfg.epochs)


def model_config(cfg: Config, model: str, folds: bool = False) -> Config:
    """The training config of `model` (folds train for at most `cfg.fold_epochs`)."""
    epochs = model_epochs(cfg, model)
    lr = cfg.transfer_lr if model == "efficientnet_lite0" else cfg.lr
    return cfg.replace(model=model, epochs=min(epochs, cfg.fold_epochs) if folds else epochs, lr=lr)


def latency_ms(fn: Callable[[int], Any], runs: int = 200, warmup: int = 20) -> float:
    """Median wall time of `fn(i)` in milliseconds."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# --- make what is missing --------------------------------------------------------------------------------
def _int8_path(run: Path, model: str) -> Path:
    return run / COMPARE_DIR / f"{model}_int8.onnx"


def ensure_pixel_model(cfg: Config, run: Path, model: str, progress: bool = True) -> None:
    """`train/<model>/best.pt`, `eval/<model>/metrics.json`, the person and source folds and an int8 ONNX."""
    from .evaluate import evaluate
    from .export import calibration_images, export_onnx, quantize_onnx
    from .train import folds_dir, train, train_folds

    ckpt = run / "train" / model / "best.pt"
    if not ckpt.exists():
        train(model_config(cfg, model), run, progress=progress)
    if not (run / "eval" / model / "metrics.json").exists():
        evaluate(ckpt, run, run / "eval" / model)
    for kind in FOLD_KINDS:
        if not (folds_dir(run, model, kind) / "folds.json").exists():
            train_folds(model_config(cfg, model, folds=True), run, kind, progress=progress)
    int8 = _int8_path(run, model)
    shipped = [run / "compress" / name for name in ("qat_int8.onnx", "int8.onnx")] if model == cfg.model else []
    shipped = [p for p in shipped if p.exists()]
    if not int8.exists() and shipped:  # what `compress` made (and the pipeline shipped) for the default model
        int8.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped[0], int8)
    elif not int8.exists():
        onnx_path = export_onnx(ckpt, run / COMPARE_DIR / f"{model}.onnx")
        quantize_onnx(onnx_path, int8, calibration_images(run))


def ensure_landmark_and_fused(cfg: Config, run: Path, pixel: str = "convkan", progress: bool = True) -> None:
    """The landmark model, its folds, its int8 export; the fused predictor's test metrics and folds."""
    from .evaluate import evaluate
    from .fusion import fused_folds, held_out_weight
    from .landmarks import LANDMARKS_NAME, export_landmark_model, landmark_folds, train_landmarks
    from .train import folds_dir

    if not (run / LANDMARKS_NAME).exists():
        raise UserError(f"no {run / LANDMARKS_NAME}; run `asl-tinyml landmarks --run {run}` first (MediaPipe)")
    options = cfg.landmark_options()
    if not (run / "train" / LANDMARK / "best.pt").exists():
        train_landmarks(run, progress=progress, **options)
    for kind in FOLD_KINDS:
        if not (folds_dir(run, LANDMARK, kind) / "folds.json").exists():
            landmark_folds(run, kind, person_folds=cfg.person_folds, progress=progress, **options)
    for kind in FOLD_KINDS:
        if not (folds_dir(run, FUSED, kind) / "folds.json").exists():
            fused_folds(run, kind, pixel, person_folds=cfg.person_folds)
    weight = held_out_weight(run)
    if not _int8_path(run, LANDMARK).exists():
        export_landmark_model(run, run / COMPARE_DIR, fusion_weight=weight, tflite=False)  # sizes of the ONNX int8 only
        (run / COMPARE_DIR / "asl_landmarks_int8.onnx").replace(_int8_path(run, LANDMARK))
    if not (run / "eval" / f"{FUSED}-{pixel}" / "metrics.json").exists():
        evaluate(_int8_path(run, pixel), run, run / "eval" / f"{FUSED}-{pixel}", landmark_model=_int8_path(run, LANDMARK),
                 fusion_weight=weight)


# --- the table ---------------------------------------------------------------------------------------------
def _landmark_test(run: Path) -> tuple[float | None, float | None]:
    """Macro-F1 and accuracy of the landmark model over every test image, a missed hand counted as wrong."""
    from .fusion import LandmarkPredictor

    ckpt = run / "train" / LANDMARK / "best.pt"
    if not ckpt.exists():
        return None, None
    cache = Cache.load(run)
    test = load_splits(run, len(cache))["test"]
    model = LandmarkPredictor(ckpt)
    features, found = model.hands_for_run(run)
    pred = np.where(found[test], model.predict_proba(features[test]).argmax(1), -1)
    y = cache.labels[test]
    return float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)), float(np.mean(pred == y))


def comparison_table(run: Path, models: tuple[str, ...] = ALL_MODELS, pixel: str = "convkan") -> list[dict[str, Any]]:
    """One row per model present in the run folder (see COLUMNS); latency is measured here, on one thread."""
    from .fusion import LandmarkPredictor
    from .inference import load_predictor
    from .landmarks import LandmarkCache
    from .train import folds_dir

    rows = []
    images = Cache.load(run).images[load_splits(run)["test"][:64]]
    lm_seconds = LandmarkCache.load(run).seconds_per_image if (run / "landmarks.npz").exists() else None
    lm_ms = None
    if _int8_path(run, LANDMARK).exists():
        lm = LandmarkPredictor(_int8_path(run, LANDMARK), threads=1)
        feats = np.random.default_rng(0).standard_normal((64, lm.session.get_inputs()[0].shape[1])).astype(np.float32)
        lm_ms = latency_ms(lambda i: lm.predict_proba(feats[i % 64 : i % 64 + 1]))
    pixel_ms: dict[str, float] = {}
    for model in bar(models, desc="compare", unit="model", leave=False):
        person = _read_json(folds_dir(run, model, "person") / "folds.json")
        source = _read_json(folds_dir(run, model, "source") / "folds.json")
        int8 = _int8_path(run, model)
        row: dict[str, Any] = {"model": model, "int8_bytes": int8.stat().st_size if int8.exists() else None}
        if model in PIXEL_MODELS:
            metrics = _read_json(run / "eval" / model / "metrics.json")
            if metrics is None:
                continue
            row |= {"test_macro_f1": metrics["macro_f1"], "test_accuracy": metrics["accuracy"], "params": metrics["params"],
                    **held_out_figures(source, person)}
            if int8.exists():
                p = load_predictor(int8, threads=1, batch_size=1)
                pixel_ms[model] = latency_ms(lambda i: p.predict_proba(images[i % len(images)]))
                row["latency_ms"] = pixel_ms[model]
            row["notes"] = "pixels"
        elif model == LANDMARK:
            f1, acc = _landmark_test(run)
            if f1 is None:
                continue
            ckpt_meta = _read_json(run / "train" / LANDMARK / "metrics.json") or {}
            row |= {"test_macro_f1": f1, "test_accuracy": acc, "params": ckpt_meta.get("params"),
                    **held_out_figures(source, person, "end_to_end_accuracy")}
            if lm_ms is not None and lm_seconds is not None:
                row["latency_ms"] = lm_ms + lm_seconds * 1000
            row["notes"] = ("MediaPipe landmarks; a missed hand counts as wrong; unseen sources include the landmark-only "
                            "sign_sequences; latency includes MediaPipe")
        else:
            metrics = _read_json(run / "eval" / f"{FUSED}-{pixel}" / "metrics.json")
            if metrics is None:
                continue
            parts = [_int8_path(run, pixel), _int8_path(run, LANDMARK)]
            pixel_params = (_read_json(run / "eval" / pixel / "metrics.json") or {}).get("params")
            lm_params = (_read_json(run / "train" / LANDMARK / "metrics.json") or {}).get("params")
            row |= {"test_macro_f1": metrics["macro_f1"], "test_accuracy": metrics["accuracy"],
                    "params": pixel_params + lm_params if pixel_params and lm_params else metrics["params"],
                    **held_out_figures(source, person),
                    "int8_bytes": sum(p.stat().st_size for p in parts) if all(p.exists() for p in parts) else None}
            if pixel in pixel_ms and lm_ms is not None and lm_seconds is not None:
                row["latency_ms"] = pixel_ms[pixel] + lm_ms + lm_seconds * 1000
            row["notes"] = (f"int8 {pixel} + int8 landmarks, weight {metrics.get('fusion_weight')} (chosen on held-out "
                            "sources); latency includes MediaPipe")
        rows.append({k: row.get(k) for k in COLUMNS})
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def write_comparison(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """`compare.csv`, `compare.json` and `compare.md` in `out_dir`; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "compare.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| model | unseen source: mean (min) | unseen person: mean (min) | the same, letters or digits only | "
        "test macro-F1 | test accuracy | params | int8 KiB | latency ms (1 thread) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        kib = r["int8_bytes"] / 1024 if r["int8_bytes"] else None
        lines.append(
            f"| {r['model']} | {_fmt(r['unseen_source_accuracy'])} ({_fmt(r['unseen_source_min'])}) "
            f"| {_fmt(r['unseen_person_accuracy'])} ({_fmt(r['unseen_person_min'])}) "
            f"| {_fmt(r['unseen_source_accuracy_in_kind'])} / {_fmt(r['unseen_person_accuracy_in_kind'])} | {_fmt(r['test_macro_f1'])} "
            f"| {_fmt(r['test_accuracy'])} | {_fmt(r['params'])} | {_fmt(kib, 1)} | {_fmt(r['latency_ms'], 2)} | {r['notes'] or ''} |"
        )
    (out_dir / "compare.md").write_text("\n".join(lines) + "\n")
    return out_dir / "compare.md"


WORD_FOLDS = 5  # grouped folds over the word collection's repositories


def word_folds_dir(run: Path) -> Path:
    """Where `ensure_word_folds` trains the motion words' held-out folds (`words/folds.json` in it)."""
    return run / COMPARE_DIR / "motion"


def word_folds_path(run: Path) -> Path:
    """The motion words' held-out figures `ensure_word_folds` writes."""
    return word_folds_dir(run) / "words" / "folds.json"


def ensure_word_folds(cfg: Config, run: Path, progress: bool = True) -> Path | None:
    """The motion words model on held-out repositories (`WORD_FOLDS` grouped folds over the word collection)
    and held-out traduttore sessions, in `word_folds_dir(run)`; None without the word files."""
    from .motion import train_motion

    root = cfg.sequences_folder()
    words, people = (root / "words.npz" if root else None), cfg.motion_people_path()
    if words is None or not words.exists() or people is None:
        return None
    if not word_folds_path(run).exists():
        train_motion(words, word_folds_dir(run), None, people=people, folds=WORD_FOLDS, epochs=cfg.motion_epochs,
                     seed=cfg.seed, limit=cfg.motion_limit, final=False, progress=progress)
    return word_folds_path(run)


def run_comparison(
    cfg: Config, run: Path, models: tuple[str, ...] = ALL_MODELS, *, train_missing: bool = True, progress: bool = True
) -> list[dict[str, Any]]:
    """Make what `models` lack in `run` (unless `train_missing` is False), then write and return the table."""
    unknown = sorted(set(models) - set(ALL_MODELS))
    if unknown:
        raise UserError(f"unknown model(s) {unknown} for compare; choose from {list(ALL_MODELS)}")
    if train_missing:
        for model in models:
            if model in PIXEL_MODELS:
                ensure_pixel_model(cfg, run, model, progress)
        if LANDMARK in models or FUSED in models:
            if FUSED in models and "convkan" not in models:
                ensure_pixel_model(cfg, run, "convkan", progress)
            ensure_landmark_and_fused(cfg, run, progress=progress)
        if LANDMARK in models or FUSED in models:
            ensure_word_folds(cfg, run, progress)
    rows = comparison_table(run, models)
    write_comparison(rows, run / COMPARE_DIR)
    return rows
