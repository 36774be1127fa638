"""compress: pruning reaches the asked sparsity, zeros pay off only under gzip, int8 shrinks the file."""

from __future__ import annotations

import csv
from pathlib import Path

import onnx
import pytest
import torch
from torchvision.transforms import v2

from asl_tinyml.compress import (
    COLUMNS,
    compress,
    global_prune,
    gzip_size,
    prunable,
    qat_available,
    quantization_aware_finetune,
    run_augment,
    sparsity,
)
from asl_tinyml.config import UserError
from asl_tinyml.inference import load_predictor
from asl_tinyml.models import load_checkpoint, save_checkpoint
from asl_tinyml.preprocess import Cache, load_splits

from .tiny_model import CLASSES, make_run, trained_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("compress") / "tiny.pt")


def test_global_prune_reaches_the_sparsity_and_zeros_compress(ckpt: Path, tmp_path: Path) -> None:
    model, meta = load_checkpoint(ckpt)
    assert sparsity(model) < 0.01
    global_prune(model, 0.7)
    for module, name in prunable(model):
        torch.nn.utils.prune.remove(module, name)
    assert sparsity(model) == pytest.approx(0.7, abs=0.01)
    save_checkpoint(tmp_path / "pruned.pt", model, meta)
    raw, packed = (tmp_path / "pruned.pt").stat().st_size, gzip_size(tmp_path / "pruned.pt")
    assert raw == pytest.approx(ckpt.stat().st_size, rel=0.02)  # dense storage: zeros cost as much as weights
    assert packed < 0.7 * gzip_size(ckpt)


def test_fine_tunes_augment_as_the_checkpoint_was_trained(ckpt: Path) -> None:
    _, meta = load_checkpoint(ckpt)  # saved without a `config`, as checkpoints of other tools may be
    assert "config" not in meta
    older = run_augment(meta).transforms  # the defaults
    assert next(t for t in older if isinstance(t, v2.ColorJitter)).brightness == pytest.approx((0.7, 1.3))
    assert run_augment({**meta, "config": {"augment": False}}) is None
    tuned = run_augment({**meta, "config": {"color_jitter": 0.1, "rand_augment": 4, "a_removed_key": 0}})
    assert next(t for t in tuned.transforms if isinstance(t, v2.ColorJitter)).brightness == pytest.approx((0.9, 1.1))
    assert any(isinstance(t, v2.RandAugment) for t in tuned.transforms)


def test_compress_table(ckpt: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    rows = compress(ckpt, run, tmp_path / "out", sparsities=[0.0, 0.5], finetune_epochs=1, qat=False, progress=False)
    names = [r["name"] for r in rows]
    assert names[:5] == ["original", "pruned0", "pruned50", "onnx_float", "int8"]
    by = {r["name"]: r for r in rows}
    assert by["original"]["macro_f1"] >= 0.9 and by["original"]["reduction"] == 1.0  # seeds 0-9: test accuracy 1.0
    assert by["int8"]["bytes"] < 0.7 * by["onnx_float"]["bytes"] and by["int8"]["bytes"] < by["original"]["bytes"]
    assert by["int8"]["macro_f1"] >= by["original"]["macro_f1"] - 0.1
    assert by["pruned50"]["gzip_bytes"] < by["original"]["gzip_bytes"]
    assert sparsity(load_checkpoint(by["pruned50"]["path"])[0]) == pytest.approx(0.5, abs=0.01)
    assert sparsity(load_checkpoint(by["pruned0"]["path"])[0]) < 0.01  # the fine-tune-only control
    for r in rows:
        assert set(COLUMNS) <= set(r) and Path(r["path"]).is_file()
        assert r["reduction"] == pytest.approx(by["original"]["bytes"] / r["bytes"])
    with open(tmp_path / "out" / "compress.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["name"] for t in table] == names and list(table[0]) == COLUMNS
    assert "| int8 |" in (tmp_path / "out" / "compress.md").read_text()
    assert (tmp_path / "out" / "compress.png").stat().st_size > 0
    assert (tmp_path / "out" / "eval" / "int8" / "metrics.json").is_file()  # scored by evaluate, same split


def test_compress_rejects_bad_sparsity_and_foreign_run(ckpt: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    with pytest.raises(UserError, match="sparsities must lie"):
        compress(ckpt, run, tmp_path / "out", sparsities=[1.5])
    model, meta = load_checkpoint(ckpt)
    save_checkpoint(tmp_path / "other.pt", model, {**meta, "classes": ["w", "x", "y", "z"]})
    with pytest.raises(UserError, match="not trained on"):
        compress(tmp_path / "other.pt", run, tmp_path / "out", sparsities=[0.5])


@pytest.mark.slow
@pytest.mark.skipif(not qat_available(), reason="torchao (quantization-aware training) is not installed")
def test_quantization_aware_finetune_exports_a_working_int8_onnx(ckpt: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    cache, splits = Cache.load(run), load_splits(run)
    path = quantization_aware_finetune(
        ckpt, cache, splits["train"], splits["val"], tmp_path / "qat.onnx", epochs=1, progress=False
    )
    model = onnx.load(path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    predictor = load_predictor(path)
    assert predictor.classes == CLASSES
    test = splits["test"]
    assert (predictor.predict(cache.images[test]) == cache.labels[test]).mean() >= 0.9
