"""`asl-tinyml <stage>`: a thin command line over the package's stage functions.

Each `_cmd_<stage>` turns flags into a Config and calls one stage function; user errors print one
line (`error: ...`) and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from .config import Config, UserError
from .micro_cli import add_micro


class Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one `error:` line naming the flag (no usage block), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _number(kind: type, low: float, high: float | None = None, *, above: bool = False, below: bool = False
            ) -> Callable[[str], float]:
    """An argparse `type=` for a finite int/float in [low, high] (`above`/`below`: the bound excluded)."""
    what = "a whole number" if kind is int else "a number"
    bounds = [f"{'>' if above else '>='} {low:g}"] + ([f"{'<' if below else '<='} {high:g}"] if high is not None else [])

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and (value > low if above else value >= low)
        if ok and high is not None:
            ok = value < high if below else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {what} {' and '.join(bounds)}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = _number(int, 1)
NONNEGATIVE_INT = _number(int, 0)
PORT = _number(int, 0, 65535)  # 0: any free port
POSITIVE_FLOAT = _number(float, 0, above=True)
NONNEGATIVE_FLOAT = _number(float, 0)
FRACTION = _number(float, 0, 1)
SPARSITY = _number(float, 0, 1, below=True)


def _config(args: argparse.Namespace, **changes: object) -> Config:
    """The config file given by `--config` (or the defaults), with the command's flags applied."""
    cfg = Config.from_yaml(args.config) if getattr(args, "config", None) else Config()
    return cfg.replace(**changes)


# --- merge -------------------------------------------------------------------------------------------
def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge class-folder sources into one lower-case folder with a manifest")
    add_merge_arguments(p)
    p.set_defaults(func=_cmd_merge)


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `merge`, shared with the root `rename_dataset.py`."""
    p.add_argument("sources", nargs="*", type=Path, help="source folders (default: `data N/` here, else ../shared/datasets/*)")
    p.add_argument("--out", type=Path, default=Path("data_merged"), help="output folder (default: data_merged)")
    p.add_argument("--dry-run", action="store_true", help="report what would be merged; write nothing")
    p.add_argument("--include-extra", action="store_true", help="also merge the optional `del` and `nothing` classes")
    p.add_argument("--limit-per-class", type=POSITIVE_INT, default=None, help="at most N files per source and class (a quick slice)")


def _cmd_merge(args: argparse.Namespace) -> int:
    from .merge import default_sources, format_report, merge

    sources = args.sources or default_sources()
    report = merge(
        sources, args.out, include_extra=args.include_extra, dry_run=args.dry_run, limit_per_class=args.limit_per_class
    )
    print(format_report(report, args.out))
    return 0


# --- preprocess --------------------------------------------------------------------------------------
def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="resize merged images into a uint8 cache and grouped 80/10/10 splits")
    p.add_argument("--merged", type=Path, default=Path("data_merged"), help="merged folder (default: data_merged)")
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="run folder for cache.npz and splits.json")
    p.add_argument("--size", type=POSITIVE_INT, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.add_argument("--hand-crop", action=argparse.BooleanOptionalAction, default=None,
                   help="crop each image to its MediaPipe hand (default: on when the landmarks extra is installed)")
    p.add_argument("--hand-cache", type=Path, default=None,
                   help="detections by image hash, reused across runs (default: hands.npz beside the run folder)")
    p.set_defaults(func=_cmd_preprocess)


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from .pipeline import landmarks_available
    from .preprocess import preprocess

    hand_crop = landmarks_available() if args.hand_crop is None else args.hand_crop
    hand_cache = args.hand_cache or Config(run_dir=str(args.out)).hand_cache_path()
    result = preprocess(args.merged, args.out, size=args.size, seed=args.seed, hand_crop=hand_crop,
                        hand_cache=hand_cache, margin=Config.crop_margin)
    crops = f", {result.hands_found} cropped to a detected hand" if result.hands_found is not None else ", centre crops"
    print(f"cached {result.n_images} images at {args.size}x{args.size}{crops} in {result.cache_path}")
    print("splits: " + ", ".join(f"{k} {v}" for k, v in result.split_sizes.items()) + f" -> {result.splits_path}")
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}")
    return 0


# --- eda ---------------------------------------------------------------------------------------------
def _add_eda(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eda", help="exploratory figures (PNG) of the merged and preprocessed data")
    p.add_argument("--merged", type=Path, default=Path("data_merged"), help="merged folder (default: data_merged)")
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder holding cache.npz/splits.json")
    p.add_argument("--out", type=Path, default=None, help="figure folder (default: RUN/eda)")
    p.set_defaults(func=_cmd_eda)


def _cmd_eda(args: argparse.Namespace) -> int:
    from .eda import run_eda

    figures = run_eda(args.merged, args.run, args.out or args.run / "eda")
    for path in figures:
        print(f"wrote {path}")
    return 0


# --- evaluate ----------------------------------------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a .pt or .onnx model: metrics.json, report.md and PNG figures")
    p.add_argument("--model", type=Path, default=None,
                   help="a .pt checkpoint or an .onnx export (default: the shipped predictor in --models-dir)")
    p.add_argument("--data", type=Path, required=True, help="a run folder (cache.npz + splits.json) or a folder of class folders")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test", help="split of a run folder (default: test)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/eval/<model> for a run folder, else ./eval)")
    p.add_argument("--train-dir", type=Path, default=None, help="folder holding history.csv (default: beside a .pt model)")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads for inference (default: every usable core)")
    p.add_argument("--json", action="store_true", help="print only the metrics as JSON on stdout")
    _add_fusion_arguments(p)
    p.set_defaults(func=_cmd_evaluate)


def _add_fusion_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose the predictor: shipped default, or a pixel model with an optional landmark model."""
    p.add_argument("--landmark-model", type=Path, default=None,
                   help="a landmark_fastkan .pt/.onnx: the fused predictor (landmarks where a hand is found; "
                   "default with no --model: models/asl_landmarks_int8.onnx when it exists)")
    p.add_argument("--fusion-weight", type=FRACTION, default=None,
                   help="weight of the landmark model in [0, 1] where a hand is found (default: the one the "
                   "landmark file records, chosen on held-out sources)")
    p.add_argument("--classes", choices=["all", "letters", "digits"], default="all",
                   help="restrict the answers: letters (a-z, space) or digits (0-9) tell ASL twins like o/0 apart")
    p.add_argument("--models-dir", type=Path, default=Path("models"),
                   help="where the shipped models are (default: models)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate, format_summary

    metrics = evaluate(
        args.model, args.data, args.out, split=args.split, train_dir=args.train_dir, threads=args.threads,
        landmark_model=args.landmark_model, fusion_weight=args.fusion_weight, classes=args.classes,
        models_dir=args.models_dir,
    )
    print(json.dumps(metrics, indent=2) if args.json else format_summary(metrics))
    return 0


# --- train -------------------------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a run's cache (early stopping on validation macro-F1)")
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder holding cache.npz/splits.json")
    p.add_argument("--model", default=None, help="registered model name (default: convkan)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help=f"one-cycle schedule length (default: {Config.epochs})")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None, help=f"(default: {Config.batch_size})")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help=f"peak learning rate (default: {Config.lr})")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=None, help=f"weights and augmentation draws (default: {Config.seed})")
    p.add_argument("--config", type=Path, default=None, help="a YAML file of Config fields (e.g. ema_decay: 0 turns the weight average off)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: RUN/train/MODEL, RUN/train/MODEL-lopo, RUN/train/MODEL-loso)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--lopo", action="store_true",
                   help="leave people out instead: every known person held out once, in `person_folds` folds")
    p.add_argument("--loso", action="store_true", help="leave-one-source-out (on the classes the sources share) instead")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model constructor option, e.g. input_size=224 for efficientnet_lite0 (repeatable)")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow (needs `pip install mlflow`; ./mlruns)")
    p.set_defaults(func=_cmd_train)


def _model_options(pairs: list[str]) -> dict[str, object]:
    """`["input_size=224", "hidden=32"]` -> `{"input_size": 224, "hidden": 32}` (values read as YAML)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {pair!r} is not KEY=VALUE; e.g. --option input_size=224")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from .train import train, train_folds

    cfg = _config(args, model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    cfg = cfg.replace(run_dir=str(args.run))
    if args.lopo or args.loso:
        for kind in ["person"] * args.lopo + ["source"] * args.loso:
            out = args.out / kind if args.out and args.lopo and args.loso else args.out
            for r in train_folds(cfg, args.run, kind, out):
                print(f"held-out {kind} {r['fold']}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f} "
                      f"({r['n_images']} images)")
        return 0
    s = train(cfg, args.run, args.out, resume=args.resume, mlflow=args.mlflow, options=_model_options(args.option))
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(
            f"{s['model']}: best val macro-F1 {s['best_val_macro_f1']:.4f} at epoch {s['best_epoch']}/{s['epochs_run']}, "
            f"{s['params']:,} params, {s['train_seconds']:.0f} s -> {s['checkpoint']}"
        )
    return 0


# --- export ------------------------------------------------------------------------------------------
DEFAULT_CHECKPOINT = Path("runs/default/train/convkan/best.pt")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="ONNX float + int8, TFLite int8 and C headers of a checkpoint into models/")
    p.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help=f"checkpoint (default: {DEFAULT_CHECKPOINT})")
    p.add_argument(
        "--run", type=Path, default=None,
        help="run folder whose train split calibrates int8 (default: the checkpoint's run)",
    )
    p.add_argument("--out", type=Path, default=Path("models"), help="output folder (default: models)")
    tfl = p.add_mutually_exclusive_group()
    tfl.add_argument(
        "--tflite", dest="tflite", action="store_true", default=None,
        help="require the TFLite export (needs the tflite extra; default: when installed)",
    )
    tfl.add_argument("--no-tflite", dest="tflite", action="store_false", help="skip the TFLite export")
    p.add_argument(
        "--float-convs", type=NONNEGATIVE_INT, default=Config.int8_float_convs,
        help="leading convolutions the int8 ONNX keeps float, where int8 is slower (default: %(default)s; 0: all int8)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    import json

    from .export import export_all

    result = export_all(args.model, args.out, calibration=args.run, tflite=args.tflite, float_convs=args.float_convs)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key, path in result["paths"].items():
        print(f"wrote {path} ({result['bytes'][key]:,} bytes)")
    for key, check in result["checks"].items():
        if "argmax_agreement" in check:
            print(
                f"{key}: max |p - p_torch| {check['max_abs_diff']:.2e}, "
                f"top-1 agreement {check['argmax_agreement']:.1%} on {check['n_images']} images"
            )
    tfl = result["checks"].get("tflite_model")
    if tfl:
        print(f"tflite ops: {', '.join(tfl['ops'])}; tensor arena >= {tfl['arena_peak_live_bytes'] / 1024:.0f} KiB")
    else:
        print(result["tflite_missing"])
    if result.get("stale"):
        print(f"note: {', '.join(result['stale'])} are from an earlier export and do not match this model")
    return 0


# --- compress ----------------------------------------------------------------------------------------
def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="pruning sweep + int8: size and accuracy table (compress.csv/.md)")
    p.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help=f"checkpoint (default: {DEFAULT_CHECKPOINT})")
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder the checkpoint was trained on")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/compress)")
    p.add_argument(
        "--sparsities", type=SPARSITY, nargs="+", default=None,
        help="pruning levels in [0, 1); 0 is the fine-tune-only control (default: 0 0.3 0.5 0.7 0.9)",
    )
    p.add_argument("--epochs", type=POSITIVE_INT, default=3, help="fine-tune epochs after pruning (default: 3)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-4, help="fine-tune learning rate (default: 3e-4)")
    p.add_argument("--split", choices=["val", "test"], default="test", help="split every row is scored on")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="CPU threads (default: 1)")
    p.add_argument(
        "--no-qat", dest="qat", action="store_false",
        help="no quantization-aware fine-tune even if int8 post-training quantization loses accuracy",
    )
    p.add_argument(
        "--float-convs", type=NONNEGATIVE_INT, default=Config.int8_float_convs,
        help="leading convolutions the int8 ONNX keeps float (default: %(default)s; 0: all int8)",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_cmd_compress)


def _cmd_compress(args: argparse.Namespace) -> int:
    import json

    from .compress import SPARSITIES, compress

    rows = compress(
        args.model, args.run, args.out, sparsities=args.sparsities or SPARSITIES, finetune_epochs=args.epochs,
        lr=args.lr, split=args.split, threads=args.threads, qat=args.qat, float_convs=args.float_convs,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(
            f"{r['name']:>14}: {r['bytes']:>10,} B ({r['gzip_bytes']:,} gzip), accuracy {r['accuracy']:.4f}, "
            f"macro-F1 {r['macro_f1']:.4f} ({r['delta_macro_f1']:+.4f})"
        )
    print(f"table: {Path(args.out or args.run / 'compress') / 'compress.md'}")
    return 0


# --- predict -----------------------------------------------------------------------------------------


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files or folders (top-k labels); exit 1 if none was read")
    p.add_argument("paths", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    p.add_argument("--model", type=Path, default=None,
                   help="a .pt or .onnx pixel model (default: the shipped predictor in --models-dir)")
    p.add_argument("--topk", type=POSITIVE_INT, default=3, help="labels per image (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads (default: every usable core)")
    _add_fusion_arguments(p)
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import format_row, predict_paths

    ok = failed = 0
    rows = predict_paths(args.paths, args.model, args.topk, args.threads, args.landmark_model, args.fusion_weight,
                         args.classes, args.models_dir)
    for row in rows:
        print(format_row(row, args.json), flush=True)
        ok, failed = ok + ("error" not in row), failed + ("error" in row)
    if not args.json:
        print(f"{ok} classified, {failed} failed", file=sys.stderr)
    return 0 if ok else 1


# --- bench -------------------------------------------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency, throughput, memory and size: PyTorch, ONNX float, ONNX int8")
    p.add_argument(
        "--model", type=Path, action="append", default=None,
        help="a model file (repeatable); a lone .pt also gets its ONNX float/int8 exports "
        "(default: models/asl_fastkan.pt, .onnx, _int8.onnx)",
    )
    p.add_argument("--baseline", type=Path, default=None, help="a float `fastkan` checkpoint to compare against")
    p.add_argument("--run", type=Path, default=None, help="run folder whose test images are used (default: random)")
    p.add_argument("--out", type=Path, default=None, help="folder for bench.csv/.md (default: RUN/bench or ./bench)")
    p.add_argument("--runs", type=POSITIVE_INT, default=300, help="single-image calls timed per model (default: 300)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="batch for the throughput test (default: 64)")
    p.add_argument("--seconds", type=POSITIVE_FLOAT, default=3.0, help="seconds of batched inference per model (default: 3)")
    p.add_argument("--rounds", type=POSITIVE_INT, default=Config.bench_rounds, help="round-robin repeats, figures are medians (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from .bench import bench, bench_images
    from .inference import load_predictor

    names = ("asl_fastkan.pt", "asl_fastkan.onnx", "asl_fastkan_int8.onnx")
    models = args.model or [p for p in (Path("models") / n for n in names) if p.exists()]
    if not models:
        raise UserError("no model to benchmark in models/; pass --model PATH or run `asl-tinyml export` first")
    size = load_predictor(models[0]).image_size
    out = args.out or (args.run / "bench" if args.run else Path("bench"))
    rows = bench(
        models, bench_images(args.run, size), baseline=args.baseline, out_dir=out, runs=args.runs,
        batch_size=args.batch_size, seconds=args.seconds, rounds=args.rounds,
    )
    print(json.dumps(rows, indent=2) if args.json else (out / "bench.md").read_text())
    return 0


# --- landmarks -------------------------------------------------------------------------------------
def _add_landmarks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("landmarks", help="MediaPipe hand landmarks of every cached image (+ the landmark_fastkan model)")
    p.add_argument("--merged", type=Path, default=Path("data_merged"), help="merged folder the run was built from")
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder holding cache.npz/splits.json")
    p.add_argument("--pad", type=NONNEGATIVE_FLOAT, default=0.5, help="border added around each image, x its longer side (default: 0.5)")
    p.add_argument("--no-retry", action="store_true", help="one attempt per image (no lighter model, no unpadded retry)")
    p.add_argument("--reuse", action="store_true", help="keep an existing RUN/landmarks.npz instead of re-detecting")
    p.add_argument("--hand-cache", type=Path, default=None,
                   help="detections by image hash, reused across runs (default: hands.npz beside the run folder)")
    p.add_argument("--train", action="store_true", help="then train landmark_fastkan and score the test split")
    p.add_argument("--lopo", action="store_true", help="then leave people out with landmark_fastkan")
    p.add_argument("--loso", action="store_true", help="then leave one source out with landmark_fastkan")
    p.add_argument("--sequences", type=Path, default=None,
                   help="a letters.npz whose static letters also train the model (default: the shared sequences)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="then write asl_landmarks.onnx and asl_landmarks_int8.onnx of the trained model into DIR")
    p.add_argument("--fusion-weight", type=FRACTION, default=None,
                   help="landmark weight the exported files record for the fused predictor (default: the one "
                   "`compare` chose on held-out sources, else 0.7)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=Config.landmark_epochs)
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.set_defaults(func=_cmd_landmarks)


def _cmd_landmarks(args: argparse.Namespace) -> int:
    import json

    from .fusion import held_out_weight
    from .landmarks import (
        LANDMARKS_NAME,
        build_landmark_cache,
        export_landmark_model,
        format_detection_report,
        landmark_folds,
        train_landmarks,
    )

    if not (args.reuse and (args.run / LANDMARKS_NAME).exists()):
        hand_cache = args.hand_cache or Config(run_dir=str(args.run)).hand_cache_path()
        path = build_landmark_cache(args.merged, args.run, hand_cache=hand_cache, pad_fraction=args.pad,
                                    retry=not args.no_retry)
        print(f"wrote {path}")
    print(format_detection_report(args.run))
    sequences = args.sequences or Config().landmark_sequences_path()
    if args.train:
        metrics = train_landmarks(args.run, sequences=sequences, epochs=args.epochs, seed=args.seed)
        print(json.dumps({k: metrics[k] for k in ("params", "test", "test_by_source", "held_out_sessions")}, indent=1))
    for kind in ["person"] * args.lopo + ["source"] * args.loso:
        for row in landmark_folds(args.run, kind, sequences=sequences, epochs=args.epochs, seed=args.seed):
            print(f"held-out {kind} {row['fold']}: accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  "
                  f"detection {row['detection_rate']:.3f}  end-to-end {row['end_to_end_accuracy']:.3f}")
    if args.export:
        weight = args.fusion_weight if args.fusion_weight is not None else held_out_weight(args.run)
        for name, path in export_landmark_model(args.run, args.export, fusion_weight=weight).items():
            print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return 0


# --- motion ------------------------------------------------------------------------------------------
def _add_motion(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("motion", help="signs that move (j, z, words) from landmark sequences: train|evaluate|export|predict")
    actions = p.add_subparsers(dest="action", required=True, metavar="<action>")
    t = actions.add_parser("train", help="held-out-session folds, then the shipped model on every session (+ int8 ONNX)")
    t.add_argument("--data", type=Path, action="append", default=None,
                   help="a sequence .npz (repeatable; default: letters.npz and words.npz of the sequences folder)")
    t.add_argument("--out", type=Path, default=Path("runs/motion"), help="folder for metrics and figures (default: runs/motion)")
    t.add_argument("--models-dir", type=Path, default=Path("models"), help="where the shipped files go (default: models)")
    t.add_argument("--epochs", type=int, default=None, help=f"epochs per model (default: {Config.motion_epochs})")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--holdout", nargs="*", default=None, metavar="SESSION",
                   help="sessions held out in turn (default: danial cam; none: skip the folds)")
    t.add_argument("--no-final", action="store_true", help="only the held-out folds: no shipped model")
    t.add_argument("--limit", type=int, default=None, help="at most N windows per class and session (a quick slice)")
    t.add_argument("--json", action="store_true", help="print the metrics as JSON")
    t.set_defaults(func=_cmd_motion_train)
    e = actions.add_parser("evaluate", help="score a motion model on an .npz of windows (any number of frames)")
    e.add_argument("--data", type=Path, required=True, help="an .npz in the shared layout (x, label[, session])")
    e.add_argument("--model", type=Path, default=None,
                   help="a motion .onnx/.pt (default: models/asl_motion_letters_int8.onnx or _words_, by the landmark width)")
    e.add_argument("--models-dir", type=Path, default=Path("models"), help="where the shipped models are (default: models)")
    e.add_argument("--out", type=Path, default=None, help="folder for metrics.json and the confusion matrix (default: eval/motion_KIND)")
    e.add_argument("--aspect", type=float, default=None, help="frame height / width of the recordings (default: 0.75)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=_cmd_motion_evaluate)
    x = actions.add_parser("export", help="float + int8 ONNX of a motion checkpoint, checked against PyTorch")
    x.add_argument("--model", type=Path, required=True, help="a motion checkpoint (.pt)")
    x.add_argument("--data", type=Path, default=None, help="calibration and check windows (default: the sequences folder's file)")
    x.add_argument("--out", type=Path, default=Path("models"), help="output folder (default: models)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=_cmd_motion_export)
    q = actions.add_parser("predict", help="top-k classes of every window of an .npz")
    q.add_argument("--data", type=Path, required=True, help="an .npz in the shared layout")
    q.add_argument("--model", type=Path, default=None, help="a motion .onnx/.pt (default: the shipped one, by width)")
    q.add_argument("--models-dir", type=Path, default=Path("models"))
    q.add_argument("--topk", type=int, default=3)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=_cmd_motion_predict)


def _sequence_files(data: list[Path] | None) -> list[Path]:
    from .config import default_sequences_dir

    if data:
        return data
    folder = default_sequences_dir()
    if folder is None:
        raise UserError("no sequences folder found: pass --data FILE.npz or set $ASL_TINYML_SEQUENCES")
    return [folder / "letters.npz", folder / "words.npz"]


def _cmd_motion_train(args: argparse.Namespace) -> int:
    import json

    from .motion import HOLDOUT_SESSIONS, train_motion

    epochs = args.epochs or Config.motion_epochs
    holdouts = tuple(HOLDOUT_SESSIONS if args.holdout is None else args.holdout)
    for path in _sequence_files(args.data):
        m = train_motion(path, args.out, None if args.no_final else args.models_dir, holdouts=holdouts, epochs=epochs,
                         seed=args.seed, limit=args.limit, final=not args.no_final)
        if args.json:
            print(json.dumps(m, indent=2, default=str))
            continue
        for f in m["folds"]:
            print(f"{m['kind']}: held-out {f['held_out']}: accuracy {f['trained_classes']['accuracy']:.4f}, "
                  f"macro-F1 {f['trained_classes']['macro_f1']:.4f} ({f['trained_classes']['n']} windows; "
                  f"untrained classes {f['untrained_classes'] or 'none'})")
        for key, path_ in m.get("export", {}).get("paths", {}).items():
            print(f"wrote {path_}" + (f" ({m['export']['bytes'][key]:,} bytes)" if key in m["export"]["bytes"] else ""))
    return 0


def _cmd_motion_evaluate(args: argparse.Namespace) -> int:
    import json

    from .motion import DEFAULT_ASPECT, evaluate_motion

    m = evaluate_motion(args.data, args.model, args.out, args.models_dir, args.aspect or DEFAULT_ASPECT)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"{m['model']} on {m['data']}: {m['n']} windows of {m['frames']} frames, accuracy {m['accuracy']:.4f}, "
          f"macro-F1 {m['macro_f1']:.4f}; {m['ms_per_window']} ms a window")
    if m["skipped"]:
        print(f"skipped (not the model's classes): {m['skipped']}")
    for name, row in m["per_class"].items():
        print(f"  {name:>10}: precision {row['precision']:.3f} recall {row['recall']:.3f} f1 {row['f1']:.3f} ({row['support']})")
    return 0


def _cmd_motion_export(args: argparse.Namespace) -> int:
    import json

    from .models import load_checkpoint
    from .motion import STEMS, export_motion, load_sequences

    _, meta = load_checkpoint(args.model)
    kind = (meta.get("features") or {}).get("kind")
    if kind not in STEMS:
        raise UserError(f"{args.model} is not a motion model")
    data = args.data or next(p for p in _sequence_files(None) if p.stem == kind)
    result = export_motion(args.model, args.out, load_sequences(data))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key, path in result["paths"].items():
        print(f"wrote {path}" + (f" ({result['bytes'][key]:,} bytes)" if key in result["bytes"] else ""))
    for key, check in result["checks"].items():
        print(f"{key}: top-1 agreement with PyTorch {check['argmax_agreement']:.1%}, max |p - p_torch| {check['max_abs_diff']:.2e}")
    return 0


def _cmd_motion_predict(args: argparse.Namespace) -> int:
    import json

    from .motion import predict_motion

    for row in predict_motion(args.data, args.model, args.models_dir, args.topk):
        if args.json:
            print(json.dumps(row))
        else:
            top = ", ".join(f"{t['label']} ({t['prob']:.2f})" for t in row["top"])
            print(f"{row['index']:>5} [{row['label']}] -> {row['prediction']}: {top}")
    return 0


# --- serve -------------------------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web app: live webcam fingerspelling page, POST /predict and WS /ws (FastAPI)")
    p.add_argument("--model", type=Path, default=None,
                   help="an .onnx export or .pt checkpoint (default: the shipped predictor in --models-dir)")
    _add_fusion_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=PORT, default=8000, help="port (default: 8000)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="inference threads per request (default: 1)")
    p.add_argument("--max-fps", type=POSITIVE_FLOAT, default=20.0, help="frames per second accepted per WebSocket client (default: 20)")
    p.add_argument("--threshold", type=FRACTION, default=None, help="smoothed confidence needed to type a sign (default: 0.6)")
    p.add_argument("--stable-frames", type=POSITIVE_INT, default=None, help="steady frames before a sign is typed (default: 8)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--motion-dir", type=Path, default=Path("models"),
                   help="folder of asl_motion_{letters,words}_int8.onnx: j, z and words through MediaPipe (default: models)")
    p.add_argument("--no-motion", action="store_true", help="no landmark path: the static pixel model only")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from .serve import ServeSettings, run_server
    from .spelling import SpellingConfig

    changes = {k: v for k, v in (("threshold", args.threshold), ("stable_frames", args.stable_frames)) if v is not None}
    try:
        spelling = dataclasses.replace(SpellingConfig(), **changes)
    except ValueError as exc:
        raise UserError(f"{exc}; pick another --threshold/--stable-frames") from exc
    from .fusion import load_sign_predictor

    settings = ServeSettings(threads=args.threads, max_fps=args.max_fps, spelling=spelling, classes=args.classes)
    predictor = load_sign_predictor(args.model, args.landmark_model, models_dir=args.models_dir,
                                    weight=args.fusion_weight, threads=args.threads)
    run_server(predictor, host=args.host, port=args.port, settings=settings, log_level=args.log_level,
               motion_dir=None if args.no_motion else args.motion_dir)
    return 0


# --- compare -----------------------------------------------------------------------------------------
def _add_compare(sub: argparse._SubParsersAction) -> None:
    from .compare import ALL_MODELS

    p = sub.add_parser("compare", help="every model side by side: test, unseen signers, unseen sources, size, latency")
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder (after `pipeline` or `preprocess`)")
    p.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS, metavar="MODEL",
                   help=f"rows of the table (default: all of {', '.join(ALL_MODELS)})")
    p.add_argument("--no-train", action="store_true", help="only collect what the run folder already holds")
    p.add_argument("--config", type=Path, default=None, help="a YAML file of Config fields (epochs per fold etc.)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import COMPARE_DIR, run_comparison

    cfg = _config(args).replace(run_dir=str(args.run))
    run_comparison(cfg, args.run, tuple(args.models), train_missing=not args.no_train)
    print((args.run / COMPARE_DIR / "compare.md").read_text(), end="")
    return 0


# --- pipeline ----------------------------------------------------------------------------------------
def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run every stage in order on the default (or given) data")
    p.add_argument("--data", type=Path, action="append", default=None, help="a source folder (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/default, runs/quick with --quick)")
    p.add_argument("--merged", type=Path, default=None, help="merged folder (default: data_merged, RUN/data_merged with --quick)")
    p.add_argument("--quick", action="store_true", help="a small, fast slice for smoke tests")
    p.add_argument("--study", action="store_true", default=None,
                   help="the full study: also train the baseline, sweep pruning levels, bench every format, five rounds")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--config", type=Path, default=None, help="a YAML file of Config fields")
    p.set_defaults(func=_cmd_pipeline)


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    cfg = _config(args, epochs=args.epochs, model=args.model, study=args.study)
    if args.quick:  # a self-contained slice: merged data and artifacts stay inside the run folder
        cfg = cfg.quick_mode()
    run = args.out or (Path("runs/quick") if args.quick else Path(cfg.run_dir))
    merged = args.merged or (run / "data_merged" if args.quick else Path(cfg.merged_dir))
    models = run / "models" if args.quick else Path(cfg.models_dir)
    hand_cache = run / "hands.npz" if args.quick and cfg.hand_cache is None else cfg.hand_cache
    cfg = cfg.replace(
        run_dir=str(run), merged_dir=str(merged), models_dir=str(models), hand_cache=hand_cache and str(hand_cache),
        sources=[str(d) for d in args.data] if args.data else None,
    )
    print(run_pipeline(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="asl-tinyml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    stages = (_add_merge, _add_preprocess, _add_eda, _add_train, _add_evaluate, _add_compress, _add_export,
              _add_predict, _add_bench, add_micro, _add_landmarks, _add_motion, _add_compare, _add_serve,
              _add_pipeline)  # pipeline order
    for add in stages:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, one line printed by Parser.error)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return args.func(args)
    except UserError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except OSError as exc:  # a file the stages could not read or write (disk full, permissions, ...)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}; check the path, its permissions and the free disk",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
