"""The microcontroller row, run as a microcontroller runs it: TensorFlow Lite Micro's interpreter.

`tflite-micro` (the `tflite` extra) wraps TFLM's real kernels and its arena allocator in Python. Here it
loads an int8 `.tflite`, names any op TFLM lacks, finds the smallest tensor arena the model runs in,
predicts, and checks top-1 agreement with the ONNX int8 model. `micro.export_landmark_tflite` gives the landmark
model the pixel model's TFLite path (PT2E int8 through litert-torch).

Flash bytes are the `.tflite` bytes: `model_data.h` holds exactly them (tests/test_tflite.py). The arena is
measured on this 64-bit host, where TFLM's bookkeeping structs hold 8-byte pointers; on a 32-bit
microcontroller (ESP32-S3) the same model needs the same tensor bytes and somewhat less bookkeeping.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import UserError

ESP32_S3_SRAM_BYTES = 512 * 1024  # the board's on-chip SRAM, shared by the arena, the stack and the firmware
PIXEL_ARENA_BUDGET = 256 * 1024  # issue 25: the pixel model's arena leaves half the SRAM to the rest
ARENA_SEARCH_MAX = 8 * 1024 * 1024
ARENA_ALIGN = 16  # TFLM aligns its buffers to 16 bytes: arenas are searched in these steps
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'|Failed to get registration from op code (\w+)")


def micro_available() -> bool:
    """True when tflite-micro's Python interpreter is importable."""
    try:
        from tflite_micro import runtime  # noqa: F401
    except Exception:  # ImportError, or a wheel built for another platform
        return False
    return True


def _require_micro() -> None:
    if not micro_available():
        raise UserError(
            "TensorFlow Lite Micro needs the tflite-micro package; install the tflite extra with "
            "`pip install -e \".[tflite]\"` (in its own environment: docs/deploy.md, \"The TFLite model\")"
        )


@contextmanager
def _stderr_captured(log: list[str]) -> Iterator[None]:
    """Collect what C++ code writes to file descriptor 2 (TFLM's MicroPrintf) into `log`."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.append(sink.read().decode(errors="replace"))


def read_model(path: str | Path) -> bytes:
    """The bytes of a `.tflite` file; UserError when it is missing or not a TFLite flatbuffer."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; export one with `asl-tinyml export --tflite` (in the tflite environment)")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite model (no TFL3 flatbuffer); pass the *_int8.tflite of an export")
    return data


def builtin_ops(model: bytes) -> list[str]:
    """The TFLite builtin op names a model uses, sorted (from its flatbuffer, as TFLM reads it)."""
    _require_micro()
    from tflite_micro.python.tflite_micro.runtime import convert_bytearray_to_object, get_builtin_code_from_operator_code
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = convert_bytearray_to_object(bytearray(model)).operatorCodes or []
    return sorted({names.get(get_builtin_code_from_operator_code(c), f"CUSTOM_{c.builtinCode}") for c in codes})


def _zero_input(details: dict[str, Any]) -> np.ndarray:
    return np.zeros(tuple(int(d) for d in details["shape"]), dtype=details["dtype"])


def _interpreter(model: bytes, arena_bytes: int) -> tuple[Any | None, str]:
    """A TFLM interpreter over an `arena_bytes` arena that has run once on zeros, or None, with TFLM's log."""
    from tflite_micro import runtime

    log: list[str] = []
    with _stderr_captured(log):
        try:
            interpreter = runtime.Interpreter.from_bytes(model, arena_size=int(arena_bytes))
            interpreter.set_input(_zero_input(interpreter.get_input_details(0)), 0)
            interpreter.invoke()  # some kernels take scratch buffers at their first invoke
        except RuntimeError:
            interpreter = None
    return interpreter, "".join(log)


def smallest_arena(model: bytes, name: str = "the model", upper: int = ARENA_SEARCH_MAX) -> int:
    """The smallest tensor arena (a multiple of 16 bytes) TFLM runs `model` in: a bisection over real
    allocations. UserError naming the ops TFLM lacks, or when even `upper` bytes are too few."""
    _require_micro()
    ok, log = _interpreter(model, upper)
    if ok is None:
        missing = sorted({a or b for a, b in MISSING_OP.findall(log)})
        if missing:
            raise UserError(
                f"{name} uses ops TensorFlow Lite Micro does not have: {', '.join(missing)}; change the export so "
                "that the model avoids them (docs/deploy.md, \"TensorFlow Lite Micro\")"
            )
        last = " ".join(line.strip() for line in log.strip().splitlines()[-3:])
        raise UserError(f"TensorFlow Lite Micro cannot run {name} in {upper:,} bytes of arena: {last}")
    lo, hi = 0, upper // ARENA_ALIGN  # in units of ARENA_ALIGN: lo fails (or is 0), hi runs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _interpreter(model, mid * ARENA_ALIGN)[0] is None:
            lo = mid
        else:
            hi = mid
    return hi * ARENA_ALIGN


@dataclass
class MicroModel:
    """A `.tflite` model loaded into TFLM over the smallest arena it runs in."""

    path: Path
    ops: list[str]
    arena_bytes: int
    flash_bytes: int
    interpreter: Any = field(repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.interpreter.get_input_details(0)["shape"])

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, C), one inference at a time. `inputs`: uint8 NHWC images for a pixel model
        (scaled to [0, 1] as it was exported), float features (N, F) for a landmark model."""
        from scipy.special import softmax

        x = np.asarray(inputs)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        if x.shape[1:] != self.input_shape[1:]:
            raise UserError(f"{self.path} takes inputs of shape {self.input_shape[1:]}, got {x.shape[1:]}")
        inp, out = self.interpreter.get_input_details(0), self.interpreter.get_output_details(0)
        x = _quantize(x.astype(np.float32), inp)
        logits = []
        for row in x:
            self.interpreter.set_input(row[None], 0)
            self.interpreter.invoke()
            logits.append(_dequantize(self.interpreter.get_output(0)[0], out))
        return softmax(np.stack(logits), axis=1).astype(np.float32) if logits else np.zeros((0, 0), np.float32)


def _quantize(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """Float inputs -> the tensor's dtype with its scale and zero point (float inputs pass through)."""
    dtype = np.dtype(details["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    q = details["quantization_parameters"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / float(q["scales"][0])) + int(q["zero_points"][0]), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    if not np.issubdtype(np.dtype(details["dtype"]), np.integer):
        return y.astype(np.float64)
    q = details["quantization_parameters"]
    return (y.astype(np.float64) - int(q["zero_points"][0])) * float(q["scales"][0])


def load_micro(path: str | Path, arena_bytes: int | None = None) -> MicroModel:
    """Load a `.tflite` into TFLM over `arena_bytes` (default: the smallest arena it runs in)."""
    _require_micro()
    path = Path(path)
    model = read_model(path)
    ops = builtin_ops(model)
    arena = smallest_arena(model, str(path)) if arena_bytes is None else int(arena_bytes)
    interpreter, _ = _interpreter(model, arena)
    if interpreter is None:
        raise UserError(f"TensorFlow Lite Micro cannot run {path} in {arena:,} bytes of arena; pass a larger one")
    return MicroModel(path, ops, arena, len(model), interpreter)


def micro_report(model: MicroModel, budget: int = ESP32_S3_SRAM_BYTES) -> dict[str, Any]:
    """Ops, arena and flash bytes of a loaded model against a board's SRAM `budget`."""
    return {
        "model": str(model.path), "ops": model.ops, "arena_bytes": model.arena_bytes, "flash_bytes": model.flash_bytes,
        "sram_budget_bytes": budget, "arena_share_of_sram": round(model.arena_bytes / budget, 4),
        "fits_sram": model.arena_bytes <= budget,
    }


# --- agreement with the ONNX int8 model --------------------------------------------------------------
def _is_landmark_onnx(onnx_path: str | Path) -> bool:
    from .inference import LANDMARK_INPUT, META_INPUT, open_session

    if not Path(onnx_path).is_file():
        raise UserError(f"{onnx_path} not found; pass the *_int8.onnx written by the same export as the .tflite")
    return open_session(onnx_path, 1)[1].get(META_INPUT) == LANDMARK_INPUT


def onnx_proba(onnx_path: str | Path, inputs: np.ndarray) -> np.ndarray:
    """Probabilities of an ONNX model on the inputs `MicroModel.predict_proba` takes (images or features)."""
    from .inference import load_predictor

    if _is_landmark_onnx(onnx_path):
        from .fusion import LandmarkPredictor

        return LandmarkPredictor(onnx_path, threads=1).predict_proba(np.asarray(inputs, np.float32))
    return load_predictor(onnx_path, threads=1).predict_proba(inputs)


def agreement(model: MicroModel, onnx_path: str | Path, inputs: np.ndarray,
              labels: np.ndarray | None = None) -> dict[str, Any]:
    """Top-1 agreement (and the largest probability gap) of TFLM and an ONNX model on the same inputs; with
    `labels` (class indices), each one's accuracy too: two int8 exports may part on near-ties, not on skill."""
    p_micro, p_onnx = model.predict_proba(inputs), onnx_proba(onnx_path, inputs)
    if p_micro.shape != p_onnx.shape:
        raise UserError(f"{model.path} and {onnx_path} differ in their outputs ({p_micro.shape[1:]} vs {p_onnx.shape[1:]}): "
                        "pass the ONNX int8 file of the same export")
    return {
        "n": int(len(p_micro)), "onnx": str(onnx_path),
        "top1_agreement": float((p_micro.argmax(1) == p_onnx.argmax(1)).mean()) if len(p_micro) else float("nan"),
        "max_abs_diff": float(np.abs(p_micro - p_onnx).max()) if len(p_micro) else float("nan"),
        **({"accuracy_micro": float((p_micro.argmax(1) == labels).mean()),
            "accuracy_onnx": float((p_onnx.argmax(1) == labels).mean())} if labels is not None and len(labels) else {}),
    }


def split_inputs(run_dir: str | Path, onnx_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A run's test split as model inputs, and its labels: uint8 images for a pixel model; for a landmark
    model the features of the test images with a detected hand (the landmark test rows)."""
    from .preprocess import Cache, load_splits

    run_dir = Path(run_dir)
    cache = Cache.load(run_dir)
    test = load_splits(run_dir, len(cache))["test"]
    if not _is_landmark_onnx(onnx_path):
        return cache.images[test], cache.labels[test]
    from .fusion import LandmarkPredictor

    features, found = LandmarkPredictor(onnx_path, threads=1).hands_for_run(run_dir)
    rows = test[found[test]]
    return features[rows], cache.labels[rows]


# --- one model, and the pipeline's table ----------------------------------------------------------------
def onnx_beside(tflite: Path) -> Path:
    """`X_int8.tflite` -> `X_int8.onnx`: the ONNX int8 model the same export wrote."""
    return tflite.with_suffix(".onnx")


def micro_check(path: Path, run: Path | None, budget: int = ESP32_S3_SRAM_BYTES) -> dict[str, Any]:
    """`micro_report` of one model, with its agreement on `run`'s test split when given."""
    model = load_micro(path)
    report = micro_report(model, budget)
    if run is not None:
        onnx = onnx_beside(Path(path))
        inputs, labels = split_inputs(run, onnx)
        report["agreement"] = agreement(model, onnx, inputs, labels)
    return report


def micro_section(tflite_files: list[Path], run: Path) -> list[str]:
    """The report's microcontroller table (every existing `.tflite` run in TFLM against the ESP32-S3's SRAM),
    or a line saying where those figures come from when the `tflite` extra is not installed."""
    head = ["", "## Microcontroller (TensorFlow Lite Micro)", ""]
    files = [Path(f) for f in tflite_files if Path(f).exists()]
    if not files or not micro_available():
        return head + ["Not measured in this run: the TFLite converter and `tflite-micro` come with the `tflite` "
                       "extra, in its own environment; docs/deploy.md (section 6) has the commands and the figures."]
    lines = head + [f"| model | ops | flash (C array) | tensor arena | of {ESP32_S3_SRAM_BYTES // 1024} KiB SRAM "
                    "| top-1 = ONNX int8 | accuracy TFLM / ONNX int8 |", "|---|---|---|---|---|---|---|"]
    for path in files:
        r = micro_check(path, run)
        a = r["agreement"]
        lines.append(f"| `{path.name}` | {len(r['ops'])} | {r['flash_bytes']:,} B | {r['arena_bytes']:,} B | "
                     f"{r['arena_share_of_sram']:.1%} | {a['top1_agreement']:.4f} on {a['n']} | "
                     f"{a.get('accuracy_micro', float('nan')):.4f} / {a.get('accuracy_onnx', float('nan')):.4f} |")
    return lines
