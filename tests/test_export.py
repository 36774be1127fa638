"""Export: float ONNX matches PyTorch, int8 ONNX is smaller and agrees, C headers hold the exact bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.export import (
    FLOAT_CONVS,
    FLOAT_TOLERANCE,
    compare_models,
    export_all,
    export_onnx,
    fold_input_scale,
    quantize_onnx,
    tflite_available,
    write_c_array,
    write_labels_header,
)
from asl_tinyml.inference import load_predictor

from .tiny_model import CLASSES, SIZE, color_images, make_run, trained_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    ckpt = trained_checkpoint(root / "tiny.pt")
    float_onnx = export_onnx(ckpt, root / "tiny.onnx")
    int8 = quantize_onnx(float_onnx, root / "tiny_int8.onnx", color_images(12, seed=3)[0])
    return {"ckpt": ckpt, "onnx": float_onnx, "int8": int8}


def test_float_onnx_matches_torch_within_tolerance(exported: dict[str, Path]) -> None:
    images, labels = color_images(10, seed=7)
    check = compare_models(exported["ckpt"], exported["onnx"], images)
    assert check["max_abs_diff"] < FLOAT_TOLERANCE == 1e-4
    assert check["argmax_agreement"] == 1.0
    torch_pred = load_predictor(exported["ckpt"]).predict(images)
    assert (torch_pred == labels).mean() == 1.0  # the tiny model did learn the colours


def test_float_onnx_has_opset_metadata_and_dynamic_batch(exported: dict[str, Path]) -> None:
    model = onnx.load(exported["onnx"])
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert props["classes"] == '["a", "b", "c", "space"]' and props["image_size"] == str(SIZE)
    assert props["model"] == "convkan"
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_outputs()[0].name == "logits"
    assert session.get_inputs()[0].type == "tensor(uint8)" and props["input"] == "uint8_nhwc"  # camera layout
    for n in (1, 7):
        out = session.run(None, {"input": np.random.randint(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)})[0]
        assert out.shape == (n, len(CLASSES))


def test_int8_onnx_is_smaller_quantized_and_agrees(exported: dict[str, Path]) -> None:
    assert exported["int8"].stat().st_size < 0.7 * exported["onnx"].stat().st_size
    ops = {n.op_type for n in onnx.load(exported["int8"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    predictor = load_predictor(exported["int8"])
    assert predictor.classes == CLASSES and predictor.image_size == SIZE  # metadata survived quantization
    images, labels = color_images(10, seed=8)
    check = compare_models(exported["ckpt"], exported["int8"], images)
    assert check["argmax_agreement"] >= 0.95
    assert (predictor.predict(images) == labels).mean() >= 0.95  # tiny model, seeds 0-9: int8 accuracy always 1.0


def test_input_scaling_is_folded_into_the_first_conv(exported: dict[str, Path]) -> None:
    graph = onnx.load(exported["onnx"]).graph
    producer = {o: n for n in graph.node for o in n.output}
    first = next(n for n in graph.node if n.op_type == "Conv")
    assert producer[first.input[0]].op_type == "Cast"  # uint8 -> float feeds the stem directly: no Mul by 1/255
    # (the float export still matches PyTorch within FLOAT_TOLERANCE: test above)


def test_fold_input_scale_keeps_the_outputs() -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "c"], ["xs"]), helper.make_node("Conv", ["xs", "w"], ["y"], pads=[1, 1, 1, 1])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        [numpy_helper.from_array(np.array(1 / 255, np.float32), "c"), numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.integers(0, 256, (1, 3, 5, 5)).astype(np.float32)

    def run(m: onnx.ModelProto) -> np.ndarray:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(model)
    assert fold_input_scale(model) and [n.op_type for n in model.graph.node] == ["Conv"]
    assert [i.name for i in model.graph.initializer] == ["w"]  # the scale constant is gone too
    np.testing.assert_allclose(run(model), before, rtol=1e-5, atol=1e-5)
    assert not fold_input_scale(model)  # nothing left to fold


def _dequantized(graph: onnx.GraphProto) -> set[str]:
    """The tensors a QDQ graph's DequantizeLinear nodes produce (int8 weights and activations, seen as float)."""
    return {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}


def _quantized_convs(path: Path) -> list[bool]:
    """For each Conv of a QDQ graph, in order: does its weight come through a DequantizeLinear?"""
    graph = onnx.load(path).graph
    dq_outputs = _dequantized(graph)
    return [n.input[1] in dq_outputs for n in graph.node if n.op_type == "Conv"]


def test_int8_keeps_the_first_convs_float_unless_told(exported: dict[str, Path], tmp_path: Path) -> None:
    mixed = _quantized_convs(exported["int8"])
    assert mixed[:FLOAT_CONVS] == [False] * FLOAT_CONVS and all(mixed[FLOAT_CONVS:]) and len(mixed) > FLOAT_CONVS
    graph = onnx.load(exported["int8"]).graph
    dq_outputs = _dequantized(graph)
    first = next(n for n in graph.node if n.op_type == "Conv")
    assert first.input[0] not in dq_outputs  # the in-graph /255 scaling feeds it in float, not through int8
    full = quantize_onnx(exported["onnx"], tmp_path / "all.onnx", color_images(12, seed=3)[0], float_convs=0)
    assert all(_quantized_convs(full))
    images, _ = color_images(10, seed=8)
    assert compare_models(exported["ckpt"], full, images)["argmax_agreement"] >= 0.95


def test_int8_head_runs_float_on_int8_weights(exported: dict[str, Path], tmp_path: Path) -> None:
    graph = onnx.load(exported["int8"]).graph
    dq_outputs = _dequantized(graph)
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 4 and all(n.input[1] in dq_outputs for n in gemms)  # FastKAN head: int8 weights
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    assert norms and not any(n.input[0] in dq_outputs for n in norms)  # element-wise head ops see float
    quantized_head = quantize_onnx(exported["onnx"], tmp_path / "q.onnx", color_images(12, seed=3)[0], keep_head_float=False)
    graph = onnx.load(quantized_head).graph
    dq_outputs = _dequantized(graph)
    assert all(n.input[0] in dq_outputs for n in graph.node if n.op_type == "LayerNormalization")


def test_quantize_rejects_float_calibration_images(exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="uint8"):
        quantize_onnx(exported["onnx"], tmp_path / "q.onnx", np.zeros((4, SIZE, SIZE, 3), np.float32))


def test_c_array_holds_the_exact_bytes(exported: dict[str, Path], tmp_path: Path) -> None:
    header = write_c_array(exported["int8"], tmp_path / "model_data.h", "g_model")
    text = header.read_text()
    data = exported["int8"].read_bytes()
    body = re.search(r"const unsigned char g_model\[\] __attribute__\(\(aligned\(16\)\)\) = \{(.*?)\};", text, re.S)
    assert body is not None
    values = [int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body.group(1))]
    assert len(values) == len(data) and bytes(values) == data
    assert re.search(rf"const unsigned int g_model_len = {len(data)};", text)
    assert text.count("#ifndef MODEL_DATA_H") == 1


def test_labels_header_lists_classes_in_output_order(tmp_path: Path) -> None:
    text = write_labels_header(CLASSES, tmp_path / "labels.h").read_text()
    assert "const int kNumLabels = 4;" in text
    assert re.findall(r'"([^"]*)"', text) == CLASSES


def test_c_array_rejects_a_bad_variable_name(exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="C identifier"):
        write_c_array(exported["int8"], tmp_path / "m.h", "model-data")


def test_export_all_writes_every_artifact(exported: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "models"
    result = export_all(exported["ckpt"], out, calibration=color_images(8, seed=4)[0], tflite=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["asl_fastkan.onnx", "asl_fastkan.pt", "asl_fastkan_int8.onnx", "export.json", "labels.txt"]
    assert (out / "labels.txt").read_text().split() == CLASSES
    assert result["checks"]["onnx_float"]["max_abs_diff"] < FLOAT_TOLERANCE
    assert result["checks"]["onnx_int8"]["argmax_agreement"] >= 0.95
    # without a TFLite model no C header is written (a microcontroller runtime reads TFLite, not ONNX), and it says so
    assert result["header_source"] is None and "not built" in result["tflite_missing"]
    assert "tflite" in json.loads((out / "export.json").read_text())["tflite_missing"]


def test_cli_export_says_plainly_that_tflite_was_not_built(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path / "run", per_class=8)
    (tmp_path / "models").mkdir()
    stale = tmp_path / "models" / "model_data.h"
    stale.write_text("// an earlier export\n")
    code = main(["export", "--model", str(exported["ckpt"]), "--run", str(run), "--out", str(tmp_path / "models"), "--no-tflite"])
    out = capsys.readouterr().out
    assert code == 0 and "no TFLite model" in out and ".[tflite]" in out
    assert f"note: {stale} are from an earlier export" in out and stale.read_text() == "// an earlier export\n"


def test_cli_export_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m"), "--no-tflite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "none.pt" in err and len(err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.tflite
@pytest.mark.skipif(not tflite_available(), reason="the tflite extra (litert-torch, ai-edge-litert) is not installed")
def test_tflite_int8_runs_in_the_litert_interpreter(exported: dict[str, Path], tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from asl_tinyml.export import export_tflite, tflite_predict_proba

    path = export_tflite(exported["ckpt"], tmp_path / "tiny.tflite", color_images(12, seed=3)[0])
    details = Interpreter(model_path=str(path)).get_input_details()[0]
    assert details["dtype"] == np.int8 and list(details["shape"]) == [1, SIZE, SIZE, 3]  # int8 NHWC for TFLM
    images, labels = color_images(10, seed=9)
    probs = tflite_predict_proba(path, images)
    torch_probs = load_predictor(exported["ckpt"]).predict_proba(images)
    assert (probs.argmax(1) == torch_probs.argmax(1)).mean() >= 0.95
    assert (probs.argmax(1) == labels).mean() >= 0.95


def test_calibration_chunks_never_leave_an_empty_last_chunk() -> None:
    from asl_tinyml.export import _calibration_chunk

    for n in range(1, 200):
        k = _calibration_chunk(n)
        assert 8 <= k and n % k != 0
