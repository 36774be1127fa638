"""Microcontroller formats: an int8 TFLite model for TensorFlow Lite Micro (`export_tflite`, needs the
optional `tflite` extra: `pip install -e .[tflite]`), its predictions and op report, and the C headers of an
ESP32/Arduino sketch (`model_data.h`, `labels.h`, `op_resolver.h`), written only from a TFLite model.
`export.export_all` builds them next to the ONNX files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import UserError
from .models import load_checkpoint
from .progress import bar


# --- TFLite (optional extra) ---------------------------------------------------------------------------
def tflite_available() -> bool:
    """True when litert-torch (converter) and ai-edge-litert (interpreter) are importable."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def require_tflite() -> None:
    if not tflite_available():
        raise UserError(
            "TFLite export needs litert-torch and ai-edge-litert; install them with `pip install -e .[tflite]` "
            "(or skip TFLite with --no-tflite)"
        )


def export_tflite(checkpoint: str | Path, out_path: str | Path, calibration_images: np.ndarray) -> Path:
    """Checkpoint -> int8 TFLite for TensorFlow Lite Micro: PT2E static quantization (per-channel symmetric
    int8 weights, int8 activations) converted by litert-torch.

    The model takes one int8 NHWC image (1, S, S, 3) (camera layout; the input's scale/zero point map
    [0, 1] pixels to int8) and returns float32 logits. Conv, pooling and linear ops run in int8; the
    FastKAN head's LayerNorm and Gaussian RBF (`exp`) stay float between DEQUANTIZE/QUANTIZE, which TFLM
    runs with its reference float kernels.
    """
    require_tflite()
    import litert_torch

    model, meta = load_checkpoint(checkpoint)
    size = int(meta["image_size"])
    images = np.asarray(calibration_images, dtype=np.float32) / 255.0
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or not len(images):
        raise UserError(f"TFLite calibration needs (N, {size}, {size}, 3) images for {checkpoint}, got {images.shape}")
    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()
    return _int8_tflite(nhwc, images, out_path)


def _int8_tflite(model: torch.nn.Module, samples: np.ndarray, out_path: str | Path) -> Path:
    """PT2E static int8 (per-channel symmetric weights, int8 activations) calibrated on `samples` one at a time
    (the model is exported for batch 1), converted by litert-torch and written to `out_path`."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (torch.from_numpy(samples[:1]),)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(model.eval(), example).module(), quantizer)
    move_exported_model_to_eval(prepared)
    with torch.no_grad():
        for i in bar(range(len(samples)), desc="calibrate tflite", unit="sample", leave=False):
            prepared(torch.from_numpy(samples[i : i + 1]))
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    allow_exported_model_train_eval(quantized)
    quantized.eval()  # the flag litert-torch checks; the ops were switched above
    edge = litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    edge.export(str(out_path))
    return out_path


def tflite_predict_proba(tflite_path: str | Path, images: np.ndarray) -> np.ndarray:
    """Softmax probabilities of an `export_tflite` model on uint8 NHWC images, one at a time (LiteRT interpreter)."""
    require_tflite()
    from ai_edge_litert.interpreter import Interpreter
    from scipy.special import softmax

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    x = np.asarray(images, dtype=np.float32) / 255.0  # NHWC, as the TFLite model takes it
    if np.issubdtype(inp["dtype"], np.integer):  # an int8 input: quantize with the model's own scale/zero point
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max)
    x = x.astype(inp["dtype"])
    logits = []
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0].astype(np.float64)
        if np.issubdtype(out["dtype"], np.integer):
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        logits.append(y)
    return softmax(np.stack(logits), axis=1).astype(np.float32) if logits else np.zeros((0, 0), np.float32)


# TFLite builtin op -> TensorFlow Lite Micro's MicroMutableOpResolver method
TFLM_RESOLVER = {
    "ADD": "AddAdd",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "EXP": "AddExp",
    "FULLY_CONNECTED": "AddFullyConnected",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "MEAN": "AddMean",
    "MUL": "AddMul",
    "PAD": "AddPad",
    "QUANTIZE": "AddQuantize",
    "RESHAPE": "AddReshape",
    "RSQRT": "AddRsqrt",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SUB": "AddSub",
    "TRANSPOSE": "AddTranspose",
    "SOFTMAX": "AddSoftmax",
    "RELU": "AddRelu",
    "CONCATENATION": "AddConcatenation",
}


def tflite_report(tflite_path: str | Path) -> dict[str, Any]:
    """The ops a TFLite model uses and bounds on the TFLM tensor arena its activations need.

    `arena_peak_live_bytes`: the most activation bytes alive at once, each tensor living from the op that
    writes it to the last op that reads it (what an ideal planner needs); `arena_upper_bytes`: every
    activation kept apart (no reuse). TFLM's greedy planner lands close to the first; add its bookkeeping
    (a few KB) and check `interpreter.arena_used_bytes()` on the device.
    """
    require_tflite()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    ops = interpreter._get_ops_details()  # noqa: SLF001  (the interpreter's only op listing)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    inp = interpreter.get_input_details()[0]
    inputs = {d["index"] for d in interpreter.get_input_details()}
    activations = inputs | {i for op in ops for i in op["outputs"]}

    def nbytes(i: int) -> int:
        t = tensors[i]
        return int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize

    born = {i: -1 for i in inputs} | {i: k for k, op in enumerate(ops) for i in op["outputs"]}
    dies = {i: k for k, op in enumerate(ops) for i in op["inputs"] if i in activations}
    dies |= {d["index"]: len(ops) for d in interpreter.get_output_details()}
    live = [
        sum(nbytes(i) for i in activations if born.get(i, -1) <= k <= dies.get(i, born.get(i, -1)))
        for k in range(len(ops))
    ]
    names = sorted({op["op_name"] for op in ops})
    return {
        "ops": names,
        "n_ops": len(ops),
        "missing_in_resolver_table": [n for n in names if n not in TFLM_RESOLVER],
        "arena_peak_live_bytes": max(live, default=0),
        "arena_upper_bytes": sum(nbytes(i) for i in activations),
        "input": {
            "shape": [int(d) for d in inp["shape"]],
            "dtype": np.dtype(inp["dtype"]).name,
            "scale": float(inp["quantization"][0]),
            "zero_point": int(inp["quantization"][1]),
        },
    }


def write_op_resolver(ops: list[str], header_path: str | Path) -> Path:
    """`op_resolver.h`: `AslOpResolver` (a MicroMutableOpResolver of exactly the model's ops) and `AddAslOps`."""
    calls = [TFLM_RESOLVER[op] for op in ops if op in TFLM_RESOLVER]
    unknown = [op for op in ops if op not in TFLM_RESOLVER]
    return _write_header(
        header_path,
        "Generated by asl-tinyml: the TFLM ops the exported model uses.",
        [
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
            "",
            f"using AslOpResolver = tflite::MicroMutableOpResolver<{len(ops)}>;",
            "",
            "inline TfLiteStatus AddAslOps(AslOpResolver& resolver) {",
            *(f"  if (resolver.{call}() != kTfLiteOk) return kTfLiteError;" for call in calls),
            *(f"  // {op}: no resolver method known to asl-tinyml; add it by hand" for op in unknown),
            "  return kTfLiteOk;",
            "}",
        ],
    )


# --- C headers -----------------------------------------------------------------------------------------
def _c_identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UserError(f"{name!r} is not a C identifier; use letters, digits and underscores")
    return name


def _write_header(header_path: str | Path, comment: str, body: list[str]) -> Path:
    """A C header with an include guard named after the file."""
    guard = re.sub(r"\W", "_", Path(header_path).name).upper()
    text = "\n".join([f"// {comment} Do not edit.", f"#ifndef {guard}", f"#define {guard}", "", *body, "", f"#endif  // {guard}", ""])
    header_path = Path(header_path)
    header_path.parent.mkdir(parents=True, exist_ok=True)
    header_path.write_text(text)
    return header_path


def write_c_array(
    model_bytes_path: str | Path, header_path: str | Path, var_name: str = "g_model", alignment: int = 16
) -> Path:
    """A file's bytes as a C/C++ header: `const unsigned char VAR[]` (aligned) and `const unsigned int VAR_len`."""
    var = _c_identifier(var_name)
    data = Path(model_bytes_path).read_bytes()
    rows = (", ".join(f"0x{b:02x}" for b in data[i : i + 12]) for i in range(0, len(data), 12))
    return _write_header(
        header_path,
        f"Generated by asl-tinyml from {Path(model_bytes_path).name} ({len(data)} bytes).",
        [
            f"const unsigned char {var}[] __attribute__((aligned({alignment}))) = {{",
            *(f"  {row}," for row in rows),
            "};",
            f"const unsigned int {var}_len = {len(data)};",
        ],
    )


def write_labels_header(classes: list[str], header_path: str | Path, var_name: str = "kLabels") -> Path:
    """`labels.h`: `const char* const kLabels[]` in the model's output order and `kNumLabels`."""
    var = _c_identifier(var_name)
    items = ", ".join(json.dumps(c) for c in classes)
    return _write_header(
        header_path,
        "Generated by asl-tinyml: class names in the model's output order.",
        [f"const int kNumLabels = {len(classes)};", f"const char* const {var}[] = {{{items}}};"],
    )


# --- the landmark model's TFLite export ---------------------------------------------------------------
def export_landmark_tflite(checkpoint: str | Path, out_path: str | Path, calibration: np.ndarray) -> Path:
    """A landmark checkpoint -> int8 TFLite by the pixel model's path (PT2E static int8, per-channel weights,
    litert-torch): input (1, F) int8 features, output float32 logits. `calibration`: features (N, F) float32."""
    from .inference import LANDMARK_INPUT

    require_tflite()
    model, meta = load_checkpoint(checkpoint)
    if meta.get("input") != LANDMARK_INPUT:
        raise UserError(f"{checkpoint} is not a hand-landmark model; export pixel models with `asl-tinyml export`")
    features = np.asarray(calibration, np.float32)
    if features.ndim != 2 or len(features) == 0:
        raise UserError("the landmark TFLite export needs calibration features (N, F): a run's landmark cache")
    return _int8_tflite(model, features, out_path)
