"""The README's main command in quick mode: every stage on a real slice, ending with a report."""

from __future__ import annotations

import json

import pytest

from asl_tinyml.cli import main
from asl_tinyml.config import Config
from asl_tinyml.inference import load_predictor
from asl_tinyml.preprocess import Cache


def test_study_flag_reaches_the_pipeline(monkeypatch):
    import asl_tinyml.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda cfg: seen.append(cfg) or "report")
    assert main(["pipeline", "--study"]) == 0 and main(["pipeline"]) == 0
    assert [c.study for c in seen] == [True, False]


@pytest.mark.integration
@pytest.mark.slow
def test_quick_pipeline_end_to_end(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["pipeline", "--quick", "--out", "run"]) == 0
    out, err = capsys.readouterr()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| convkan |" in report and "| fastkan (baseline) |" in report
    assert "## Compression" in report and "## Speed" in report
    # sized for a main job: the baseline is benchmarked untrained, int8 without the pruning sweep; it says so
    assert "not trained in the main job" in report and "`asl-tinyml pipeline --study`" in report
    assert "| baseline |" in report and "| pruned" not in report and "| int8 |" in report
    assert "| asl_fastkan_int8.onnx |" in report and "| asl_fastkan.onnx |" not in report  # the shipped file alone
    assert "`asl-tinyml compare --run run`" in report and "| **total** |" in report
    # a log, not a terminal: a plain line per stage, no progress bars
    assert "== merge" in out and "== bench done in" in out
    assert "it/s]" not in err and "img/s]" not in err and "epoch/s]" not in err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "weighted_f1", "params", "train_seconds", "per_source"} <= set(metrics)
    assert metrics["params"] < 250_000
    assert set(metrics["per_source"]) == {p.name for p in data_root.iterdir() if p.is_dir()}
    models = tmp_path / "run" / "models"
    int8 = models / "asl_fastkan_int8.onnx"
    assert int8.stat().st_size <= 256 * 1024
    # with the landmarks extra (CI installs it): MediaPipe, the landmark model and the fused int8 predictor
    assert "| landmark_fastkan (hand found in" in report and "| **shipped: fused int8** (" in report
    assert "## New people and new sources" in report  # first, even when `compare` has not measured them yet
    assert (models / "asl_landmarks_int8.onnx").stat().st_size < 32 * 1024
    assert metrics["fused"]["n"] == metrics["n"] and 0 <= metrics["fused"]["fusion_weight"] <= 1
    assert (models / "labels.txt").read_text().split() == Cache.load(tmp_path / "run").classes
    # the deployed int8 model and the checkpoint agree on real merged images
    cache = Cache.load(tmp_path / "run")
    assert cache.crop == "hand" and (tmp_path / "run" / "hands.npz").exists()  # hand crops; detections kept
    images = cache.images[:40:4]
    p_int8 = load_predictor(int8).predict_proba(images)
    p_pt = load_predictor(models / "asl_fastkan.pt").predict_proba(images)
    assert (p_int8.argmax(1) == p_pt.argmax(1)).mean() >= 0.8
    assert len(list((tmp_path / "run" / "eda").glob("*.png"))) >= 5
    assert (tmp_path / "run" / "eval" / "convkan" / "confusion_matrix.png").exists()
    # the motion models (j, z, words) from ../shared/sequences: held-out sessions, then int8 exports
    from asl_tinyml.config import default_sequences_dir

    if default_sequences_dir() is not None:
        assert "## Motion models (j, z, words)" in report and "| letters |" in report and "| words |" in report
        assert set(metrics["motion"]) == {"letters", "words"}
        people = Config().motion_people_path()  # with the word collection, the words' folds are `compare`'s
        for kind in ("letters", "words"):
            held = [] if kind == "words" and people is not None else ["danial", "cam"]
            assert [f["held_out"] for f in metrics["motion"][kind]["folds"]] == held
            assert (models / f"asl_motion_{kind}_int8.onnx").stat().st_size <= 64 * 1024
        assert people is None or ("## Motion words on held-out repositories" in report  # `compare` measures them
                                  and "the motion words' held-out repositories: `asl-tinyml compare --run run`" in report)
    # nothing was written outside the run folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_word_folds_lead_the_report_and_metrics(tmp_path):
    """The motion words' held-out repositories (what `compare` writes) reach the report's held-out sections
    and metrics.json's `held_out`, every word named, the key words in bold; without them, a pointer."""
    from asl_tinyml.compare import word_folds_dir
    from asl_tinyml.pipeline import held_out_summary, held_out_words_section

    assert "asl-tinyml compare --run" in "\n".join(held_out_words_section(tmp_path))
    assert "word_repositories" not in held_out_summary(tmp_path)
    folds = {"n": 30, "groups": 12, "accuracy": 0.7, "macro_f1": 0.5, "folds": 5, "seed": 0, "epochs": 20,
             "per_word": {"hello": {"recall": 0.9, "n": 20, "groups": 10}, "drink": {"recall": 0.0, "n": 10, "groups": 3}},
             "key_words": {"hello": 0.9}, "worst_fold": {"hello": 0.8}}
    path = word_folds_dir(tmp_path) / "words" / "folds.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(folds))
    lines = held_out_words_section(tmp_path)
    assert "| **hello** | 0.900 | 0.800 | 20 | 10 |" in lines and "| drink | 0.000 | – | 10 | 3 |" in lines
    summary = held_out_summary(tmp_path)["word_repositories"]
    assert summary["recall"] == {"hello": 0.9, "drink": 0.0} and summary["key_words"] == {"hello": 0.9}
