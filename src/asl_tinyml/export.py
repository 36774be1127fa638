"""Deployable artifacts from a checkpoint: float ONNX, int8 ONNX (static QDQ), int8 TFLite and C headers.

- `export_onnx`: `torch.onnx.export` at opset 18 with a dynamic batch axis and the metadata
  (`classes`, `image_size`, `model`) that `inference.load_predictor` reads, checked by `onnx.checker`.
  Pixel models take uint8 NHWC images (N, S, S, 3) as a camera gives them: the NCHW transpose and
  the scaling to [0, 1] run inside the graph (no float copy of the batch in Python).
- `quantize_onnx`: ONNX Runtime's static post-training quantization (QDQ, per-channel int8 weights,
  uint8 activations) calibrated on a few hundred training images; the input scaling, the first
  `float_convs` convolutions and the head's element-wise ops stay float (mixed precision), where ONNX
  Runtime's int8 kernels and Quantize/Dequantize pairs are slower; every other conv and matrix weight is int8.
- `micro.export_tflite`: a fully int8-calibrated TFLite model via litert-torch (PT2E quantization), for
  TensorFlow Lite Micro; needs the optional `tflite` extra (`pip install -e .[tflite]`).
- `micro.write_c_array` / `micro.write_labels_header`: `model_data.h` and `labels.h` for an ESP32/Arduino
  sketch, written only from a TFLite model (what TensorFlow Lite Micro reads).
- `export_all`: every artifact into `models/`, renamed into place only once all are built and checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader

from .config import Config, UserError, output_dir
from .inference import (
    LANDMARK_INPUT,
    META_CROP,
    META_CROP_MARGIN,
    META_INPUT,
    MOTION_INPUT,
    ONNX_INPUT,
    ONNX_OUTPUT,
    UINT8_INPUT,
    check_model_kind,
    load_predictor,
    onnx_metadata,
)
from .micro import (
    export_tflite,
    require_tflite,
    tflite_available,
    tflite_predict_proba,
    tflite_report,
    write_c_array,
    write_labels_header,
    write_op_resolver,
)
from .models import count_parameters, load_checkpoint
from .preprocess import Cache, load_splits, to_float
from .progress import bar

OPSET = 18
ARTIFACT_STEM = "asl_fastkan"
CALIBRATION_IMAGES = 300
FLOAT_TOLERANCE = 1e-4  # max |p_onnx - p_torch| accepted for the float export
FLOAT_CONVS = Config.int8_float_convs  # leading convolutions an int8 export keeps float (`quantize_onnx`)


# --- ONNX --------------------------------------------------------------------------------------------
def _set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace `metadata_props` keys with `props` (others kept)."""
    kept = {p.key: p.value for p in model.metadata_props if p.key not in props}
    onnx.helper.set_model_props(model, {**kept, **props})


def _strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop the per-node provenance the torch exporter records (module paths, rewrite rules): tens of KB
    that a deployed model does not need."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


class Uint8Input(torch.nn.Module):
    """`model` behind uint8 NHWC input: transpose to NCHW and scale to [0, 1] as the first graph ops."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # a wrapper, not a mode switch: the caller's mode is exported

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.permute(0, 3, 1, 2).float() * (1.0 / 255.0))


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of tensor `name` when it is an initializer or a Constant node's output, else None."""
    for init in model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute[0].name == "value":
            return onnx.numpy_helper.to_array(node.attribute[0].t)
    return None


def fold_input_scale(model: onnx.ModelProto) -> bool:
    """Fold `Conv(x * c)` into `Conv'(x)` with weights `c * W` (c a scalar constant), in place: the
    uint8 -> [0, 1] scaling of a pixel model's input then costs no op of its own at run time. Only when the
    product feeds one Conv alone and that Conv owns its weight; True when folded."""
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {init.name: init for init in graph.initializer}
    for mul in [n for n in graph.node if n.op_type == "Mul"]:
        users = consumers.get(mul.output[0], [])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != mul.output[0]:
            continue
        conv, weight = users[0], inits.get(users[0].input[1])
        scalars = [k for k in (0, 1) if (c := _constant(model, mul.input[k])) is not None and c.size == 1]
        if weight is None or len(consumers[conv.input[1]]) != 1 or not scalars:
            continue
        k = scalars[0]
        c = float(_constant(model, mul.input[k]).reshape(()))
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * np.float32(c), weight.name))
        conv.input[0] = mul.input[1 - k]
        graph.node.remove(mul)
        if len(consumers[mul.input[k]]) == 1 and mul.input[k] in inits:  # the constant has no other use
            graph.initializer.remove(inits[mul.input[k]])
        return True
    return False


def export_onnx(checkpoint: str | Path, out_path: str | Path, opset: int = OPSET) -> Path:
    """Checkpoint -> float32 ONNX (input `input` uint8 NHWC, output `logits`, dynamic batch) with metadata."""
    model, meta = load_checkpoint(checkpoint)
    return save_onnx(model, meta, out_path, opset=opset, full_check=True)


def save_onnx(
    model: torch.nn.Module, meta: dict[str, Any], out_path: str | Path, opset: int | None = OPSET,
    full_check: bool = False, minify: bool = False,
) -> Path:
    """Export `model` with the dynamo exporter (dynamic batch, `input` -> `logits`), attach the metadata
    `load_predictor` reads, check it and save it. Used for float models, quantization-aware ones (pixel
    models: input uint8 NHWC, see `Uint8Input`), landmark models (meta `input: landmarks`: input
    (N, in_features)) and motion models (meta `input: motion`: windows (N, T, in_features), T dynamic too);
    these two carry metadata `input` and `features`. `opset` None: the exporter's default."""
    features = meta.get("input") in (LANDMARK_INPUT, MOTION_INPUT)
    size = 0 if features else int(meta["image_size"])
    dynamic = {0: torch.export.Dim("batch", min=1, max=4096)}
    if features:
        frames = (20,) if meta["input"] == MOTION_INPUT else ()
        example = torch.rand(2, *frames, int(meta["model_options"]["in_features"]))
        if frames:
            dynamic[1] = torch.export.Dim("frames", min=2, max=1024)
    else:
        model = Uint8Input(model)
        example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_shapes=(dynamic,),
        external_data=False,
        verbose=False,
        **({"opset_version": opset} if opset else {}),
    )
    proto = program.model_proto
    _strip_debug_info(proto)
    if not features:
        fold_input_scale(proto)
    props = onnx_metadata(list(meta["classes"]), size, str(meta["model"]), count_parameters(model))
    if features:
        props |= {META_INPUT: meta["input"], "features": json.dumps(meta.get("features", {}))}
        if meta.get("fusion_weight") is not None:
            props["fusion_weight"] = str(meta["fusion_weight"])
    else:
        props |= {META_INPUT: UINT8_INPUT, META_CROP: str(meta.get("crop", "centre")),
                  META_CROP_MARGIN: str(meta.get("crop_margin", 0.25))}
    _set_metadata(proto, props)
    proto.producer_name = "asl-tinyml"
    if minify:  # a final artifact (the quantizer reads node names, so never for its input)
        minify_onnx(proto)
    onnx.checker.check_model(proto, full_check=full_check)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, out_path)
    return out_path


def minify_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop inferred shapes and node names and give internal tensors short names (`t0`, `t1`, ...), in place:
    bytes that no runtime reads. The input and output keep their names."""
    del model.graph.value_info[:]
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output} | {""}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        return name if name in keep else short.setdefault(name, f"t{len(short)}")

    for tensor in model.graph.initializer:
        tensor.name = rename(tensor.name)
    for node in model.graph.node:
        node.name = ""
        node.input[:] = [rename(x) for x in node.input]
        node.output[:] = [rename(x) for x in node.output]
    return model


class ImageCalibrationReader(CalibrationDataReader):
    """ONNX Runtime calibration data: uint8 NHWC images fed under `input_name` as they are (`raw`, a model
    that scales in-graph) or as float NCHW batches; float32 features (landmark rows, motion windows) as they are."""

    def __init__(
        self, images: np.ndarray, input_name: str = ONNX_INPUT, batch_size: int = 32, raw: bool = True
    ) -> None:
        self.images = np.asarray(images)
        self.input_name = input_name
        self.batch_size = batch_size
        self.raw = raw
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.images), self.batch_size):
            batch = self.images[i : i + self.batch_size]
            if batch.ndim == 4:
                yield {self.input_name: np.ascontiguousarray(batch) if self.raw else to_float(batch)}
            else:
                yield {self.input_name: batch.astype(np.float32)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def _calibration_chunk(n_batches: int) -> int:
    """Batches ONNX Runtime's calibrator collects before reducing (memory); not a divisor of `n_batches`,
    because a last, empty chunk makes it fail with "No data is collected"."""
    return next(k for k in range(8, 64) if n_batches % k)


def float_prefix(model: onnx.ModelProto, float_convs: int) -> list[str]:
    """Names of the nodes that stay float in a mixed-precision export: everything the first Conv's input
    depends on (the uint8 input's transpose and cast, and any scaling) and every node from the first
    through the `float_convs`-th Conv, in graph (topological) order. Empty when `float_convs` is 0 or the
    graph has no Conv."""
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if float_convs <= 0 or not convs:
        return []
    producer = {out: n for n in nodes for out in n.output}
    keep, todo = set(), [nodes[convs[0]].input[0]]
    while todo:  # the first Conv's ancestors
        node = producer.get(todo.pop())
        if node is not None and node.name not in keep:
            keep.add(node.name)
            todo.extend(node.input)
    last = convs[min(float_convs, len(convs)) - 1]
    keep.update(n.name for n in nodes[convs[0] : last + 1])
    return sorted(keep)


POOLING_OPS = ("ReduceMean", "GlobalAveragePool")
MATRIX_OPS = ("Gemm", "MatMul")


def float_head(model: onnx.ModelProto) -> list[str]:
    """Names of the head's nodes that stay float in a mixed-precision export: every node after the last global
    pooling (`ReduceMean`, `GlobalAveragePool`) but the matrix products, whose weights stay int8. The
    FastKAN head's element-wise ops (LayerNorm, RBF, SiLU) work on a few hundred values per image, where a
    Quantize/Dequantize pair around each costs more than the op. Empty when the graph has no pooling."""
    nodes = list(model.graph.node)
    pools = [i for i, n in enumerate(nodes) if n.op_type in POOLING_OPS]
    if not pools:
        return []
    return sorted(n.name for n in nodes[pools[-1] + 1 :] if n.op_type not in MATRIX_OPS)


def quantize_onnx(
    float_onnx: str | Path,
    out_path: str | Path,
    calibration_images: np.ndarray,
    per_channel: bool = True,
    float_convs: int = FLOAT_CONVS,
    keep_head_float: bool = True,
) -> Path:
    """Static int8 QDQ quantization of a float ONNX model, calibrated (min-max) on uint8 NHWC images
    (or float32 features: rows (N, F) for a landmark model, windows (N, T, F) for a motion model).

    Runs `quant_pre_process` (shape inference + graph optimisation) first, keeps the metadata.
    `float_convs`: the first convolutions (and the input's transpose and cast before them) stay float
    (`float_prefix`). ONNX Runtime's int8 kernels are slower than its float ones on a 3-channel stem and
    wide depthwise convolutions; for `convkan` the default 3 keeps the stem, the first depthwise and the
    first pointwise conv float (under 1% of the weights; the latency measurements are in docs/experiments.md,
    "Speed"). 0 quantizes every layer. `keep_head_float`: the
    element-wise ops after the global pooling stay float (`float_head`; the head's matrix weights stay int8).
    """
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    onnxruntime.disable_telemetry_events()  # the quantizer's calibration opens sessions of its own

    images = np.asarray(calibration_images)
    features = images.ndim in (2, 3) and images.dtype == np.float32
    if not (features or (images.ndim == 4 and images.dtype == np.uint8)) or len(images) == 0:
        raise UserError(
            f"calibration data must be non-empty uint8 images (N, S, S, 3) or float32 features (N, F) or (N, T, F), "
            f"got {images.dtype} {images.shape}"
        )
    float_onnx, out_path = Path(float_onnx), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    source = onnx.load(float_onnx)
    props = {p.key: p.value for p in source.metadata_props}
    raw = source.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    reader = ImageCalibrationReader(images, raw=raw)
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(float_onnx), str(prepped), skip_symbolic_shape=True)
        graph = onnx.load(prepped)
        keep_float = float_prefix(graph, float_convs) + (float_head(graph) if keep_head_float else [])
        quantize_static(
            str(prepped),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
            extra_options={"CalibMaxIntermediateOutputs": _calibration_chunk(-(-len(images) // reader.batch_size))},
        )
    return finish_quantized(out_path, props)


def finish_quantized(path: str | Path, props: dict[str, str]) -> Path:
    """A quantizer's output made a final artifact in place: debug info and names stripped, the float model's
    metadata restored, checked."""
    quantized = onnx.load(path)
    _strip_debug_info(quantized)
    minify_onnx(quantized)
    _set_metadata(quantized, props)
    onnx.checker.check_model(quantized)
    onnx.save_model(quantized, path)
    return Path(path)


def compare_models(reference: str | Path, candidate: str | Path, images: np.ndarray) -> dict[str, float]:
    """Max |probability difference| and top-1 agreement of two model files on uint8 NHWC images."""
    p_ref = load_predictor(reference, threads=1).predict_proba(images)
    p_new = load_predictor(candidate, threads=1).predict_proba(images)
    return {
        "max_abs_diff": float(np.abs(p_ref - p_new).max()),
        "argmax_agreement": float((p_ref.argmax(1) == p_new.argmax(1)).mean()),
        "n_images": int(len(images)),
    }


# --- everything ----------------------------------------------------------------------------------------
def calibration_images(source: np.ndarray | str | Path, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """Up to `n` uint8 images: an array as given, or a seeded sample of a run folder's train split."""
    if isinstance(source, np.ndarray):
        return source[:n] if len(source) > n else source
    run_dir = Path(source)
    cache = Cache.load(run_dir)
    train = load_splits(run_dir, len(cache))["train"]
    pick = np.random.default_rng(seed).choice(train, size=min(n, len(train)), replace=False)
    return cache.images[np.sort(pick)]


def _default_calibration(meta: dict[str, Any]) -> Path:
    run_dir = (meta.get("config") or {}).get("run_dir")
    if not run_dir or not (Path(run_dir) / "cache.npz").exists():
        raise UserError("no calibration images: pass --run RUN_DIR (a folder with cache.npz and splits.json)")
    return Path(run_dir)


TFLITE_MISSING = (
    "no TFLite model: TFLite and the C headers for microcontrollers (model_data.h, labels.h, op_resolver.h) "
    "were not built; install the converter with `pip install -e \".[tflite]\"` (in its own environment: "
    "docs/deploy.md) and export again"
)


def export_all(
    checkpoint: str | Path,
    out_dir: str | Path = "models",
    calibration: np.ndarray | str | Path | None = None,
    tflite: bool | None = None,
    stem: str = ARTIFACT_STEM,
    float_convs: int = FLOAT_CONVS,
) -> dict[str, Any]:
    """Write `<stem>.pt`, `<stem>.onnx`, `<stem>_int8.onnx`, `labels.txt` and `export.json` into `out_dir`, and
    with a TFLite model (`<stem>_int8.tflite`) the C headers `model_data.h` (its bytes), `labels.h` and
    `op_resolver.h`; returns paths, sizes and the ONNX/TFLite checks (agreement with the checkpoint on 64
    calibration images).

    `calibration`: uint8 NHWC images or a run folder (default: the checkpoint's run); `tflite`: None = when
    the optional converter is installed; `float_convs`: see `quantize_onnx`. Without a TFLite model no C header
    is written (microcontroller runtimes read TFLite, not ONNX) and `tflite_missing` says so.

    Nothing in `out_dir` changes until every artifact is built and checked: they are written to a temporary
    folder beside them and renamed into place at the end. A landmark checkpoint, a float export that
    disagrees with PyTorch, or any other failure leaves `out_dir` as it was.
    """
    checkpoint = Path(checkpoint)
    _, meta = load_checkpoint(checkpoint)
    check_model_kind(checkpoint, meta.get("input"), "pixel", "`asl-tinyml export`")
    classes = list(meta["classes"])
    use_tflite = tflite_available() if tflite is None else tflite
    if use_tflite:
        require_tflite()
    calib = calibration_images(calibration if calibration is not None else _default_calibration(meta))
    size = int(meta["image_size"])
    if calib.ndim != 4 or calib.shape[1:] != (size, size, 3) or len(calib) == 0:
        raise UserError(
            f"the calibration images are {calib.shape[1:3]} but {checkpoint} takes {size}x{size}; pass --run a run "
            f"folder preprocessed at --size {size} (the one the checkpoint was trained on)"
        )
    out_dir = output_dir(out_dir, "--out")
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
        built, checks = _build_artifacts(checkpoint, Path(tmp), classes, calib, use_tflite, stem, float_convs)
        paths = {k: out_dir / p.name for k, p in built.items()}
        sizes = {k: p.stat().st_size for k, p in built.items()}
        result = {
            "checkpoint": str(checkpoint),
            "paths": {k: str(p) for k, p in paths.items()},
            "bytes": sizes,
            "checks": checks,
            "header_source": str(paths["tflite"]) if "tflite" in paths else None,
            "tflite_missing": None if use_tflite else TFLITE_MISSING,
        }
        (Path(tmp) / "export.json").write_text(json.dumps(result, indent=2))
        for key, path in built.items():  # all checks passed: into place, each file at once
            if key == "pt" and checkpoint.resolve() == paths["pt"].resolve():
                continue  # exporting models/asl_fastkan.pt itself: it stays as it is
            os.replace(path, paths[key])
        os.replace(Path(tmp) / "export.json", out_dir / "export.json")
    if not use_tflite:  # TFLite files of an earlier export no longer match this model
        stale = [out_dir / n for n in (f"{stem}_int8.tflite", "model_data.h", "labels.h", "op_resolver.h")]
        result["stale"] = [str(p) for p in stale if p.exists()]
    return result


def _build_artifacts(
    checkpoint: Path, tmp: Path, classes: list[str], calib: np.ndarray, use_tflite: bool, stem: str, float_convs: int
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Every artifact of `export_all` in `tmp`, and the checks; raises UserError when the float export is off."""
    paths: dict[str, Path] = {"pt": tmp / f"{stem}.pt"}
    shutil.copyfile(checkpoint, paths["pt"])
    steps = bar(total=4, desc="export", unit="step", leave=False)
    paths["onnx"] = export_onnx(checkpoint, tmp / f"{stem}.onnx")
    steps.update()
    paths["onnx_int8"] = quantize_onnx(paths["onnx"], tmp / f"{stem}_int8.onnx", calib, float_convs=float_convs)
    steps.update()
    (tmp / "labels.txt").write_text("\n".join(classes) + "\n")
    paths["labels"] = tmp / "labels.txt"
    checks: dict[str, Any] = {
        "onnx_float": compare_models(checkpoint, paths["onnx"], calib[:64]),
        "onnx_int8": compare_models(checkpoint, paths["onnx_int8"], calib[:64]),
    }
    if checks["onnx_float"]["max_abs_diff"] > FLOAT_TOLERANCE:
        raise UserError(
            f"the float ONNX export of {checkpoint} differs from PyTorch by {checks['onnx_float']['max_abs_diff']:.2e} "
            f"(> {FLOAT_TOLERANCE:g}) in probability; nothing was written. Please report it with the checkpoint"
        )
    if use_tflite:
        paths["tflite"] = export_tflite(checkpoint, tmp / f"{stem}_int8.tflite", calib)
        p_ref = load_predictor(checkpoint, threads=1).predict_proba(calib[:64])
        p_tfl = tflite_predict_proba(paths["tflite"], calib[:64])
        checks["tflite_int8"] = {
            "max_abs_diff": float(np.abs(p_ref - p_tfl).max()),
            "argmax_agreement": float((p_ref.argmax(1) == p_tfl.argmax(1)).mean()),
            "n_images": int(len(p_ref)),
        }
        report = tflite_report(paths["tflite"])
        checks["tflite_model"] = report
        paths["op_resolver_h"] = write_op_resolver(report["ops"], tmp / "op_resolver.h")
        paths["model_data_h"] = write_c_array(paths["tflite"], tmp / "model_data.h", "g_model")
        paths["labels_h"] = write_labels_header(classes, tmp / "labels.h")
    steps.update(2)
    steps.close()
    return paths, checks
