"""The pixel-model stages of the command line: merge, preprocess, eda, train, evaluate, compress, export,
predict, bench, compare and pipeline (one `add_<stage>` / `_cmd_<stage>` pair each)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Config, UserError
from .args import NONNEGATIVE_INT, PATH, POSITIVE_FLOAT, POSITIVE_INT, SPARSITY, add_fusion_arguments


def _config(args: argparse.Namespace, **changes: object) -> Config:
    """The config file given by `--config` (or the defaults), with the command's flags applied."""
    cfg = Config.from_yaml(args.config) if getattr(args, "config", None) else Config()
    return cfg.replace(**changes)


# --- merge -------------------------------------------------------------------------------------------
def add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge class-folder sources into one lower-case folder with a manifest")
    add_merge_arguments(p)
    p.set_defaults(func=_cmd_merge)


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `merge`, shared with the root `rename_dataset.py`."""
    p.add_argument("sources", nargs="*", type=PATH, help="source folders (default: `data N/` here, else ../shared/datasets/*)")
    p.add_argument("--out", type=PATH, default=Path("data_merged"), help="output folder (default: data_merged)")
    p.add_argument("--dry-run", action="store_true", help="report what would be merged; write nothing")
    p.add_argument("--include-extra", action="store_true", help="also merge the optional `del` and `nothing` classes")
    p.add_argument("--limit-per-class", type=POSITIVE_INT, default=None, help="at most N files per source and class (a quick slice)")


def _cmd_merge(args: argparse.Namespace) -> int:
    from ..merge import default_sources, format_report, merge

    sources = args.sources or default_sources()
    report = merge(
        sources, args.out, include_extra=args.include_extra, dry_run=args.dry_run, limit_per_class=args.limit_per_class
    )
    print(format_report(report, args.out))
    return 0


# --- preprocess --------------------------------------------------------------------------------------
def add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="resize merged images into a uint8 cache and grouped 80/10/10 splits")
    p.add_argument("--merged", type=PATH, default=Path("data_merged"), help="merged folder (default: data_merged)")
    p.add_argument("--out", type=PATH, default=Path("runs/default"), help="run folder for cache.npz and splits.json")
    p.add_argument("--size", type=POSITIVE_INT, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.add_argument("--hand-crop", action=argparse.BooleanOptionalAction, default=None,
                   help="crop each image to its MediaPipe hand (default: on when the landmarks extra is installed)")
    p.add_argument("--hand-cache", type=PATH, default=None,
                   help="detections by image hash, reused across runs (default: hands.npz beside the run folder)")
    p.set_defaults(func=_cmd_preprocess)


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from ..pipeline import landmarks_available
    from ..preprocess import preprocess

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
def add_eda(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eda", help="exploratory figures (PNG) of the merged and preprocessed data")
    p.add_argument("--merged", type=PATH, default=Path("data_merged"), help="merged folder (default: data_merged)")
    p.add_argument("--run", type=PATH, default=Path("runs/default"), help="run folder holding cache.npz/splits.json")
    p.add_argument("--out", type=PATH, default=None, help="figure folder (default: RUN/eda)")
    p.set_defaults(func=_cmd_eda)


def _cmd_eda(args: argparse.Namespace) -> int:
    from ..eda import run_eda

    figures = run_eda(args.merged, args.run, args.out or args.run / "eda")
    for path in figures:
        print(f"wrote {path}")
    return 0


# --- train -------------------------------------------------------------------------------------------
def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a run's cache (early stopping on validation macro-F1)")
    p.add_argument("--run", type=PATH, default=Path("runs/default"), help="run folder holding cache.npz/splits.json")
    p.add_argument("--model", default=None, help="registered model name (default: convkan)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help=f"one-cycle schedule length (default: {Config.epochs})")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None, help=f"(default: {Config.batch_size})")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help=f"peak learning rate (default: {Config.lr})")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=None, help=f"weights and augmentation draws (default: {Config.seed})")
    p.add_argument("--config", type=PATH, default=None, help="a YAML file of Config fields (e.g. ema_decay: 0 turns the weight average off)")
    p.add_argument("--out", type=PATH, default=None,
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

    from ..train import train, train_folds

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


# --- evaluate ----------------------------------------------------------------------------------------
def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a .pt or .onnx model: metrics.json, report.md and PNG figures")
    p.add_argument("--model", type=PATH, default=None,
                   help="a .pt checkpoint or an .onnx export (default: the shipped predictor in --models-dir)")
    p.add_argument("--data", type=PATH, required=True, help="a run folder (cache.npz + splits.json) or a folder of class folders")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test", help="split of a run folder (default: test)")
    p.add_argument("--out", type=PATH, default=None,
                   help="folder for metrics.json, report.md and figures (default: RUN/eval/<model> for a run folder "
                   "without --json; else none, nothing is written)")
    p.add_argument("--train-dir", type=PATH, default=None, help="folder holding history.csv (default: beside a .pt model)")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads for inference (default: every usable core)")
    p.add_argument("--json", action="store_true", help="print only the metrics as JSON on stdout")
    add_fusion_arguments(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..evaluate import evaluate, format_summary

    metrics = evaluate(
        args.model, args.data, args.out, split=args.split, train_dir=args.train_dir, threads=args.threads,
        landmark_model=args.landmark_model, fusion_weight=args.fusion_weight, classes=args.classes,
        models_dir=args.models_dir, into_run=not args.json,
    )
    print(json.dumps(metrics, indent=2) if args.json else format_summary(metrics))
    return 0


# --- export ------------------------------------------------------------------------------------------
DEFAULT_CHECKPOINT = Path("runs/default/train/convkan/best.pt")


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="ONNX float + int8, TFLite int8 and C headers of a checkpoint into models/")
    p.add_argument("--model", type=PATH, default=DEFAULT_CHECKPOINT, help=f"checkpoint (default: {DEFAULT_CHECKPOINT})")
    p.add_argument(
        "--run", type=PATH, default=None,
        help="run folder whose train split calibrates int8 (default: the checkpoint's run)",
    )
    p.add_argument("--out", type=PATH, default=Path("models"), help="output folder (default: models)")
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

    from ..export import export_all

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
def add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="pruning sweep + int8: size and accuracy table (compress.csv/.md)")
    p.add_argument("--model", type=PATH, default=DEFAULT_CHECKPOINT, help=f"checkpoint (default: {DEFAULT_CHECKPOINT})")
    p.add_argument("--run", type=PATH, default=Path("runs/default"), help="run folder the checkpoint was trained on")
    p.add_argument("--out", type=PATH, default=None, help="output folder (default: RUN/compress)")
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

    from ..compress import SPARSITIES, compress

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


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files or folders (top-k labels); exit 1 if none was read")
    p.add_argument("paths", nargs="+", type=PATH, metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    p.add_argument("--model", type=PATH, default=None,
                   help="a .pt or .onnx pixel model (default: the shipped predictor in --models-dir)")
    p.add_argument("--topk", type=POSITIVE_INT, default=3, help="labels per image (default: 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads (default: every usable core)")
    add_fusion_arguments(p)
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..predict import format_row, predict_paths

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
def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency, throughput, memory and size: PyTorch, ONNX float, ONNX int8")
    p.add_argument(
        "--model", type=PATH, action="append", default=None,
        help="a model file (repeatable); a lone .pt also gets its ONNX float/int8 exports "
        "(default: models/asl_fastkan.pt, .onnx, _int8.onnx)",
    )
    p.add_argument("--baseline", type=PATH, default=None, help="a float `fastkan` checkpoint to compare against")
    p.add_argument("--run", type=PATH, default=None, help="run folder whose test images are used (default: random)")
    p.add_argument("--out", type=PATH, default=None, help="folder for bench.csv/.md/.json (default: RUN/bench with --run and no --json; else none)")
    p.add_argument("--runs", type=POSITIVE_INT, default=300, help="single-image calls timed per model (default: 300)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="batch for the throughput test (default: 64)")
    p.add_argument("--seconds", type=POSITIVE_FLOAT, default=3.0, help="seconds of batched inference per model (default: 3)")
    p.add_argument("--rounds", type=POSITIVE_INT, default=Config.bench_rounds, help="round-robin repeats, figures are medians (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from ..bench import bench, bench_images, bench_markdown, machine_info
    from ..inference import load_predictor

    names = ("asl_fastkan.pt", "asl_fastkan.onnx", "asl_fastkan_int8.onnx")
    models = args.model or [p for p in (Path("models") / n for n in names) if p.exists()]
    if not models:
        raise UserError("no model to benchmark in models/; pass --model PATH or run `asl-tinyml export` first")
    size = load_predictor(models[0]).image_size
    out = args.out or (args.run / "bench" if args.run and not args.json else None)  # --json alone writes nothing
    rows = bench(
        models, bench_images(args.run, size), baseline=args.baseline, out_dir=out, runs=args.runs,
        batch_size=args.batch_size, seconds=args.seconds, rounds=args.rounds,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        text = (out / "bench.md").read_text() if out else bench_markdown(rows, machine_info())
        print(text + (f"wrote {out}/bench.md, bench.csv and bench.json" if out
                      else "nothing written: --out DIR keeps bench.md, bench.csv and bench.json"))
    return 0


# --- compare -----------------------------------------------------------------------------------------
def add_compare(sub: argparse._SubParsersAction) -> None:
    from ..compare import ALL_MODELS

    p = sub.add_parser("compare", help="every model side by side: test, unseen signers, unseen sources, size, latency")
    p.add_argument("--run", type=PATH, default=Path("runs/default"), help="run folder (after `pipeline` or `preprocess`)")
    p.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS, metavar="MODEL",
                   help=f"rows of the table (default: all of {', '.join(ALL_MODELS)})")
    p.add_argument("--no-train", action="store_true", help="only collect what the run folder already holds")
    p.add_argument("--config", type=PATH, default=None, help="a YAML file of Config fields (epochs per fold etc.)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import COMPARE_DIR, run_comparison

    cfg = _config(args).replace(run_dir=str(args.run))
    run_comparison(cfg, args.run, tuple(args.models), train_missing=not args.no_train)
    print((args.run / COMPARE_DIR / "compare.md").read_text(), end="")
    return 0


# --- pipeline ----------------------------------------------------------------------------------------
def add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run every stage in order on the default (or given) data")
    p.add_argument("--data", type=PATH, action="append", default=None, help="a source folder (repeatable)")
    p.add_argument("--out", type=PATH, default=None, help="run folder (default: runs/default, runs/quick with --quick)")
    p.add_argument("--merged", type=PATH, default=None, help="merged folder (default: data_merged, RUN/data_merged with --quick)")
    p.add_argument("--quick", action="store_true", help="a small, fast slice for smoke tests")
    p.add_argument("--study", action="store_true", default=None,
                   help="the full study: also train the baseline, sweep pruning levels, bench every format, five rounds")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--config", type=PATH, default=None, help="a YAML file of Config fields")
    p.set_defaults(func=_cmd_pipeline)


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from ..pipeline import run_pipeline

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
