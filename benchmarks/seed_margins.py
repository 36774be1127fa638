"""The spread of every training outcome the tests assert, over seeds and thread counts (issue 25, part 4).

Each case re-runs one test's training with `seed` in place of the test's own and `torch.set_num_threads(t)`,
and prints the figure the test asserts on, one JSON line a run; the last line a case prints is its minimum.
The thresholds in tests/ sit a clear margin below these minima (docs/experiments.md, "Test margins").

    PYTHONPATH=src python benchmarks/seed_margins.py --seeds 0-9 --threads 1,2 [--case train_f1 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package: its data makers


def train_f1(tmp: Path, seed: int) -> dict[str, float]:
    """tests/test_train.py::test_training_learns_and_writes_its_files and ::test_leave_people_out."""
    from asl_tinyml.train import train, train_folds
    from tests.test_train import make_run, tiny_cfg

    run = make_run(tmp / "run")
    summary = train(tiny_cfg(epochs=6, augment=True, seed=seed, num_threads=0), run, tmp / "t", progress=False)
    folds = train_folds(tiny_cfg(epochs=6, seed=seed, num_threads=0), run, "person", tmp / "lopo", progress=False)
    return {"best_val_macro_f1": summary["best_val_macro_f1"], "lopo_min_accuracy": min(r["accuracy"] for r in folds)}


def landmarks(tmp: Path, seed: int) -> dict[str, float]:
    """tests/test_landmarks.py: separable poses, and train_landmarks/landmark_folds on a synthetic run."""
    from asl_tinyml.hands import LEFT, canonical_points
    from asl_tinyml.landmarks import landmark_folds, train_landmark_model, train_landmarks
    from tests.test_landmarks import _hands, synthetic_landmark_run

    rng = np.random.default_rng(0)
    protos = _hands(4, seed=1)
    labels = np.repeat(np.arange(4), 60)
    points = canonical_points(protos[labels] + 0.01 * rng.standard_normal((len(labels), 21, 3)).astype(np.float32), LEFT)
    idx = rng.permutation(len(labels))
    _, history = train_landmark_model(points, labels, idx[:180], idx[180:], num_classes=4, epochs=25, patience=25,
                                      seed=seed)
    run = synthetic_landmark_run(tmp / "run")
    test = train_landmarks(run, epochs=20, patience=20, seed=seed, progress=False)["test"]
    rows = landmark_folds(run, "person", epochs=10, patience=10, seed=seed, progress=False)
    return {"separable_val_acc": max(h["val_acc"] for h in history), "run_test_accuracy": test["accuracy"],
            "lopo_min_accuracy": min(r["accuracy"] for r in rows)}


def pixel_tiny(tmp: Path, seed: int) -> dict[str, float]:
    """tests/tiny_model.trained_checkpoint, as test_export, test_compress and test_tflite use it: accuracy on the
    tiny run's test split, and the int8 ONNX export's agreement with it."""
    from asl_tinyml.export import export_all
    from asl_tinyml.inference import load_predictor
    from asl_tinyml.preprocess import Cache, load_splits
    from tests.tiny_model import make_run, trained_checkpoint

    ckpt = trained_checkpoint(tmp / "tiny.pt", seed=seed)
    run = make_run(tmp / "run", per_class=24)
    out = export_all(ckpt, tmp / "models", calibration=run, tflite=False)
    cache = Cache.load(run)
    test = load_splits(run, len(cache))["test"]
    p_pt = load_predictor(ckpt, threads=1).predict_proba(cache.images[test])
    p_int8 = load_predictor(out["paths"]["onnx_int8"], threads=1).predict_proba(cache.images[test])
    return {"test_accuracy": float((p_pt.argmax(1) == cache.labels[test]).mean()),
            "int8_test_accuracy": float((p_int8.argmax(1) == cache.labels[test]).mean()),
            "int8_agreement_calibration": out["checks"]["onnx_int8"]["argmax_agreement"]}


FUSION_EPOCHS = (30, 20)  # tests/test_fusion.py: the run fixture's landmark model, then each fold's
FUSION_BATCH = 16  # 48 training rows: 3 steps an epoch (at 128, one)


def fusion(tmp: Path, seed: int) -> dict[str, float]:
    """tests/test_fusion.py: the landmark model rescues a chance-level pixel model, in-split and per fold."""
    from asl_tinyml.evaluate import evaluate
    from asl_tinyml.fusion import fused_folds
    from asl_tinyml.landmarks import landmark_folds, train_landmarks
    from asl_tinyml.train import folds_dir
    from tests.test_fusion import _run, _untrained_pixel_model

    run = _run(tmp / "run")
    train_landmarks(run, epochs=FUSION_EPOCHS[0], patience=FUSION_EPOCHS[0], batch_size=FUSION_BATCH, seed=seed,
                    progress=False)
    pixel = _untrained_pixel_model(tmp / "chance.pt")
    fused = evaluate(pixel, run, tmp / "fused", landmark_model=run / "train" / "landmark_fastkan" / "best.pt")
    rows = landmark_folds(run, "person", epochs=FUSION_EPOCHS[1], patience=FUSION_EPOCHS[1], batch_size=FUSION_BATCH,
                          seed=seed, progress=False)
    for r in rows:
        _untrained_pixel_model(folds_dir(run, "convkan", "person") / r["fold"] / "best.pt")
    folds = fused_folds(run, "person")
    return {"fused_accuracy": fused["accuracy"], "folds_min_accuracy": min(r["accuracy"] for r in folds),
            "folds_min_weight": min(r["weight"] for r in folds)}


def motion(tmp: Path, seed: int) -> dict[str, float]:
    """tests/test_motion.py: j from i by motion over held-out sessions, and the int8 export's agreement."""
    import asl_tinyml.motion as M
    from tests.test_motion import synthetic_set

    data = synthetic_set(tmp / "letters.npz")
    m = M.train_motion(data, tmp / "out", None, epochs=40, batch_size=8, final=False, seed=seed, progress=False)
    shipped = M.train_motion(data, tmp / "run", tmp / "models", holdouts=(), epochs=6, seed=seed, progress=False)
    return {"holdout_mean_accuracy": m["holdout_mean_accuracy"],
            "int8_agreement": shipped["export"]["checks"]["onnx_int8"]["argmax_agreement"]}


def compare(tmp: Path, seed: int) -> dict[str, float]:
    """tests/test_compare.py: the landmark model's row of the comparison table."""
    from asl_tinyml.compare import run_comparison
    from asl_tinyml.config import Config
    from tests.test_fusion import _run
    from tests.tiny_model import SIZE

    cfg = Config().replace(epochs=3, fold_epochs=2, batch_size=16, image_size=SIZE, num_threads=0, augment=False,
                           seed=seed)
    (row,) = run_comparison(cfg, _run(tmp / "run"), ("landmark_fastkan",), progress=False)
    return {"landmark_test_macro_f1": row["test_macro_f1"]}


CASES: dict[str, Callable[[Path, int], dict[str, float]]] = {
    f.__name__: f for f in (train_f1, landmarks, pixel_tiny, fusion, motion, compare)
}


def _ints(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--case", nargs="*", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    for case in args.case:
        lows: dict[str, float] = {}
        for threads in _ints(args.threads):
            torch.set_num_threads(threads)
            for seed in _ints(args.seeds):
                start = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    figures = CASES[case](Path(tmp), seed)
                lows = {k: min(v, lows.get(k, v)) for k, v in figures.items()}
                print(json.dumps({"case": case, "threads": threads, "seed": seed, **figures,
                                  "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        print(json.dumps({"case": case, "min": lows}), flush=True)


if __name__ == "__main__":
    main()
