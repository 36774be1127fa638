"""TensorFlow Lite Micro: the exported int8 pixel and landmark models run in TFLM's own interpreter, every op
supported, in a measured arena, agreeing with the ONNX int8 models on the test split.

The exports need the `tflite` extra (litert-torch, ai-edge-litert, tflite-micro), which CI installs into
its own environment (`.ci/run`, `.venv-tflite`); elsewhere those tests are skipped with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.export import tflite_available
from asl_tinyml.tflm import PIXEL_ARENA_BUDGET, micro_available, read_model

from .test_landmarks import synthetic_landmark_run
from .tiny_model import make_run, trained_checkpoint

needs_micro = pytest.mark.skipif(
    not (tflite_available() and micro_available()),
    reason="the tflite extra (litert-torch, ai-edge-litert, tflite-micro) is not installed: CI runs these in "
    ".venv-tflite (.ci/run)",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pixel model and a landmark model trained on a synthetic run, each exported to ONNX int8 and TFLite."""
    from asl_tinyml.export import export_all
    from asl_tinyml.landmarks import export_landmark_model, train_landmarks

    root = tmp_path_factory.mktemp("micro")
    pixel_run = make_run(root / "pixel_run", per_class=24)
    export_all(trained_checkpoint(root / "tiny.pt"), root / "models", calibration=pixel_run, tflite=True)
    lm_run = synthetic_landmark_run(root / "lm_run")
    train_landmarks(lm_run, epochs=20, patience=20, progress=False)
    export_landmark_model(lm_run, root / "models", tflite=True)
    return {"models": root / "models", "pixel_run": pixel_run, "lm_run": lm_run}


@pytest.mark.parametrize(("stem", "run_key", "min_inputs"), [("asl_fastkan", "pixel_run", 24), ("asl_landmarks", "lm_run", 30)])
@pytest.mark.tflite
@needs_micro
def test_int8_models_run_in_tflm_in_a_measured_arena_and_agree_with_onnx_int8(
    exported: dict[str, Path], stem: str, run_key: str, min_inputs: int
) -> None:
    from asl_tinyml.tflm import _interpreter, agreement, load_micro, split_inputs

    tflite, onnx = exported["models"] / f"{stem}_int8.tflite", exported["models"] / f"{stem}_int8.onnx"
    model = load_micro(tflite)  # raises UserError on any op TFLM lacks
    assert {"FULLY_CONNECTED", "QUANTIZE"} <= set(model.ops) and model.flash_bytes == tflite.stat().st_size
    assert 1024 < model.arena_bytes <= PIXEL_ARENA_BUDGET
    assert _interpreter(read_model(tflite), model.arena_bytes - 16)[0] is None  # the smallest arena that runs
    inputs, labels = split_inputs(exported[run_key], onnx)
    assert len(inputs) >= min_inputs
    check = agreement(model, onnx, inputs, labels)
    assert check["n"] == len(inputs) and check["top1_agreement"] >= 0.99, check
    assert check["accuracy_micro"] >= 0.9  # and it is right, not just agreeing
    assert abs(check["accuracy_micro"] - check["accuracy_onnx"]) <= 1 - check["top1_agreement"]


@pytest.mark.tflite
@needs_micro
def test_cli_micro_reports_ops_arena_and_flash_against_the_board(
    exported: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    models = exported["models"]
    pixel = models / "asl_fastkan_int8.tflite"
    assert main(["micro", "--model", str(pixel), "--run", str(exported["pixel_run"]), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["flash_bytes"] == pixel.stat().st_size and report["sram_budget_bytes"] == 512 * 1024
    assert report["fits_sram"] and report["agreement"]["top1_agreement"] >= 0.99
    assert main(["micro", "--model", str(pixel), str(models / "asl_landmarks_int8.tflite"), "--sram-kib", "64"]) == 0
    out = capsys.readouterr().out
    assert out.count("TensorFlow Lite Micro runs all") == 2 and "of 64 KiB SRAM" in out


@pytest.mark.tflite
@needs_micro
def test_report_section_tables_each_model_in_tflm(exported: dict[str, Path], tmp_path: Path) -> None:
    from asl_tinyml.tflm import micro_section

    pixel = exported["models"] / "asl_fastkan_int8.tflite"
    lines = micro_section([pixel, tmp_path / "missing_int8.tflite"], exported["pixel_run"])
    (row,) = [line for line in lines if line.startswith("| `")]
    assert row.startswith("| `asl_fastkan_int8.tflite` | ") and f"{pixel.stat().st_size:,} B" in row


def test_report_section_without_tflm_says_where_the_figures_are(tmp_path: Path) -> None:
    from asl_tinyml.tflm import micro_section

    lines = micro_section([tmp_path / "none_int8.tflite"], tmp_path)
    assert lines[1] == "## Microcontroller (TensorFlow Lite Micro)" and "docs/deploy.md" in lines[-1]


def _with_unknown_op(model: bytes) -> bytes:
    """The model with its first op code turned into LSH_PROJECTION, a TFLite builtin TFLM does not implement."""
    import flatbuffers
    from tflite_micro.python.tflite_micro.runtime import convert_bytearray_to_object
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    obj = convert_bytearray_to_object(bytearray(model))
    obj.operatorCodes[0].builtinCode = obj.operatorCodes[0].deprecatedBuiltinCode = schema.BuiltinOperator.LSH_PROJECTION
    builder = flatbuffers.Builder(len(model))
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.tflite
@needs_micro
def test_an_op_tflm_lacks_is_named_in_one_user_error(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    from asl_tinyml.tflm import load_micro

    broken = tmp_path / "lsh.tflite"
    broken.write_bytes(_with_unknown_op(read_model(exported["models"] / "asl_landmarks_int8.tflite")))
    with pytest.raises(UserError, match=r"lsh.tflite uses ops TensorFlow Lite Micro does not have: LSH_PROJECTION"):
        load_micro(broken)


def test_a_file_that_is_not_a_tflite_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing.tflite not found"):
        read_model(tmp_path / "missing.tflite")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07" + bytes(30))
    with pytest.raises(UserError, match=r"model.onnx is not a TFLite model .*_int8.tflite"):
        read_model(onnx)


def test_cli_micro_without_a_model_or_the_package_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["micro"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert ("no .tflite in models/" in err) if micro_available() else ("needs the tflite-micro package" in err)
    assert list(tmp_path.iterdir()) == []
