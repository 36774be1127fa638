"""One training loop for every model: pixels (`train`), hand landmarks (`landmarks`), landmark sequences
(`motion`) and the compression fine-tunes (`compress`).

In the spirit of torchvision's classification reference: `train_one_epoch` runs the batches of one epoch,
`evaluate` scores a model on held tensors, and `fit` chains them with class-weighted cross-entropy, AdamW and
a one-cycle (or cosine) schedule, an exponential moving average of the weights, selection and early stopping
on validation macro-F1, checkpoints that resume, and DistributedDataParallel under `torchrun`. What differs
between models, their data and augmentation, comes in as `batches`: a function of the epoch that yields
`(inputs, targets)`.
"""

from __future__ import annotations

import copy
import csv
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .config import UserError
from .progress import bar

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> (inputs, targets) batches
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds"]


# --- distributed context -----------------------------------------------------------------------------
@dataclass
class DistContext:
    """Where this process stands: world size, rank, device; `main` is the one that writes files."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we called init_process_group and must destroy it

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistContext:
    """Join the torchrun process group when `WORLD_SIZE` > 1 (nccl on GPUs, gloo on CPU); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local % max(torch.cuda.device_count(), 1)}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        owns = True
    return DistContext(world, rank, local, device, owns)


# --- pieces ------------------------------------------------------------------------------------------
def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights `n / (k * count_c)` over the k classes present; absent classes get 0."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def ema_model(net: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `net`'s weights and BatchNorm statistics (torch's `AveragedModel`),
    updated after every optimizer step; `None` when `decay` is 0.

    The decay warms up as `min(decay, (1 + n) / (10 + n))` after n updates, so short runs average over
    their few steps instead of staying near the initial weights.
    """
    if decay <= 0:
        return None

    def average(avg: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg + (current - avg) * (1.0 - d)

    return AveragedModel(net, avg_fn=average, use_buffers=True)


@dataclass(frozen=True)
class FitOptions:
    """The recipe `fit` runs: optimizer, schedule, regularisation, selection and stopping."""

    epochs: int
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"  # "onecycle" (warm-up then anneal) or "cosine" (anneal from `lr`)
    pct_start: float = 0.3  # share of the one-cycle steps spent warming up
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0: none
    ema_decay: float = 0.0  # > 0: validate, select and return a weight average (`ema_model`)
    patience: int = 0  # stop after this many epochs without a better validation macro-F1; 0: never
    stop_after: float = 0.0  # ... but not before this share of `epochs` has run
    seed: int = 0


def should_stop(stale: int, epoch: int, opts: FitOptions) -> bool:
    """Early stopping: `patience` epochs without a better validation macro-F1, once `epoch` has reached
    `stop_after` of the run."""
    return opts.patience > 0 and stale >= opts.patience and epoch >= opts.stop_after * opts.epochs


def make_optimizer(net: nn.Module, opts: FitOptions, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters and its per-step learning-rate schedule."""
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=opts.lr, weight_decay=opts.weight_decay)
    total = max(1, opts.epochs * max(1, steps_per_epoch))
    if opts.schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if opts.schedule != "onecycle":
        raise ValueError(f"unknown schedule {opts.schedule!r}; use 'onecycle' or 'cosine'")
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opts.lr, total_steps=total, pct_start=opts.pct_start)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    ema: AveragedModel | None = None,
    grad_clip: float = 0.0,
    device: torch.device | None = None,
    progress: bool = False,
    desc: str = "epoch",
) -> torch.Tensor:
    """One pass over `batches`; returns float64 sums (loss x n, correct, n). Soft targets (MixUp) count the
    label that dominates each blend as correct."""
    model.train()
    sums = torch.zeros(3, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    batch_bar = bar(batches, progress=progress, desc=desc, leave=False)
    for x, target in batch_bar:
        if device is not None:
            x, target = x.to(device, non_blocking=True), target.to(device, non_blocking=True)
        logits = model(x)
        loss = loss_fn(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model)
        hard = target if target.ndim == 1 else target.argmax(1)
        sums += torch.tensor([loss.item() * len(hard), (logits.argmax(1) == hard).sum().item(), len(hard)], dtype=torch.float64)
        batch_bar.set_postfix(loss=f"{loss.item():.3f}")
    return sums


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of `inputs` in eval mode, batch by batch, on the model's device (returned on the CPU)."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(inputs[i : i + batch_size].to(device)).cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module | None = None,
             batch_size: int = 256) -> dict[str, float]:
    """Loss (with `loss_fn`), accuracy and macro-F1 (scikit-learn) of a model on prepared inputs."""
    logits = predict(model, inputs, batch_size)
    pred, y = logits.argmax(1).numpy(), labels.numpy()
    out = {"acc": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0))}
    if loss_fn is not None:
        out = {"loss": float(loss_fn(logits, labels))} | out
    return out


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """`history.csv`: one row per epoch (`HISTORY_COLUMNS`, less the validation ones when there is none)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path, upto_epoch: int) -> list[dict[str, float]]:
    """The rows of `history.csv` up to `upto_epoch` (a resumed run continues them)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) if k != "epoch" else int(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return [r for r in rows if r["epoch"] <= upto_epoch]


# --- the loop ----------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What `fit` returns: the selected weights (in eval mode), the per-epoch history and the best epoch."""

    model: nn.Module
    history: list[dict[str, float]]
    best: dict[str, float]
    epochs_run: int
    seconds: float


def fit(
    net: nn.Module,
    batches: Batches,
    opts: FitOptions,
    *,
    steps_per_epoch: int,
    class_weight: torch.Tensor | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    ctx: DistContext | None = None,
    out_dir: Path | None = None,
    meta: Callable[[int, dict[str, float], float], dict[str, Any]] | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Train `net` for `opts.epochs` epochs of `batches(epoch)`.

    With `val` (inputs, labels), each epoch is validated and the weights (the EMA's when `opts.ema_decay` > 0)
    of the best validation macro-F1 are returned; without it, the last ones. With `out_dir` (and `meta`, the
    checkpoint's metadata for an epoch), the main process writes `best.pt`, `last.pt` (optimizer, schedule and
    EMA state, for `resume`) and `history.csv`. Under `torchrun` (`ctx.distributed`) `net` is wrapped in
    DistributedDataParallel; `batches` must then yield this rank's share.
    """
    from .models import save_checkpoint

    ctx = ctx or DistContext()
    model: nn.Module = net
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    weight = class_weight.to(ctx.device) if class_weight is not None else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=opts.label_smoothing)
    eval_loss = nn.CrossEntropyLoss(weight=class_weight)  # validation loss on the CPU, without smoothing
    optimizer, scheduler = make_optimizer(net, opts, steps_per_epoch)

    start, best, stale, history, spent = 1, {"val_macro_f1": -1.0, "epoch": 0}, 0, [], 0.0
    ckpt: dict[str, Any] = {}
    if resume:
        last = Path(out_dir or ".") / "last.pt"
        if out_dir is None or not last.exists():
            raise UserError(f"cannot resume: {last} not found; train without --resume first")
        ckpt = torch.load(last, map_location=ctx.device, weights_only=True)
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, best, stale = int(ckpt["epoch"]) + 1, dict(ckpt["best"]), int(ckpt["stale"])
        spent = float(ckpt["meta"].get("train_seconds", 0.0))
        history = read_history(out_dir / "history.csv", start - 1) if ctx.main else []
    ema = ema_model(net, opts.ema_decay)  # after a resume's weights: a checkpoint without an average restarts it
    if ema is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    selected = ema.module if ema is not None else net  # the weights validated, saved as best.pt and returned
    best_state: dict[str, torch.Tensor] | None = None
    if resume and val is not None and (out_dir / "best.pt").exists():
        best_state = torch.load(out_dir / "best.pt", map_location=ctx.device, weights_only=True)["state_dict"]
    if ctx.main and out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter() - spent
    epochs = bar(range(start, opts.epochs + 1), progress=progress and ctx.main, desc=desc, unit="epoch")
    last_epoch = start - 1
    for epoch in epochs:
        if should_stop(stale, epoch - 1, opts):  # a resumed run that had already stopped
            break
        last_epoch = epoch
        e0 = time.perf_counter()
        torch.manual_seed(opts.seed * 100_003 + epoch * 1_009 + ctx.rank)  # augmentation/dropout draws, resumable
        sums = train_one_epoch(model, batches(epoch), loss_fn, optimizer, scheduler, ema=ema, grad_clip=opts.grad_clip,
                               device=ctx.device, progress=progress and ctx.main, desc=f"epoch {epoch}")
        if ctx.distributed:
            dist.all_reduce(sums)
            for buffer in [*net.buffers(), *(ema.buffers() if ema is not None else [])]:
                dist.broadcast(buffer, src=0)  # BatchNorm statistics drift per rank: every rank keeps rank 0's
        n = max(sums[2].item(), 1)
        row: dict[str, float] = {"epoch": epoch, "train_loss": sums[0].item() / n, "train_acc": sums[1].item() / n}
        improved = val is None
        if val is not None:
            v = evaluate(selected, val[0], val[1], eval_loss)
            row |= {"val_loss": v["loss"], "val_acc": v["acc"], "val_macro_f1": v["macro_f1"]}
            improved = v["macro_f1"] > best["val_macro_f1"]
            if improved:
                best = {"val_macro_f1": v["macro_f1"], "val_acc": v["acc"], "val_loss": v["loss"], "epoch": epoch}
                best_state = copy.deepcopy(selected.state_dict())
                stale = 0
            else:
                stale += 1
        else:
            best = {"epoch": epoch}
        row |= {"lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - e0, 3)}
        stop = torch.tensor([int(should_stop(stale, epoch, opts))])
        if ctx.distributed:
            dist.broadcast(stop, src=0)  # rank 0 decides, so no rank waits on another that has stopped
        if ctx.main:
            history.append(row)
            if out_dir is not None and meta is not None:
                metrics = {k: v for k, v in row.items() if k.startswith("val_")}
                if improved:
                    save_checkpoint(out_dir / "best.pt", selected, meta(epoch, metrics, time.perf_counter() - t0))
                save_checkpoint(
                    out_dir / "last.pt", net, meta(epoch, metrics, time.perf_counter() - t0),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    epoch=epoch, best=best, stale=stale, **({"ema": ema.state_dict()} if ema is not None else {}),
                )
                write_history(out_dir / "history.csv", history)
            if on_epoch is not None:
                on_epoch(row)
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", **({"val_f1": f"{best['val_macro_f1']:.3f}"} if val is not None else {}))
        if stop.item():
            break
    if best_state is not None:
        selected.load_state_dict(best_state)
    return FitResult(selected.eval(), history, best, last_epoch, time.perf_counter() - t0)
