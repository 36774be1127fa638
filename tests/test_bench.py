"""bench: one row per model with the documented columns; files written (no timing assertions)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from asl_tinyml.bench import COLUMNS, bench, bench_images, onnx_is_quantized
from asl_tinyml.config import UserError
from asl_tinyml.export import export_onnx, quantize_onnx

from .tiny_model import SIZE, color_images, trained_checkpoint


def test_bench_rows_and_files(tmp_path: Path) -> None:
    ckpt = trained_checkpoint(tmp_path / "tiny.pt")
    float_onnx = export_onnx(ckpt, tmp_path / "tiny.onnx")
    int8 = quantize_onnx(float_onnx, tmp_path / "tiny_int8.onnx", color_images(8)[0])
    images = bench_images(None, SIZE, n=16)
    rows = bench(
        [int8],
        images,
        baseline=ckpt,
        out_dir=tmp_path / "bench",
        runs=5,
        warmup=1,
        batch_size=8,
        seconds=0.05,
        threads=1,
        rounds=2,
    )
    assert [r["name"] for r in rows] == ["baseline", "tiny_int8.onnx"]
    assert [(r["backend"], r["precision"]) for r in rows] == [("pytorch", "float32"), ("onnxruntime", "int8")]
    assert not onnx_is_quantized(float_onnx) and onnx_is_quantized(int8)
    for r, path in zip(rows, [ckpt, int8]):
        assert list(r) == COLUMNS and r["bytes"] == path.stat().st_size
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["throughput_ips"] > 0
        assert r["model_p50_ms"] > 0 and r["model_throughput_ips"] > 0
        assert r["peak_rss_mb"] >= r["rss_increase_mb"] > 0
    assert rows[0]["throughput_vs_baseline"] == 1.0
    with open(tmp_path / "bench" / "bench.csv") as f:
        assert [row["name"] for row in csv.DictReader(f)] == [r["name"] for r in rows]
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert "| tiny_int8.onnx | onnxruntime | int8 |" in md and "p50" in md


def test_rounds_are_reduced_to_their_median() -> None:
    from asl_tinyml.bench import _median

    rounds = [{"p50_ms": 1.0, "throughput_ips": 900.0, "model_name": "convkan", "params": 7},
              {"p50_ms": 9.0, "throughput_ips": 100.0, "model_name": "convkan", "params": 7},
              {"p50_ms": 2.0, "throughput_ips": 1000.0, "model_name": "convkan", "params": 7}]
    assert _median(rounds) == {"p50_ms": 2.0, "throughput_ips": 900.0, "model_name": "convkan", "params": 7}


def test_bench_images_fall_back_to_random_and_bad_input_is_an_error(tmp_path: Path) -> None:
    images = bench_images(tmp_path, 12, n=5)
    assert images.shape == (5, 12, 12, 3) and images.dtype == np.uint8
    with pytest.raises(UserError, match="not found"):
        bench([tmp_path / "missing.onnx"], images)
