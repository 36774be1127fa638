"""Speed, memory and size of model files side by side: PyTorch float, ONNX float, ONNX int8 (and a baseline).

Each model is measured in its own fresh Python process (`python -m asl_tinyml.bench`), so one runtime's
memory and thread pools never colour another's figures:

- latency: one image at a time through `Predictor.predict_proba` (uint8 in, probabilities out) with
  one thread; p50/p95 over `runs` calls after `warmup` calls; `model_p50_ms` the model call alone;
- throughput: batches of `batch_size` with every usable core, images per second, end to end and for
  the model alone (`model_throughput_ips`); PyTorch threads each layer, ONNX Runtime runs a slice of the
  batch per core (`inference.OnnxPredictor`), each runtime's faster way;
- rounds: every model is measured `rounds` times, round-robin (each round measures all of them once), and
  each figure is the median over rounds, so a burst of load on a shared machine moves no single row;
- memory: the process's peak resident set (`VmHWM` in /proc/self/status), and how much of it came after
  importing the runtime (`rss_increase_mb`: the model, its session and the buffers of running it).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, UserError, usable_cores
from .progress import bar

COLUMNS = [
    "name",
    "backend",
    "precision",
    "model_name",
    "params",
    "bytes",
    "p50_ms",
    "p95_ms",
    "mean_ms",
    "throughput_ips",
    "model_p50_ms",
    "model_throughput_ips",
    "batch_size",
    "threads_batch",
    "peak_rss_mb",
    "rss_increase_mb",
    "throughput_vs_baseline",
    "model_throughput_vs_baseline",
    "p50_vs_baseline",
    "model",
]
TARGET_P50_MS = 1.0
TARGET_SPEEDUP = 10.0
TARGET_BYTES = 256 * 1024


def onnx_is_quantized(path: str | Path) -> bool:
    """True when the ONNX graph holds QuantizeLinear/DequantizeLinear (or integer) ops."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger") for n in model.graph.node
    )


def _describe(path: Path) -> tuple[str, str]:
    if path.suffix.lower() == ".pt":
        return "pytorch", "float32"
    return "onnxruntime", "int8" if onnx_is_quantized(path) else "float32"


def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status (Linux) in MiB: `VmRSS` now, `VmHWM` the peak of this process image.

    (`ru_maxrss` would not do: Linux carries it over `exec` from the parent that launched the worker.)
    """
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith(key + ":"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def _rate(run: Any, batches: list[np.ndarray], seconds: float) -> float:
    """Images per second of `run(batch)` cycling over `batches` for at least `seconds` (and 3 batches)."""
    run(batches[0])  # warm-up
    done, k, t0 = 0, 0, time.perf_counter()
    while k < 3 or time.perf_counter() - t0 < seconds:
        batch = batches[k % len(batches)]
        run(batch)
        done, k = done + len(batch), k + 1
    return done / (time.perf_counter() - t0)


def _percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(round(q * (len(sorted_ms) - 1))))]


def _measure(
    path: str, images: np.ndarray, runs: int, warmup: int, batch_size: int, seconds: float, threads: int
) -> dict[str, Any]:
    """In a fresh process: latency (1 thread), throughput (`threads`), memory of one model file.

    Each speed is taken end to end (uint8 NHWC in, probabilities out: `predict_proba`) and for the model
    alone (its input prepared beforehand: float NCHW, or uint8 NHWC for an export that scales in-graph;
    logits out), so the pre/post-processing outside the model is visible.
    """
    if path.endswith(".pt"):
        import torch  # noqa: F401  (the runtime's own memory is the baseline)
    else:
        import onnxruntime  # noqa: F401
    from .inference import load_predictor

    rss0 = _rss_mb()
    single = load_predictor(path, threads=1)
    prepared = [single._prepare(images[i : i + 1]) for i in range(min(len(images), 64))]  # noqa: SLF001
    for i in range(warmup):
        single.predict_proba(images[i % len(images)])
        single._logits(prepared[i % len(prepared)])  # noqa: SLF001  (the model call alone)
    times, model_times = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        single.predict_proba(images[i % len(images)])
        t1 = time.perf_counter()
        single._logits(prepared[i % len(prepared)])  # noqa: SLF001
        times.append((t1 - t0) * 1000)
        model_times.append((time.perf_counter() - t1) * 1000)
    del single
    batched = load_predictor(path, threads=threads, batch_size=batch_size)
    batches = [images[i : i + batch_size] for i in range(0, len(images) - batch_size + 1, batch_size)] or [images]
    throughput = _rate(batched.predict_proba, batches, seconds)
    model_throughput = _rate(batched._logits, [batched._prepare(b) for b in batches[:4]], seconds)  # noqa: SLF001
    times.sort()
    model_times.sort()
    return {
        "model_name": batched.model_name,
        "params": batched.params,
        "p50_ms": statistics.median(times),
        "p95_ms": _percentile(times, 0.95),
        "mean_ms": statistics.fmean(times),
        "model_p50_ms": statistics.median(model_times),
        "throughput_ips": throughput,
        "model_throughput_ips": model_throughput,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_increase_mb": _peak_rss_mb() - rss0,
    }


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Figure by figure, the median of one model's rounds (non-numbers from the first)."""
    out = dict(results[0])
    for key, value in out.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in results)
    return out


def _run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one model in a fresh interpreter; its JSON result is the last line of its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run(
        [sys.executable, "-m", "asl_tinyml.bench", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"benchmarking {spec['path']} failed: {tail}")
    return json.loads(lines[-1])


def derive_models(checkpoint: str | Path, out_dir: str | Path, calibration: np.ndarray) -> list[Path]:
    """A checkpoint and its float and int8 ONNX exports (written to `out_dir`)."""
    from .export import export_onnx, quantize_onnx

    out_dir = Path(out_dir)
    stem = Path(checkpoint).stem
    float_onnx = export_onnx(checkpoint, out_dir / f"{stem}.onnx")
    return [Path(checkpoint), float_onnx, quantize_onnx(float_onnx, out_dir / f"{stem}_int8.onnx", calibration)]


def bench(
    models: Sequence[str | Path] | str | Path,
    images: np.ndarray,
    *,
    baseline: str | Path | None = None,
    out_dir: str | Path | None = None,
    runs: int = 300,
    warmup: int = 30,
    batch_size: int = 64,
    seconds: float = 3.0,
    threads: int | None = None,
    calibration: np.ndarray | None = None,
    rounds: int = Config.bench_rounds,
) -> list[dict[str, Any]]:
    """Benchmark model files (a lone `.pt` checkpoint also gets its float/int8 ONNX exports) and an
    optional `baseline` checkpoint in one run; write `bench.csv`/`bench.md` to `out_dir` when given.

    `images`: uint8 NHWC at the models' input size. Returns one row per model (see COLUMNS).
    """
    paths = [Path(models)] if isinstance(models, (str, Path)) else [Path(m) for m in models]
    if not paths:
        raise UserError("no model to benchmark; pass --model PATH")
    for p in paths + ([Path(baseline)] if baseline else []):
        if not p.is_file():
            raise UserError(f"model file {p} not found; train one or run `asl-tinyml export` first")
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) == 0:
        raise UserError(
            f"benchmark images must be a non-empty uint8 (N, S, S, 3) array, got {images.dtype} {images.shape}"
        )
    tmp = None
    if len(paths) == 1 and paths[0].suffix.lower() == ".pt":
        target = Path(out_dir) / "models" if out_dir else Path(tmp := tempfile.mkdtemp(prefix="asl-bench-"))
        paths = derive_models(paths[0], target, calibration if calibration is not None else images[:300])
    threads = threads or usable_cores()
    entries = ([("baseline", Path(baseline))] if baseline else []) + [(p.name, p) for p in paths]
    measured: list[list[dict[str, Any]]] = [[] for _ in entries]
    with tempfile.TemporaryDirectory(prefix="asl-bench-") as work:
        np.save(Path(work) / "images.npy", images)
        spec = {"images": str(Path(work) / "images.npy"), "runs": runs, "warmup": warmup, "batch_size": batch_size,
                "seconds": seconds, "threads": threads}
        todo = [(i, path) for _ in range(max(1, rounds)) for i, (_, path) in enumerate(entries)]  # round-robin
        for i, path in bar(todo, desc="bench", unit="model", leave=False):
            measured[i].append(_run_worker({**spec, "path": str(path)}))
    rows: list[dict[str, Any]] = []
    for (name, path), results in zip(entries, measured):
        backend, precision = _describe(path)
        rows.append({
            "name": name, "backend": backend, "precision": precision, "bytes": path.stat().st_size,
            "batch_size": batch_size, "threads_batch": threads, "model": str(path), **_median(results),
        })
    base = rows[0] if baseline else None
    for row in rows:
        row["throughput_vs_baseline"] = row["throughput_ips"] / base["throughput_ips"] if base else None
        row["model_throughput_vs_baseline"] = (
            row["model_throughput_ips"] / base["model_throughput_ips"] if base else None
        )
        row["p50_vs_baseline"] = base["p50_ms"] / row["p50_ms"] if base else None
    rows = [{k: row.get(k) for k in COLUMNS} for row in rows]
    if out_dir is not None:
        write_bench(rows, out_dir)
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def machine_info() -> dict[str, Any]:
    """CPU, cores, load and library versions, for the record next to the figures."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_1min"] = round(os.getloadavg()[0], 2)
    return info


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's bars for the int8 ONNX model, each with its measured figure and PASS/FAIL."""
    lines = []
    for row in (r for r in rows if r["precision"] == "int8"):
        lines.append(
            f"- {row['name']}: single-image p50 {row['p50_ms']:.3f} ms (bar <= {TARGET_P50_MS} ms, one thread): "
            + ("PASS" if row["p50_ms"] <= TARGET_P50_MS else "FAIL")
        )
        lines.append(
            f"- {row['name']}: {row['bytes'] / 1024:.1f} KiB on disk (bar <= {TARGET_BYTES // 1024} KiB): "
            + ("PASS" if row["bytes"] <= TARGET_BYTES else "FAIL")
        )
        for key, what in (("throughput_vs_baseline", "end to end"), ("model_throughput_vs_baseline", "model alone")):
            if row[key] is not None:
                lines.append(
                    f"- {row['name']}: batch throughput ({what}) {row[key]:.1f}x the baseline "
                    f"(bar >= {TARGET_SPEEDUP:.0f}x): " + ("PASS" if row[key] >= TARGET_SPEEDUP else "FAIL")
                )
    return lines


def write_bench(rows: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """`bench.csv` (every column), `bench.md` (`bench_markdown`) and `bench.json` in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    info = machine_info()
    (out_dir / "bench.md").write_text(bench_markdown(rows, info))
    (out_dir / "bench.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return out_dir / "bench.csv", out_dir / "bench.md"


def bench_markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The benchmark as markdown: a table of `rows`, the machine (`machine_info`), the bars."""
    head = [
        "model",
        "backend",
        "precision",
        "KiB",
        "p50 ms (1 thread)",
        "p95 ms",
        "model p50 ms",
        "images/s (batch)",
        "x baseline",
        "model images/s",
        "model x baseline",
        "peak RSS MB",
        "RSS increase MB",
    ]
    lines = [
        "# Benchmark",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, load {info.get('load_1min', '-')} (1 min); "
        f"Python {info['python']}, torch {info.get('torch', '-')}, onnxruntime {info['onnxruntime']}.",
        "",
        "Latency: one image per call on one thread; throughput: batches of "
        f"{rows[0]['batch_size'] if rows else '-'} on {rows[0]['threads_batch'] if rows else '-'} threads. "
        "Plain columns are end to end (uint8 NHWC in, probabilities out, as `predict` runs); `model` columns "
        "time the runtime alone on its input prepared beforehand (float NCHW for PyTorch; the ONNX exports take "
        "uint8 NHWC and scale in-graph). Each figure is the median of the rounds, run round-robin. Memory: "
        "peak resident set of a fresh process per model, and its increase after importing the runtime. Other "
        "processes share the cores (see the load): compare rows of one run, not runs.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            r["name"],
            r["backend"],
            r["precision"],
            _fmt(r["bytes"] / 1024, 1),
            _fmt(r["p50_ms"]),
            _fmt(r["p95_ms"]),
            _fmt(r["model_p50_ms"]),
            _fmt(r["throughput_ips"], 0),
            _fmt(r["throughput_vs_baseline"], 1),
            _fmt(r["model_throughput_ips"], 0),
            _fmt(r["model_throughput_vs_baseline"], 1),
            _fmt(r["peak_rss_mb"], 0),
            _fmt(r["rss_increase_mb"], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    bars = checks(rows)
    if bars:
        lines += ["", "Bars from the issue (accuracy is in compress.md):", *bars]
    return "\n".join(lines) + "\n"


def bench_images(run_dir: str | Path | None, image_size: int, n: int = 512, seed: int = 0) -> np.ndarray:
    """Test-split images of a run (when it has a cache), else `n` seeded random uint8 images."""
    if run_dir is not None and (Path(run_dir) / "cache.npz").exists():
        from .preprocess import Cache, load_splits

        cache = Cache.load(run_dir)
        if cache.images.shape[1] == image_size:
            return cache.images[load_splits(run_dir, len(cache))["test"]][:n]
    return np.random.default_rng(seed).integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)


if __name__ == "__main__":  # the worker: python -m asl_tinyml.bench '{"path": ..., "images": ..., ...}'
    _spec = json.loads(sys.argv[1])
    _images = np.load(_spec.pop("images"))
    print(json.dumps(_measure(_spec.pop("path"), _images, **_spec)))
