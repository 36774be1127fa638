"""Compression study: global magnitude pruning (with a short fine-tune) and int8 quantization, one table.

Every row is scored by `evaluate.evaluate` on the same split of the same run, and sized on disk both raw
and gzip-compressed: unstructured pruning leaves dense tensors full of zeros, so it saves bytes only
under compression (or sparse storage), which the raw column shows honestly.
"""

from __future__ import annotations

import copy
import csv
import gzip
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DistributedSampler
from torchvision.transforms import v2

from .config import Config, UserError
from .engine import FitOptions, class_weights, fit
from .engine import evaluate as validate
from .evaluate import evaluate
from .export import FLOAT_CONVS, calibration_images, export_onnx, quantize_onnx
from .inference import check_model_kind
from .models import load_checkpoint, save_checkpoint
from .preprocess import Cache, load_splits
from .progress import bar
from .train import augment_for, cache_tensors, pixel_batches, uint8_to_float

SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.9)  # 0: the same fine-tune without pruning (the control)
COLUMNS = [
    "name",
    "method",
    "sparsity",
    "bytes",
    "gzip_bytes",
    "reduction",
    "gzip_reduction",
    "accuracy",
    "macro_f1",
    "delta_macro_f1",
    "path",
]


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs magnitude pruning acts on: every Conv2d and Linear weight."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over the prunable weights."""
    weights = [getattr(m, name) for m, name in prunable(model)]
    total = sum(w.numel() for w in weights)
    return float(sum((w == 0).sum().item() for w in weights) / max(total, 1))


def global_prune(model: nn.Module, amount: float) -> nn.Module:
    """Zero the `amount` fraction of prunable weights with the smallest |w|, ranked across all layers
    (`torch.nn.utils.prune.global_unstructured`); masks stay attached for fine-tuning."""
    prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured, amount=amount)
    return model


def run_augment(meta: dict[str, Any]) -> v2.Compose | None:
    """The augmentation a checkpoint was trained with, from the config it records (defaults if it has none)."""
    return augment_for(Config.from_dict(meta.get("config") or {}))


def finetune(
    model: nn.Module,
    cache: Cache,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    epochs: int = 3,
    lr: float = 3e-4,
    batch_size: int = 64,
    seed: int = 0,
    transform: v2.Compose | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """A short AdamW + cosine fine-tune (`engine.fit`) on the train split (pruning masks or fake-quant
    observers kept), with `transform` as augmentation (`run_augment(meta)`: the one the checkpoint was trained
    with; None: none); keeps the weights of the best validation macro-F1, the starting ones included, and
    returns their validation metrics."""
    x_tr, y_tr = cache_tensors(cache, train_idx)
    x_va, y_va = cache_tensors(cache, val_idx)
    weights = class_weights(y_tr.numpy(), len(cache.classes))
    val = (uint8_to_float(x_va), y_va)
    start = validate(model, *val, nn.CrossEntropyLoss(weight=weights))
    start_state = copy.deepcopy(model.state_dict())
    sampler = DistributedSampler(range(len(y_tr)), num_replicas=1, rank=0, shuffle=True, seed=seed)
    opts = FitOptions(epochs=epochs, lr=lr, schedule="cosine", grad_clip=1.0, seed=seed)
    result = fit(model, pixel_batches(x_tr, y_tr, sampler, batch_size, transform, None), opts,
                 steps_per_epoch=-(-len(y_tr) // batch_size), class_weight=weights, val=val, progress=progress,
                 desc="fine-tune")
    if result.best["val_macro_f1"] <= start["macro_f1"]:
        model.load_state_dict(start_state)
        return start
    return {"loss": result.best["val_loss"], "acc": result.best["val_acc"], "macro_f1": result.best["val_macro_f1"]}


def qat_available() -> bool:
    """True when torchao's PT2E quantization (needed for quantization-aware training) is importable."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e  # noqa: F401
    except Exception:  # ImportError, or a torchao built for another torch
        return False
    return True


def quantization_aware_finetune(
    checkpoint: str | Path,
    cache: Cache,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    out_path: str | Path,
    *,
    epochs: int = 3,
    lr: float = 3e-4,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Quantization-aware fine-tuning (torchao PT2E, x86 config: per-channel int8 weights, uint8
    activations) of a checkpoint, exported as a QDQ int8 ONNX model with the usual metadata."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from .export import save_onnx

    model, meta = load_checkpoint(checkpoint)
    size = int(meta["image_size"])
    example = (torch.rand(2, 3, size, size),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(model.train(), example, dynamic_shapes=({0: batch},)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(graph, quantizer)

    allow_exported_model_train_eval(prepared)  # .train()/.eval() switch its dropout and batch-norm ops
    finetune(
        prepared, cache, train_idx, val_idx, epochs=epochs, lr=lr, seed=seed, transform=run_augment(meta),
        progress=progress,
    )
    move_exported_model_to_eval(prepared)
    quantized = move_exported_model_to_eval(convert_pt2e(prepared))
    allow_exported_model_train_eval(quantized)
    quantized.eval()  # the flag the ONNX exporter checks; the ops were switched above
    return save_onnx(quantized, meta, out_path, opset=None, minify=True)


def gzip_size(path: str | Path) -> int:
    """Bytes of the file after gzip -9 (how sparse zeros pay off in storage or download)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def _row(
    name: str, method: str, amount: float, path: Path, metrics: dict[str, Any], ref: dict[str, Any] | None
) -> dict[str, Any]:
    size, packed = path.stat().st_size, gzip_size(path)
    row = {
        "name": name,
        "method": method,
        "sparsity": round(amount, 4),
        "bytes": size,
        "gzip_bytes": packed,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "path": str(path),
    }
    base = ref or row
    row["reduction"] = base["bytes"] / size
    row["gzip_reduction"] = base["bytes"] / packed
    row["delta_macro_f1"] = row["macro_f1"] - base["macro_f1"]
    return row


def _float_note(float_convs: int) -> str:
    return f"; first {float_convs} convs and the head's element-wise ops float" if float_convs else "; head's element-wise ops float"


def compress(
    checkpoint: str | Path,
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    sparsities: Sequence[float] = SPARSITIES,
    finetune_epochs: int = 3,
    lr: float = 3e-4,
    split: str = "test",
    threads: int = 1,
    seed: int = 0,
    tolerance: float = 0.005,
    qat: bool = True,
    progress: bool = True,
    float_convs: int = FLOAT_CONVS,
) -> list[dict[str, Any]]:
    """Original, pruned (each sparsity, fine-tuned) and int8 rows, all evaluated on `run_dir`'s `split`.

    Writes pruned checkpoints, ONNX files, per-row eval folders, `compress.csv`, `compress.md` and
    `compress.png` to `out_dir` (default `run_dir/compress`). When int8 post-training quantization loses
    more than `tolerance` macro-F1 and `qat`, a `qat_int8` row fine-tunes with fake quantization (needs
    torchao) for the same epochs and learning rate as `pruned0`, the float fine-tune without pruning that
    every fine-tuned row should be compared with. An extra `pruned+int8` row quantizes the sparsest pruned
    model within `tolerance` of the original, if any.
    """
    checkpoint, run_dir = Path(checkpoint), Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "compress"
    if any(not 0 <= s < 1 for s in sparsities):
        raise UserError(f"sparsities must lie in [0, 1), got {list(sparsities)}")
    model, meta = load_checkpoint(checkpoint)
    check_model_kind(checkpoint, meta.get("input"), "pixel", "`asl-tinyml compress`")
    cache = Cache.load(run_dir)
    if list(cache.classes) != list(meta["classes"]) or cache.images.shape[1] != int(meta["image_size"]):
        raise UserError(
            f"{checkpoint} was not trained on {run_dir} (classes or image size differ); pass the run it came from"
        )
    splits = load_splits(run_dir, len(cache))
    torch.set_num_threads(max(1, threads))
    out.mkdir(parents=True, exist_ok=True)

    def score(path: Path, name: str) -> dict[str, Any]:
        return evaluate(path, run_dir, out / "eval" / name, split=split, threads=threads)

    transform = run_augment(meta)
    rows = [_row("original", "float32", 0.0, checkpoint, score(checkpoint, "original"), None)]
    ref = rows[0]
    for amount in bar(sorted(sparsities), progress=progress, desc="prune", unit="level"):
        name = f"pruned{round(amount * 100)}"
        pruned, _ = load_checkpoint(checkpoint)
        if amount > 0:
            global_prune(pruned, amount)
        val = finetune(
            pruned, cache, splits["train"], splits["val"], epochs=finetune_epochs, lr=lr, seed=seed,
            transform=transform, progress=progress,
        )
        for module, param in prunable(pruned) if amount > 0 else []:
            prune.remove(module, param)  # bake the mask in: plain dense weights with zeros
        path = out / f"{name}.pt"
        save_checkpoint(path, pruned, {**meta, "pruned_sparsity": sparsity(pruned), "pruned_val": val})
        method = (
            f"global magnitude {amount:.0%} + {finetune_epochs} ep fine-tune"
            if amount
            else f"{finetune_epochs} ep fine-tune, no pruning (control)"
        )
        rows.append(_row(name, method, amount, path, score(path, name), ref))
    calib = calibration_images(run_dir, seed=seed)
    float_onnx = export_onnx(checkpoint, out / "original.onnx")
    rows.append(_row("onnx_float", "ONNX float32", 0.0, float_onnx, score(float_onnx, "onnx_float"), ref))
    int8 = quantize_onnx(float_onnx, out / "int8.onnx", calib, float_convs=float_convs)
    method = f"ONNX static int8 (QDQ, per-channel{_float_note(float_convs)})"
    rows.append(_row("int8", method, 0.0, int8, score(int8, "int8"), ref))
    int8_row = rows[-1]
    if qat and int8_row["delta_macro_f1"] < -tolerance:
        if qat_available():
            qat_path = quantization_aware_finetune(
                checkpoint,
                cache,
                splits["train"],
                splits["val"],
                out / "qat_int8.onnx",
                epochs=finetune_epochs,
                lr=lr,
                seed=seed,
                progress=progress,
            )
            rows.append(
                _row(
                    "qat_int8",
                    f"quantization-aware {finetune_epochs} ep fine-tune + int8",
                    0.0,
                    qat_path,
                    score(qat_path, "qat_int8"),
                    ref,
                )
            )
        else:
            print(
                "int8 PTQ lost more than the tolerance, but torchao (for QAT) is not installed; skipping QAT",
                file=sys.stderr,
            )
    good = [
        r for r in rows if r["name"].startswith("pruned") and r["sparsity"] > 0 and r["delta_macro_f1"] >= -tolerance
    ]
    if good:
        best = max(good, key=lambda r: r["sparsity"])
        pruned_int8 = quantize_onnx(
            export_onnx(best["path"], out / f"{best['name']}.onnx"), out / f"{best['name']}_int8.onnx", calib,
            float_convs=float_convs,
        )
        rows.append(
            _row(
                f"{best['name']}+int8",
                f"{best['name']} then int8",
                best["sparsity"],
                pruned_int8,
                score(pruned_int8, f"{best['name']}_int8"),
                ref,
            )
        )
    write_table(rows, out, tolerance)
    return rows


def write_table(rows: list[dict[str, Any]], out_dir: str | Path, tolerance: float = 0.005) -> tuple[Path, Path]:
    """`compress.csv`, `compress.md` (table + notes) and `compress.png` (macro-F1 and size per row)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "compress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in COLUMNS} for r in rows)
    head = [
        "row",
        "method",
        "sparsity",
        "KiB",
        "gzip KiB",
        "x smaller",
        "x smaller (gzip)",
        "accuracy",
        "macro-F1",
        "Δ macro-F1",
    ]
    lines = ["# Compression", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    r["method"],
                    f"{r['sparsity']:.0%}",
                    f"{r['bytes'] / 1024:.1f}",
                    f"{r['gzip_bytes'] / 1024:.1f}",
                    f"{r['reduction']:.2f}",
                    f"{r['gzip_reduction']:.2f}",
                    f"{r['accuracy']:.4f}",
                    f"{r['macro_f1']:.4f}",
                    f"{r['delta_macro_f1']:+.4f}",
                ]
            )
            + " |"
        )
    int8 = next((r for r in rows if r["name"] == "int8"), None)
    lines += [
        "",
        "Sizes are of the files on disk (`.pt` checkpoints, `.onnx` models); the reduction columns divide the",
        "original checkpoint's raw bytes by each row's raw or gzip bytes. Unstructured pruning keeps dense tensors,",
        "so its raw size does not change: the zeros pay off only under compression or a sparse format.",
        "Fine-tuning alone can move macro-F1 (more so for a checkpoint that had not converged): compare the",
        "pruned and QAT rows with `pruned0`, the same fine-tune without pruning.",
    ]
    if int8 is not None:
        verdict = "within" if int8["delta_macro_f1"] >= -tolerance else "NOT within"
        lines.append(
            f"int8 post-training quantization is {verdict} {tolerance} macro-F1 of the float model "
            f"({int8['delta_macro_f1']:+.4f})."
        )
    (out_dir / "compress.md").write_text("\n".join(lines) + "\n")
    plot_compression(rows, out_dir / "compress.png")
    return out_dir / "compress.csv", out_dir / "compress.md"


def plot_compression(rows: list[dict[str, Any]], path: Path) -> Path:
    """Macro-F1 against gzip-compressed size, one labelled point per row (PNG, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in rows:
        ax.scatter(r["gzip_bytes"] / 1024, r["macro_f1"], color="tab:red" if "int8" in r["name"] else "tab:blue")
        ax.annotate(
            r["name"], (r["gzip_bytes"] / 1024, r["macro_f1"]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    ax.set_xlabel("gzip-compressed size (KiB)")
    ax.set_ylabel("macro-F1 (test)")
    ax.set_title("Compression: accuracy against size")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
