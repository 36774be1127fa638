"""The model set a command uses, and the set packaged with asl-tinyml: it loads, agrees with its card, and
reads real signs from any working folder with no training run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asl_tinyml.fusion import LandmarkPredictor, load_sign_predictor
from asl_tinyml.inference import load_predictor
from asl_tinyml.model_sets import (
    CARD_JSON,
    MODELS_ENV,
    PACKAGED_DIR,
    PACKAGED_FILES,
    PIXEL_FILE,
    describe_file,
    read_card,
    resolve_models,
)
from asl_tinyml.motion import MotionPredictor


def test_the_set_is_chosen_by_flag_then_environment_then_local_models_then_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert resolve_models() == resolve_models(None)
    assert resolve_models().path == PACKAGED_DIR and resolve_models().origin == "packaged"
    (tmp_path / "models").mkdir()
    assert resolve_models().origin == "packaged"  # an empty models/ is not a set
    (tmp_path / "models" / PIXEL_FILE).write_bytes(b"")
    assert resolve_models().path == Path("models") and "main job" in resolve_models().origin
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "elsewhere"))
    assert resolve_models().path == tmp_path / "elsewhere" and resolve_models().origin == f"${MODELS_ENV}"
    assert resolve_models(tmp_path / "flag").path == tmp_path / "flag"


def test_the_packaged_files_load_and_agree_with_their_card():
    card = read_card(PACKAGED_DIR)
    assert card is not None, f"no {CARD_JSON} in {PACKAGED_DIR}: package a main-job run (docs/deploy.md)"
    assert set(card["files"]) == set(PACKAGED_FILES)
    pixel = load_predictor(PACKAGED_DIR / PIXEL_FILE)
    assert list(pixel.classes) == card["files"][PIXEL_FILE]["classes"]
    landmark = LandmarkPredictor(PACKAGED_DIR / "asl_landmarks_int8.onnx")
    assert landmark.classes == card["files"]["asl_landmarks_int8.onnx"]["classes"] == list(pixel.classes)
    assert landmark.recipe.symmetric and not landmark.recipe.mirror  # handedness-free
    for kind in ("letters", "words"):
        name = f"asl_motion_{kind}_int8.onnx"
        assert MotionPredictor(PACKAGED_DIR / name).classes == card["files"][name]["classes"]
        assert (PACKAGED_DIR / name).stat().st_size <= 64 * 1024
    static_bytes = sum((PACKAGED_DIR / n).stat().st_size for n in (PIXEL_FILE, "asl_landmarks_int8.onnx"))
    assert static_bytes <= 256 * 1024
    assert describe_file(PACKAGED_DIR / PIXEL_FILE)["origin"] == "packaged"
    assert card["held_out"] and card["test_split"]["fused_macro_f1"] > 0.5


@pytest.mark.integration
def test_the_packaged_set_reads_shared_photos_from_any_folder(data_root, tmp_path, monkeypatch):
    pytest.importorskip("mediapipe")
    photos = [data_root / "massey_asl" / c for c in ("a", "b", "l", "v", "y")]
    files = [sorted(p.iterdir())[0] for p in photos if p.is_dir()]
    if len(files) < 5:
        pytest.skip(f"Massey photos missing under {data_root}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MODELS_ENV, raising=False)
    predictor = load_sign_predictor()
    assert predictor.landmark is not None and Path(predictor.pixel.path).parent == PACKAGED_DIR
    labels = [f.parent.name for f in files]
    got = predictor.predict_files(files)
    answers = [predictor.classes[int(np.argmax(p))] for p in got.proba]
    assert sum(a == y for a, y in zip(answers, labels)) >= 4, list(zip(labels, answers))
    out = subprocess.run([sys.executable, "-m", "asl_tinyml.cli", "predict", str(files[0]), "--json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[0])
    assert row["label"] == labels[0] and row["model_set"]["origin"] == "packaged"
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_model_card_leads_with_held_out_figures():
    """The packaged card's Markdown says the held-out groups, the words on held-out repositories and the test
    split in a few lines, read from its JSON."""
    from asl_tinyml.model_sets import CARD_JSON, CARD_MD, PACKAGED_DIR, headline_figures

    card = json.loads((PACKAGED_DIR / CARD_JSON).read_text())
    lines = headline_figures(card)
    assert [line.split(":")[0] for line in lines] == [
        "- held-out people and groups, in kind", f"- motion words, {card['held_out']['word_repositories']['folds']} "
        f"folds over {card['held_out']['word_repositories']['groups']} held-out repositories",
        f"- test split ({card['test_split']['images']} images of unseen people)"]
    assert all(line in (PACKAGED_DIR / CARD_MD).read_text() for line in lines)
    assert headline_figures({}) == []


def test_motion_outputs_name_the_set(tmp_path, monkeypatch):
    """`motion evaluate` and `motion predict` say which set they used, as `predict` and `evaluate` do."""
    from asl_tinyml.model_sets import MODELS_ENV
    from asl_tinyml.motion import evaluate_motion, predict_motion

    from .test_motion import synthetic_set

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MODELS_ENV, raising=False)
    data = synthetic_set(tmp_path / "letters.npz", n_per=2)
    assert evaluate_motion(data)["model_set"]["origin"] == "packaged"
    assert {row["model_set"]["origin"] for row in predict_motion(data)} == {"packaged"}
