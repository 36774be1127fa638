"""`asl-tinyml micro`: exported int8 `.tflite` models run in TensorFlow Lite Micro (`tflm.py`), against a board.

For each model: the ops TFLM runs, flash bytes (the C array in `model_data.h`), the smallest tensor arena,
their share of an ESP32-S3's SRAM and, with `--run`, top-1 agreement with the ONNX int8 model of the same
export on the run's test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import UserError
from .args import PATH

DEFAULT_MODELS = (Path("models/asl_fastkan_int8.tflite"), Path("models/asl_landmarks_int8.tflite"))


def add_micro(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("micro", help="run exported int8 .tflite models in TensorFlow Lite Micro: ops, arena, flash")
    p.add_argument(
        "--model", type=PATH, nargs="+", default=None,
        help="int8 .tflite files (default: models/asl_fastkan_int8.tflite and models/asl_landmarks_int8.tflite)",
    )
    p.add_argument(
        "--run", type=PATH, default=None,
        help="run folder: top-1 agreement with the *_int8.onnx beside each model on its test split",
    )
    p.add_argument("--sram-kib", type=int, default=512, help="the board's SRAM in KiB (default: ESP32-S3, 512)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=_cmd_micro)


def format_entry(r: dict[str, Any]) -> str:
    kib = 1024
    lines = [
        f"{r['model']}: TensorFlow Lite Micro runs all {len(r['ops'])} ops ({', '.join(r['ops'])})",
        f"  flash {r['flash_bytes']:,} bytes ({r['flash_bytes'] / kib:.1f} KiB, the C array); tensor arena "
        f"{r['arena_bytes']:,} bytes ({r['arena_bytes'] / kib:.1f} KiB) = {r['arena_share_of_sram']:.1%} of "
        f"{r['sram_budget_bytes'] // kib} KiB SRAM{'' if r['fits_sram'] else ': DOES NOT FIT'}",
    ]
    if "agreement" in r:
        a = r["agreement"]
        lines.append(f"  top-1 agreement with {Path(a['onnx']).name}: {a['top1_agreement']:.2%} on {a['n']} test inputs "
                     f"(max |p - p_onnx| {a['max_abs_diff']:.3f})"
                     + (f"; accuracy {a['accuracy_micro']:.4f} here, {a['accuracy_onnx']:.4f} ONNX int8"
                        if "accuracy_micro" in a else ""))
    return "\n".join(lines)


def _cmd_micro(args: argparse.Namespace) -> int:
    from ..tflm import _require_micro, micro_check

    _require_micro()
    if args.sram_kib <= 0:
        raise UserError(f"--sram-kib must be a positive number of KiB, got {args.sram_kib}")
    paths = args.model or [p for p in DEFAULT_MODELS if p.exists()]
    if not paths:
        raise UserError("no .tflite in models/; pass --model FILE.tflite or export with `asl-tinyml export --tflite` "
                        "(in the tflite environment: docs/deploy.md)")
    reports = [micro_check(p, args.run, args.sram_kib * 1024) for p in paths]
    print(json.dumps(reports, indent=2) if args.json else "\n".join(format_entry(r) for r in reports))
    return 0
