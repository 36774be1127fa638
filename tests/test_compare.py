"""compare: one command makes every missing model and fold, and the table reads its figures back from files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asl_tinyml.cli import main
from asl_tinyml.compare import COLUMNS, run_comparison
from asl_tinyml.config import Config

from .test_fusion import _run
from .tiny_model import SIZE

pytestmark = pytest.mark.slow


def test_compare_trains_what_is_missing_and_tabulates_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _run(tmp_path / "run")
    cfg = Config().replace(epochs=3, fold_epochs=2, batch_size=16, image_size=SIZE, num_threads=1, augment=False)
    rows = run_comparison(cfg, run, ("convkan", "landmark_fastkan", "fused"), progress=False)
    assert [r["model"] for r in rows] == ["convkan", "landmark_fastkan", "fused"]
    by = {r["model"]: r for r in rows}
    person = json.loads((run / "train" / "convkan-lopo" / "folds.json").read_text())
    source = json.loads((run / "train" / "convkan-loso" / "folds.json").read_text())
    assert [f["fold"] for f in person] == ["people1", "people2", "people3"]
    assert [f["fold"] for f in source] == ["massey_asl", "other"]
    # each signer is one fold here, so the mean over people is the mean over folds
    assert by["convkan"]["unseen_person_accuracy"] == pytest.approx(sum(f["accuracy"] for f in person) / 3)
    assert by["convkan"]["unseen_source_accuracy"] == pytest.approx(sum(f["accuracy"] for f in source) / 2)
    assert by["convkan"]["unseen_source_min"] == min(f["accuracy"] for f in source)
    # the shipped landmark file records the weight chosen on the held-out sources' images
    chosen = json.loads((run / "train" / "fused-loso" / "weight.json").read_text())["weight"]
    assert "weight " + str(chosen) in by["fused"]["notes"]
    assert by["landmark_fastkan"]["test_macro_f1"] > 0.7  # hands identify the class; misses count as wrong
    assert by["fused"]["int8_bytes"] == by["convkan"]["int8_bytes"] + by["landmark_fastkan"]["int8_bytes"]
    assert by["fused"]["latency_ms"] > by["landmark_fastkan"]["latency_ms"] > 0  # MediaPipe time is counted
    saved = json.loads((run / "compare" / "compare.json").read_text())
    assert saved == rows and all(list(r) == COLUMNS for r in saved)

    capsys.readouterr()
    assert main(["compare", "--run", str(run), "--models", "convkan", "fused", "--no-train"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| model | unseen source: mean (min)") and "| convkan |" in table and "| fused |" in table
    assert main(["compare", "--run", str(tmp_path / "nowhere"), "--no-train"]) == 2
    assert "nowhere" in capsys.readouterr().err
