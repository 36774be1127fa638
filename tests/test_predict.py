"""predict: top-k rows for readable images of any format, one-line errors for the others, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.export import export_onnx
from asl_tinyml.predict import format_row, predict_paths

from .tiny_model import CLASSES, COLORS, trained_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict-models")
    ckpt = trained_checkpoint(root / "tiny.pt")
    return {"pt": ckpt, "onnx": export_onnx(ckpt, root / "tiny.onnx")}


def _solid(path: Path, color: tuple[int, int, int], fmt: str, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arr = np.clip(np.array(color) + rng.normal(0, 20, (40, 50, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format=fmt)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    _solid(root / "red.png", COLORS[0], "PNG")
    _solid(root / "nested" / "green.jpg", COLORS[1], "JPEG")
    _solid(root / "nested" / "blue.webp", COLORS[2], "WEBP")
    _solid(root / "yellow_palette.gif", COLORS[3], "GIF", mode="P")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image\n")
    (root / ".hidden.png").write_bytes(b"ignored")
    return root


def test_predict_paths_rows_in_order_with_errors_for_bad_files(folder: Path, models: dict[str, Path]) -> None:
    rows = list(predict_paths([folder], models["onnx"], topk=2))
    by_name = {Path(r["file"]).name: r for r in rows}
    assert [Path(r["file"]).name for r in rows] == [
        "broken.jpg",
        "blue.webp",
        "green.jpg",
        "notes.txt",
        "red.png",
        "yellow_palette.gif",
    ]
    assert by_name["red.png"]["labels"][0] == "a" and by_name["green.jpg"]["labels"][0] == "b"
    assert by_name["blue.webp"]["labels"][0] == "c" and by_name["yellow_palette.gif"]["labels"][0] == "space"
    for name in ("red.png", "green.jpg", "blue.webp", "yellow_palette.gif"):
        probs = by_name[name]["probs"]
        assert len(probs) == 2 and probs[0] >= probs[1] and 0.5 < probs[0] <= 1.0 and sum(probs) <= 1.0 + 1e-6
    for name in ("broken.jpg", "notes.txt"):
        assert "not a readable image" in by_name[name]["error"]
        assert "\n" not in format_row(by_name[name])


def test_pt_and_onnx_models_agree(folder: Path, models: dict[str, Path]) -> None:
    rows_pt = list(predict_paths([folder], models["pt"], topk=3))
    rows_onnx = list(predict_paths([folder], models["onnx"], topk=3))
    assert [r.get("labels") for r in rows_pt] == [r.get("labels") for r in rows_onnx]
    ok = [(a, b) for a, b in zip(rows_pt, rows_onnx) if "probs" in a]
    assert ok and all(np.allclose(a["probs"], b["probs"], atol=1e-4) for a, b in ok)


def test_topk_is_capped_and_checked(folder: Path, models: dict[str, Path]) -> None:
    row = next(r for r in predict_paths([folder / "red.png"], models["pt"], topk=10))
    assert sorted(row["labels"]) == sorted(CLASSES)
    with pytest.raises(UserError, match="topk"):
        next(predict_paths([folder], models["pt"], topk=0))


def test_cli_table_and_exit_code(folder: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(folder), str(folder / "missing.png"), "--model", str(models["onnx"])]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 7
    assert any(line.startswith(str(folder / "red.png")) and "  a (" in line for line in lines)
    assert sum("error:" in line for line in lines) == 3  # broken.jpg, notes.txt, missing.png
    assert "4 classified, 3 failed" in err


def test_cli_json_lines(folder: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(folder), "--model", str(models["pt"]), "--json", "--topk", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 6
    assert {r["labels"][0] for r in rows if "labels" in r} == set(CLASSES)
    assert all(len(r["labels"]) == 1 for r in rows if "labels" in r)


def test_cli_exit_1_when_nothing_could_be_read(
    folder: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(folder / "notes.txt"), "--model", str(models["onnx"])]) == 1
    assert "error: not a readable image" in capsys.readouterr().out


def test_cli_missing_model_exits_2_with_one_line(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(folder), "--model", str(tmp_path / "nope.onnx")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: model file") and len(err.strip().splitlines()) == 1


def test_cli_wrong_shape_model_exits_2(
    folder: Path, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx.load(models["onnx"])
    for prop in model.metadata_props:
        if prop.key == "image_size":
            prop.value = "32"  # the graph takes 24x24
    onnx.save(model, tmp_path / "wrong.onnx")
    assert main(["predict", str(folder), "--model", str(tmp_path / "wrong.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "wrong.onnx" in err and len(err.splitlines()) == 1 and "Traceback" not in err
