"""The landmark stages of the command line: hand landmarks (and the landmark model), the motion models
(train, evaluate, export, predict) and the web app that runs both live."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Config, UserError
from .args import (
    FRACTION,
    NONNEGATIVE_FLOAT,
    NONNEGATIVE_INT,
    PATH,
    PORT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_fusion_arguments,
)


# --- landmarks -------------------------------------------------------------------------------------
def add_landmarks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("landmarks", help="MediaPipe hand landmarks of every cached image (+ the landmark_fastkan model)")
    p.add_argument("--merged", type=PATH, default=Path("data_merged"), help="merged folder the run was built from")
    p.add_argument("--run", type=PATH, default=Path("runs/default"), help="run folder holding cache.npz/splits.json")
    p.add_argument("--pad", type=NONNEGATIVE_FLOAT, default=0.5, help="border added around each image, x its longer side (default: 0.5)")
    p.add_argument("--no-retry", action="store_true", help="one attempt per image (no lighter model, no unpadded retry)")
    p.add_argument("--reuse", action="store_true", help="keep an existing RUN/landmarks.npz instead of re-detecting")
    p.add_argument("--hand-cache", type=PATH, default=None,
                   help="detections by image hash, reused across runs (default: hands.npz beside the run folder)")
    p.add_argument("--train", action="store_true", help="then train landmark_fastkan and score the test split")
    p.add_argument("--lopo", action="store_true", help="then leave people out with landmark_fastkan")
    p.add_argument("--loso", action="store_true", help="then leave one source out with landmark_fastkan")
    p.add_argument("--sequences", default=None,
                   help="a letters.npz whose static letters also train the model (default: the shared sequences; "
                   "\"\": none)")
    p.add_argument("--keypoints", default=None,
                   help="the keypoint collection's letters.npz, also trained on (default: the shared asl_keypoints; "
                   "\"\": none)")
    p.add_argument("--export", type=PATH, default=None, metavar="DIR",
                   help="then write asl_landmarks.onnx and asl_landmarks_int8.onnx of the trained model into DIR")
    p.add_argument("--fusion-weight", type=FRACTION, default=None,
                   help="landmark weight the exported files record for the fused predictor (default: the one "
                   "`compare` chose on held-out sources, else 0.7)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=Config.landmark_epochs)
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.set_defaults(func=_cmd_landmarks)


def _cmd_landmarks(args: argparse.Namespace) -> int:
    import json

    from ..fusion import held_out_weight
    from ..landmarks import (
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
    options = {**Config().landmark_options(), "epochs": args.epochs, "seed": args.seed}
    options.update({k: Path(v) if v else None for k, v in (("sequences", args.sequences), ("keypoints", args.keypoints))
                    if v is not None})  # "" turns a source off, as in the config
    if args.train:
        metrics = train_landmarks(args.run, **options)
        print(json.dumps({k: metrics[k] for k in ("params", "test", "test_by_source", "held_out_groups")}, indent=1))
    for kind in ["person"] * args.lopo + ["source"] * args.loso:
        for row in landmark_folds(args.run, kind, **options):
            print(f"held-out {kind} {row['fold']}: accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  "
                  f"detection {row['detection_rate']:.3f}  end-to-end {row['end_to_end_accuracy']:.3f}")
    if args.export:
        weight = args.fusion_weight if args.fusion_weight is not None else held_out_weight(args.run)
        for name, path in export_landmark_model(args.run, args.export, fusion_weight=weight).items():
            print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return 0


# --- motion ------------------------------------------------------------------------------------------
def add_motion(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("motion", help="signs that move (j, z, words) from landmark sequences: train|evaluate|export|predict")
    actions = p.add_subparsers(dest="action", required=True, metavar="<action>")
    t = actions.add_parser("train", help="held-out-session folds, then the shipped model on every session (+ int8 ONNX)")
    t.add_argument("--data", type=PATH, action="append", default=None,
                   help="a sequence .npz (repeatable; default: letters.npz and words.npz of the sequences folder)")
    t.add_argument("--out", type=PATH, default=Path("runs/motion"), help="folder for metrics and figures (default: runs/motion)")
    t.add_argument("--models-dir", type=PATH, default=Path("models"), help="where the shipped files go (default: models)")
    t.add_argument("--epochs", type=POSITIVE_INT, default=None, help=f"epochs per model (default: {Config.motion_epochs})")
    t.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    t.add_argument("--holdout", nargs="*", default=None, metavar="SESSION",
                   help="sessions held out in turn (default: danial cam; none: skip the folds)")
    t.add_argument("--people", type=PATH, default=None,
                   help="the word collection the words model also trains on (default: $ASL_TINYML_WORDS_PEOPLE or "
                        "../shared/sequences/sign_words_people/words_people.npz when present)")
    t.add_argument("--no-people", action="store_true", help="train the words model on the traduttore sessions alone")
    t.add_argument("--folds", type=NONNEGATIVE_INT, default=0, metavar="K",
                   help="words: also a grouped K-fold over the collection's repositories, every word's held-out recall "
                        "in OUT/words/folds.json and per_word_recall.csv (5: about 5 trainings)")
    t.add_argument("--no-final", action="store_true", help="only the held-out folds: no shipped model")
    t.add_argument("--limit", type=POSITIVE_INT, default=None, help="at most N windows per class and group (a quick slice)")
    t.add_argument("--json", action="store_true", help="print the metrics as JSON")
    t.set_defaults(func=_cmd_motion_train)
    e = actions.add_parser("evaluate", help="score a motion model on an .npz of windows (any number of frames)")
    e.add_argument("--data", type=PATH, required=True, help="an .npz in the shared layout (x, label[, session])")
    e.add_argument("--model", type=PATH, default=None,
                   help="a motion .onnx/.pt (default: the model set's asl_motion_letters_int8.onnx or _words_, by width)")
    e.add_argument("--models-dir", type=PATH, default=None, help="a model set (default: as `predict`)")
    e.add_argument("--out", type=PATH, default=None,
                   help="folder for metrics.json and the confusion matrix (default: none, nothing is written)")
    e.add_argument("--aspect", type=POSITIVE_FLOAT, default=None, help="frame height / width of the recordings (default: 0.75)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=_cmd_motion_evaluate)
    x = actions.add_parser("export", help="float + int8 ONNX of a motion checkpoint, checked against PyTorch")
    x.add_argument("--model", type=PATH, required=True, help="a motion checkpoint (.pt)")
    x.add_argument("--data", type=PATH, default=None, help="calibration and check windows (default: the sequences folder's file)")
    x.add_argument("--out", type=PATH, default=Path("models"), help="output folder (default: models)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=_cmd_motion_export)
    q = actions.add_parser("predict", help="top-k classes of every window of an .npz")
    q.add_argument("--data", type=PATH, required=True, help="an .npz in the shared layout")
    q.add_argument("--model", type=PATH, default=None, help="a motion .onnx/.pt (default: the shipped one, by width)")
    q.add_argument("--models-dir", type=PATH, default=None, help="a model set (default: as `predict`)")
    q.add_argument("--topk", type=POSITIVE_INT, default=3, help="classes per window (default: 3)")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=_cmd_motion_predict)


def _sequence_files(data: list[Path] | None) -> list[Path]:
    from ..config import default_sequences_dir

    if data:
        return data
    folder = default_sequences_dir()
    if folder is None:
        raise UserError("no sequences folder found: pass --data FILE.npz or set $ASL_TINYML_SEQUENCES")
    return [folder / "letters.npz", folder / "words.npz"]


def _cmd_motion_train(args: argparse.Namespace) -> int:
    import json

    from ..motion import train_motion

    epochs = args.epochs or Config.motion_epochs
    holdouts = None if args.holdout is None else tuple(args.holdout)  # None: the default sessions a file holds
    people = None if args.no_people else args.people or Config().motion_people_path()
    for path in _sequence_files(args.data):
        m = train_motion(path, args.out, None if args.no_final else args.models_dir, people=people, folds=args.folds,
                         holdouts=holdouts, epochs=epochs, seed=args.seed, limit=args.limit, final=not args.no_final)
        if args.json:
            print(json.dumps(m, indent=2, default=str))
            continue
        for f in m["folds"]:
            print(f"{m['kind']}: held-out {f['held_out']}: accuracy {f['trained_classes']['accuracy']:.4f}, "
                  f"macro-F1 {f['trained_classes']['macro_f1']:.4f} ({f['trained_classes']['n']} windows; "
                  f"untrained classes {f['untrained_classes'] or 'none'})"
                  + (f"; static letters read as j/z {f['strays']['rate']:.2%}" if "strays" in f else ""))
        if "held_out_repositories" in m:
            r = m["held_out_repositories"]
            print(f"{m['kind']}: {r['folds']} folds over {r['groups']} held-out repositories: "
                  + ", ".join(f"{w} {v['recall']:.3f}" for w, v in r["per_word"].items())
                  + f" (recall; {Path(args.out) / m['kind'] / 'per_word_recall.csv'})")
        for key, path_ in m.get("export", {}).get("paths", {}).items():
            print(f"wrote {path_}" + (f" ({m['export']['bytes'][key]:,} bytes)" if key in m["export"]["bytes"] else ""))
    return 0


def _cmd_motion_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..motion import DEFAULT_ASPECT, evaluate_motion

    aspect = DEFAULT_ASPECT if args.aspect is None else args.aspect
    m = evaluate_motion(args.data, args.model, args.out, args.models_dir, aspect)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"{m['model']} on {m['data']}: {m['n']} windows of {m['frames']} frames, accuracy {m['accuracy']:.4f}, "
          f"macro-F1 {m['macro_f1']:.4f}; {m['ms_per_window']} ms a window")
    if m["skipped"]:
        print(f"skipped (not the model's classes): {m['skipped']}")
    for name, row in m["per_class"].items():
        print(f"  {name:>10}: precision {row['precision']:.3f} recall {row['recall']:.3f} f1 {row['f1']:.3f} ({row['support']})")
    if "strays" in m:
        print(f"static letters read as j or z: {m['strays']['rate']:.2%} ({m['strays']['n']} of {m['strays']['static']})")
    if args.out:
        print(f"wrote {args.out}/metrics.json" + (" and the confusion matrix" if m["figures"] else ""))
    else:
        print("nothing written: --out DIR keeps metrics.json and the confusion matrix")
    return 0


def _cmd_motion_export(args: argparse.Namespace) -> int:
    import json

    from ..inference import check_model_kind
    from ..models import load_checkpoint
    from ..motion import STEMS, export_motion, load_sequences

    _, meta = load_checkpoint(args.model)
    check_model_kind(args.model, meta.get("input"), "motion", "`asl-tinyml motion export`")
    kind = (meta.get("features") or {}).get("kind")
    if kind not in STEMS:
        raise UserError(f"{args.model} records no motion kind (letters or words); re-train it with `asl-tinyml motion train`")
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

    from ..motion import predict_motion

    for row in predict_motion(args.data, args.model, args.models_dir, args.topk):
        if args.json:
            print(json.dumps(row))
        else:
            top = ", ".join(f"{t['label']} ({t['prob']:.2f})" for t in row["top"])
            print(f"{row['index']:>5} [{row['label']}] -> {row['prediction']}: {top}")
    return 0


# --- serve -------------------------------------------------------------------------------------------
def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web app: live webcam fingerspelling page, POST /predict and WS /ws (FastAPI)")
    p.add_argument("--model", type=PATH, default=None,
                   help="an .onnx export or .pt checkpoint (default: the shipped predictor in --models-dir)")
    add_fusion_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=PORT, default=8000, help="port (default: 8000)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="inference threads per request (default: 1)")
    p.add_argument("--max-fps", type=POSITIVE_FLOAT, default=20.0, help="frames per second accepted per WebSocket client (default: 20)")
    p.add_argument("--threshold", type=FRACTION, default=None, help="smoothed confidence needed to type a sign (default: 0.6)")
    p.add_argument("--stable-frames", type=POSITIVE_INT, default=None, help="steady frames before a sign is typed (default: 8)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--motion-dir", type=PATH, default=None,
                   help="folder of asl_motion_{letters,words}_int8.onnx: j, z and words through MediaPipe (default: "
                   "the model set, as --models-dir)")
    p.add_argument("--no-motion", action="store_true", help="no landmark path: the static pixel model only")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from ..serve import ServeSettings, run_server
    from ..spelling import SpellingConfig

    changes = {k: v for k, v in (("threshold", args.threshold), ("stable_frames", args.stable_frames)) if v is not None}
    try:
        spelling = dataclasses.replace(SpellingConfig(), **changes)
    except ValueError as exc:
        raise UserError(f"{exc}; pick another --threshold/--stable-frames") from exc
    from ..fusion import load_sign_predictor
    from ..model_sets import resolve_models

    settings = ServeSettings(threads=args.threads, max_fps=args.max_fps, spelling=spelling, classes=args.classes)
    predictor = load_sign_predictor(args.model, args.landmark_model, models_dir=args.models_dir,
                                    weight=args.fusion_weight, threads=args.threads)
    run_server(predictor, host=args.host, port=args.port, settings=settings, log_level=args.log_level,
               motion_dir=None if args.no_motion else args.motion_dir or resolve_models(args.models_dir).path)
    return 0
