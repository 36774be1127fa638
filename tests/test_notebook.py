"""The notebook runs top to bottom in quick mode on the real sources, in a scratch working directory."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from asl_tinyml.config import default_data_root, default_sequences_dir, repo_root

NOTEBOOK = repo_root() / "ASL_TinyML_FastKAN.ipynb"


@pytest.mark.integration
@pytest.mark.slow
def test_notebook_runs_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_root = default_data_root()
    if data_root is None or not data_root.is_dir():
        pytest.skip("no ../shared/datasets (or $ASL_TINYML_DATA): the notebook needs the real sources")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    notebook = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)
    # The kernel inherits this environment; jupyter_client runs a kernelspec whose argv[0] is `python`
    # with this interpreter (sys.executable), so the kernel sees the same installed package.
    monkeypatch.setenv("ASL_TINYML_QUICK", "1")
    monkeypatch.setenv("ASL_TINYML_DATA", str(data_root))
    nb = nbformat.read(notebook, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code_cells), "commit the notebook without outputs"

    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel:', sys.executable)"))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell

    outputs = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "quick=True" in outputs
    assert f"kernel: {sys.executable}" in outputs  # the kernel runs this interpreter, with this package
    assert "no leakage group is in two splits" in outputs
    run = tmp_path / "runs" / "notebook-quick"
    assert (run / "data_merged" / "manifest.csv").exists() and (run / "cache.npz").exists()
    for name in ("class_counts", "image_sizes", "sample_grid", "brightness", "split_sizes", "split_sources"):
        assert (run / "eda" / f"{name}.png").stat().st_size > 10_000, name

    # train + evaluate: both models scored on the whole test split, with a report and figures
    n_test = len(json.loads((run / "splits.json").read_text())["test"])
    sources = {p.name for p in data_root.iterdir() if p.is_dir()}
    for model in ("convkan", "fastkan"):
        metrics = json.loads((run / "eval" / model / "metrics.json").read_text())
        assert metrics["n"] == n_test and 0.0 <= metrics["accuracy"] <= 1.0, model
        assert metrics["params"] > 0 and set(metrics["per_source"]) <= sources, model
        assert "| macro F1 |" in (run / "eval" / model / "report.md").read_text()
    for name in ("training_curves", "confusion_matrix", "pr_curves", "roc_curves"):
        assert (run / "eval" / "convkan" / f"{name}.png").stat().st_size > 10_000, name
    # compress, export, bench: tables and artifacts, the float ONNX agreeing with PyTorch
    assert "| int8 |" in (run / "compress" / "compress.md").read_text()
    exported = json.loads((run / "models" / "export.json").read_text())
    assert exported["checks"]["onnx_float"]["argmax_agreement"] == 1.0
    assert exported["bytes"]["onnx_int8"] < exported["bytes"]["onnx"]
    assert "asl_fastkan_int8.onnx" in (run / "bench" / "bench.md").read_text()
    # predict: six files, each with its top-3 labels
    predicted = [line for line in outputs.splitlines() if "/data_merged/" in line and line.count(" (") == 3]
    assert len(predicted) == 6, predicted

    figures = ["predictions"] + (["landmarks"] if importlib.util.find_spec("mediapipe") else [])
    sequences = default_sequences_dir()
    if sequences is not None and (sequences / "letters.npz").exists():
        figures.append("motion_trajectories")  # section 9: j and z paths against a static letter
    for name in figures:
        assert (run / f"{name}.png").stat().st_size > 10_000, name
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images == 6 + 4 + 1 + len(figures)  # EDA, train/evaluate, compress, predict (+ landmarks, + motion)
