"""Outputs only where asked (issue #25): `--json` alone writes nothing, figures go to `--out` or into the run
folder a command was given, and a command run from any folder leaves that folder as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asl_tinyml.cli import main

from .helpers import letters_npz, motion_checkpoint, tree_digest, write_image
from .tiny_model import make_run, trained_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pixel model and its ONNX export, a folder of class folders, a run folder, a motion model and windows."""
    from asl_tinyml.export import export_onnx

    root = tmp_path_factory.mktemp("outputs")
    ckpt = trained_checkpoint(root / "tiny.pt")
    photos = root / "photos"
    for cls, color in (("a", (220, 40, 40)), ("b", (40, 200, 40))):
        for j in range(2):
            write_image(photos / cls / f"{j}.png", color=color, seed=j)
    return {"ckpt": ckpt, "onnx": export_onnx(ckpt, root / "tiny.onnx"), "photos": photos,
            "run": make_run(root / "run", per_class=4), "motion_model": motion_checkpoint(root / "motion.pt"),
            "letters": letters_npz(root / "letters.npz")}


READ_ONLY = {  # command -> its arguments (filled from `files`); none of them may write a byte anywhere
    "evaluate --json": ("evaluate", "--model", "onnx", "--data", "photos", "--json"),
    "evaluate": ("evaluate", "--model", "onnx", "--data", "photos"),
    "evaluate run --json": ("evaluate", "--model", "onnx", "--data", "run", "--json"),
    "predict": ("predict", "photos", "--model", "onnx"),
    "predict --json": ("predict", "photos", "--model", "onnx", "--json"),
    "motion evaluate --json": ("motion", "evaluate", "--data", "letters", "--model", "motion_model", "--json"),
    "motion evaluate": ("motion", "evaluate", "--data", "letters", "--model", "motion_model"),
    "motion predict": ("motion", "predict", "--data", "letters", "--model", "motion_model"),
    "bench --json": ("bench", "--model", "onnx", "--runs", "3", "--seconds", "0.1", "--rounds", "1", "--json"),
}


@pytest.mark.parametrize("command", sorted(READ_ONLY))
def test_a_command_leaves_the_working_folder_and_its_data_untouched(
    command: str, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree_digest(files["photos"].parent)
    args = [str(files.get(a, a)) for a in READ_ONLY[command]]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    if "--json" in args and command != "predict --json":
        json.loads(out)  # nothing but the JSON on stdout
    assert not list(work.iterdir())
    assert tree_digest(files["photos"].parent) == before  # nor in the data, the run folder or beside the models
    if "--json" not in args and command.startswith(("evaluate", "motion evaluate")):
        assert "nothing written: --out DIR" in out


def test_figures_go_to_out_or_into_the_run_folder_given(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(files["onnx"]), "--data", str(files["photos"]), "--json", "--out", str(out)]) == 0
    assert (out / "metrics.json").is_file() and (out / "confusion_matrix.png").is_file()
    run = make_run(tmp_path / "run", per_class=4)
    assert main(["evaluate", "--model", str(files["onnx"]), "--data", str(run)]) == 0
    assert (run / "eval" / "tiny" / "report.md").is_file() and f"wrote {run / 'eval' / 'tiny'}" in capsys.readouterr().out
    motion_out = tmp_path / "motion"
    assert main(["motion", "evaluate", "--data", str(files["letters"]), "--model", str(files["motion_model"]),
                 "--out", str(motion_out)]) == 0
    assert json.loads((motion_out / "metrics.json").read_text())["n"] == 4
