"""evaluate: hand-checked metrics, class folders with bad files, run-folder splits mapped by class name, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asl_tinyml.cli import main
from asl_tinyml.config import UserError
from asl_tinyml.evaluate import compute_metrics, default_out_dir, evaluate
from asl_tinyml.inference import Predictor
from asl_tinyml.models import create_model, save_checkpoint
from asl_tinyml.preprocess import Cache, save_splits

CLASSES = ["a", "b", "c", "space"]


def make_checkpoint(path: Path) -> Path:
    """A tiny untrained convkan for 16 px images."""
    options = {"channels": [4, 8], "hidden": 8}
    model = create_model("convkan", len(CLASSES), **options)
    save_checkpoint(path, model, {"model": "convkan", "model_options": options, "classes": CLASSES, "image_size": 16})
    return path


# y_true [a a b b c c], y_pred [a b b b c a]; class d never occurs
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])
PROBA = np.array(
    [[0.7, 0.2, 0.1, 0], [0.3, 0.6, 0.1, 0], [0.1, 0.8, 0.1, 0], [0.2, 0.5, 0.3, 0], [0.1, 0.1, 0.8, 0], [0.5, 0.1, 0.4, 0]]
)
SOURCES = np.array(["s1", "s1", "s1", "s2", "s2", "s2"])


def test_compute_metrics_matches_hand_computed_values() -> None:
    m = compute_metrics(Y_TRUE, Y_PRED, PROBA, ["a", "b", "c", "d"], SOURCES)
    # a: P 1/2 R 1/2 F 1/2; b: P 2/3 R 1 F 4/5; c: P 1 R 1/2 F 2/3
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["weighted_f1"] == m["macro_f1"] == pytest.approx(0.6555556)  # equal supports
    assert set(m["per_class"]) == {"a", "b", "c"}  # d: neither true nor predicted
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2, "roc_auc": 7 / 8, "average_precision": m["per_class"]["b"]["average_precision"]}
    )
    # one-vs-rest AUC counted by hand over (positive, negative) pairs: a 7/8, b 7/8, c 8/8
    assert m["per_class"]["a"]["roc_auc"] == pytest.approx(7 / 8)
    assert m["per_class"]["c"]["roc_auc"] == pytest.approx(1.0)
    assert m["roc_auc_macro"] == pytest.approx((7 / 8 + 7 / 8 + 1) / 3)
    assert m["top3_accuracy"] == 1.0
    assert m["log_loss"] == pytest.approx(-np.mean([math.log(p) for p in (0.7, 0.3, 0.8, 0.5, 0.8, 0.4)]), rel=1e-6)
    # s1: [a a b] -> [a b b]: F1 a 2/3, b 2/3; s2: [b c c] -> [b c a]: F1 b 1, c 2/3 (a: not in s2's truth)
    assert m["per_source"]["s1"] == pytest.approx({"n": 3, "accuracy": 2 / 3, "twin_aware_accuracy": 2 / 3, "macro_f1": 2 / 3})
    assert m["per_source"]["s2"] == pytest.approx(
        {"n": 3, "accuracy": 2 / 3, "twin_aware_accuracy": 2 / 3, "macro_f1": (1 + 2 / 3) / 2}
    )
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert {(c["true"], c["pred"], c["count"]) for c in m["top_confusions"]} == {("a", "b", 1), ("c", "a", 1)}


def test_macro_averages_run_over_the_true_classes_only() -> None:
    # digits-only data, one digit taken for a letter: the letter has support 0 and does not dilute macro F1
    m = compute_metrics(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]), None, ["0", "1", "x"])
    assert m["per_class"]["x"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)


def test_compute_metrics_without_probabilities_or_sources() -> None:
    m = compute_metrics(Y_TRUE, Y_TRUE, None, ["a", "b", "c"])
    assert (m["accuracy"], m["macro_f1"], m["per_source"]) == (1.0, 1.0, {})
    assert "roc_auc_macro" not in m


def _png(path: Path, color: tuple[int, int, int], fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), color).save(path, fmt)


@pytest.fixture()
def class_folders(tmp_path: Path) -> Path:
    """`mydata/` with A/ (3 PNG), b/ (2 JPEG + a corrupt .jpg + a .txt), Space/ (1 PNG), del/ and misc/."""
    root = tmp_path / "mydata"
    rng = np.random.default_rng(0)
    for i in range(3):
        _png(root / "A" / f"a{i}.png", tuple(int(v) for v in rng.integers(0, 256, 3)))
    for i in range(2):
        _png(root / "b" / f"b{i}.jpg", tuple(int(v) for v in rng.integers(0, 256, 3)), "JPEG")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (root / "b" / "notes.txt").write_text("hello")
    _png(root / "Space" / "s0.png", (10, 20, 30))
    _png(root / "del" / "d0.png", (1, 2, 3))  # a real class the model was not trained on
    _png(root / "misc" / "m0.png", (1, 2, 3))  # not a class at all
    return root


def test_evaluate_class_folders_scores_readable_images_and_reports_bad_ones(
    class_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = make_checkpoint(tmp_path / "train" / "best.pt")
    (ckpt.parent / "history.csv").write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc,val_macro_f1,lr,seconds\n1,1.3,0.4,1.2,0.5,0.45,0.001,1\n2,1.0,0.6,1.1,0.6,0.55,0.001,1\n"
    )
    out = tmp_path / "eval"
    m = evaluate(ckpt, class_folders, out)
    err = capsys.readouterr().err
    assert m["n"] == 6  # 3 a + 2 b + 1 space
    assert "broken.jpg" in err and "notes.txt" in err
    skipped = {Path(s["path"]).name: s["reason"] for s in m["skipped"]}
    assert set(skipped) == {"broken.jpg", "notes.txt", "del", "misc"}
    assert "no class 'del'" in skipped["del"]
    assert list(m["per_source"]) == ["mydata"] and m["per_source"]["mydata"]["n"] == 6
    assert sum(v["support"] for v in m["per_class"].values()) == 6
    assert m["classes"] == CLASSES and m["params"] > 0 and m["model_bytes"] == ckpt.stat().st_size
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == 6 and saved["accuracy"] == pytest.approx(m["accuracy"])
    assert "training curves" in saved["figures"]
    for name in saved["figures"].values():
        with Image.open(out / name) as im:
            im.verify()
            assert im.format == "PNG" and min(im.size) > 200
    report = (out / "report.md").read_text()
    assert "| accuracy |" in report and "confusion_matrix.png" in report and "| mydata | 6 |" in report


class _ColourPredictor(Predictor):
    """A fake model that reads the class index from the red channel: red = 40 * index + 20."""

    kind = "fake"

    def __init__(self, classes: list[str]) -> None:
        super().__init__(Path("fake.pt"), classes, 8, "fake", None, {})

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        index = np.rint((batch[:, 0, 0, 0] * 255 - 20) / 40).astype(int)
        return np.eye(len(self.classes), dtype=np.float32)[index] * 10


def _run_folder(root: Path, cache_classes: list[str], model_classes: list[str]) -> Path:
    labels = np.arange(12) % len(cache_classes)
    red = np.array([40 * model_classes.index(cache_classes[l]) + 20 if cache_classes[l] in model_classes else 0 for l in labels])
    images = np.zeros((12, 8, 8, 3), dtype=np.uint8)
    images[..., 0] = red[:, None, None]
    n = len(labels)
    Cache(images, labels, cache_classes, np.array(["s1", "s2"] * 6), np.arange(n).astype(str), np.arange(n).astype(str)).save(
        root / "cache.npz"
    )
    save_splits({"train": np.arange(0, 6), "val": np.arange(6, 8), "test": np.arange(8, 12)}, root / "splits.json", 0)
    return root


def test_run_folder_labels_are_mapped_to_the_model_by_class_name(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run", ["b", "space", "a"], ["a", "b", "c", "space"])  # different order
    m = evaluate("fake.pt", run, tmp_path / "out", predictor=_ColourPredictor(["a", "b", "c", "space"]))
    assert m["n"] == 4 and m["split"] == "test"
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    perfect = {"n": 2, "accuracy": 1.0, "twin_aware_accuracy": 1.0, "macro_f1": 1.0}
    assert m["per_source"] == {"s1": perfect, "s2": perfect}
    assert "confident mistakes" not in m["figures"]  # no mistake to show
    m_all = evaluate("fake.pt", run, tmp_path / "out", split="all", predictor=_ColourPredictor(["a", "b", "c", "space"]))
    assert m_all["n"] == 12


def test_labels_unknown_to_the_model_are_an_error(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run", ["a", "b", "nothing"], ["a", "b", "nothing"])
    with pytest.raises(UserError, match=r"class\(es\) \['nothing'\] that the model does not know"):
        evaluate("fake.pt", run, tmp_path / "out", split="all", predictor=_ColourPredictor(["a", "b"]))


def test_default_out_dir(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run", ["a", "b"], ["a", "b"])
    assert default_out_dir("runs/x/train/convkan/best.pt", run) == run / "eval" / "convkan"
    assert default_out_dir("export/convkan_int8.onnx", run) == run / "eval" / "convkan_int8"
    assert default_out_dir("export/convkan_int8.onnx", run, fused=True) == run / "eval" / "fused-convkan_int8"
    assert default_out_dir("best.pt", tmp_path) is None  # a folder of class folders: only where --out says


def test_cli_json_prints_only_the_metrics(
    class_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = make_checkpoint(tmp_path / "m" / "best.pt")
    code = main(["evaluate", "--model", str(ckpt), "--data", str(class_folders), "--out", str(tmp_path / "o"), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    metrics = json.loads(captured.out)
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "n", "per_class",
                "per_source", "model", "model_bytes", "params", "classes"):
        assert key in metrics, key
    assert metrics["n"] == 6 and "broken.jpg" in captured.err


def test_cli_summary_table(class_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_checkpoint(tmp_path / "m" / "best.pt")
    assert main(["evaluate", "--model", str(ckpt), "--data", str(class_folders), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "mydata" in out and "6 images" in out


def test_cli_missing_model_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "missing.pt" in err and err.count("\n") == 1


def test_cli_data_without_class_folders_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_checkpoint(tmp_path / "m" / "best.pt")
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", str(ckpt), "--data", str(tmp_path / "empty")]) == 2
    assert "no class folders in" in capsys.readouterr().err
