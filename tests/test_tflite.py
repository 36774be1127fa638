"""The microcontroller row, tested: export_all with TFLite, int8 TFLite accuracy against int8 ONNX on a
run's test split, and C headers holding exactly the .tflite bytes.

Needs the `tflite` extra, which pins packages the main environment cannot take: CI installs it into
its own environment (`.ci/run`); elsewhere these tests are skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from asl_tinyml.export import export_all, tflite_available, tflite_predict_proba
from asl_tinyml.inference import load_predictor
from asl_tinyml.preprocess import Cache, load_splits

from .tiny_model import CLASSES, make_run, trained_checkpoint

pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(not tflite_available(), reason="the tflite extra (litert-torch, ai-edge-litert) is not installed"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("tflite")
    ckpt = trained_checkpoint(root / "tiny.pt")
    run = make_run(root / "run", per_class=24)
    result = export_all(ckpt, root / "models", calibration=run, tflite=True)
    return {"ckpt": ckpt, "run": run, "out": root / "models", "result": result}


def test_tflite_int8_is_as_accurate_as_onnx_int8_on_the_test_split(exported: dict[str, object]) -> None:
    run, out = Path(exported["run"]), Path(exported["out"])
    cache = Cache.load(run)
    test = load_splits(run, len(cache))["test"]
    images, labels = cache.images[test], cache.labels[test]
    p_onnx = load_predictor(out / "asl_fastkan_int8.onnx", threads=1).predict_proba(images)
    p_tflite = tflite_predict_proba(out / "asl_fastkan_int8.tflite", images)
    acc_onnx = float((p_onnx.argmax(1) == labels).mean())
    acc_tflite = float((p_tflite.argmax(1) == labels).mean())
    assert len(test) >= 20 and acc_onnx >= 0.9  # tiny model, seeds 0-9: int8 ONNX accuracy always 1.0
    assert acc_tflite >= acc_onnx - 0.05, (acc_tflite, acc_onnx)
    assert (p_tflite.argmax(1) == p_onnx.argmax(1)).mean() >= 0.9


def test_c_headers_embed_the_tflite_model_and_its_ops(exported: dict[str, object]) -> None:
    out, result = Path(exported["out"]), exported["result"]
    assert isinstance(result, dict) and result["tflite_missing"] is None
    assert result["header_source"] == str(out / "asl_fastkan_int8.tflite")
    text = (out / "model_data.h").read_text()
    body = re.search(r"g_model\[\] __attribute__\(\(aligned\(16\)\)\) = \{(.*?)\};", text, re.DOTALL)
    assert body is not None
    data = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body.group(1)))
    assert data == (out / "asl_fastkan_int8.tflite").read_bytes() and data[4:8] == b"TFL3"  # a TFLite flatbuffer
    assert re.findall(r'"([^"]*)"', (out / "labels.h").read_text()) == CLASSES
    ops = result["checks"]["tflite_model"]["ops"]
    assert ops and not result["checks"]["tflite_model"]["missing_in_resolver_table"]
    assert f"MicroMutableOpResolver<{len(ops)}>" in (out / "op_resolver.h").read_text()
    assert json.loads((out / "export.json").read_text())["header_source"].endswith(".tflite")
    assert result["checks"]["tflite_int8"]["argmax_agreement"] >= 0.9
    assert np.isfinite(result["checks"]["tflite_int8"]["max_abs_diff"])
