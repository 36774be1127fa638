"""Train a registered model on a run's cache: class-weighted cross-entropy, AdamW + OneCycle, weight EMA,
early stopping.

The same `train` runs as one process or under `torchrun` (DistributedDataParallel; gloo on CPU, nccl on GPU):
the environment variables `WORLD_SIZE`/`RANK`/`LOCAL_RANK` decide. The small uint8 cache stays in memory as a
tensor and is batched by index (no DataLoader workers: on a couple of cores they only add copies).
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DistributedSampler
from torchvision.transforms import v2
from tqdm import tqdm

from .answers import predict_in_kind
from .config import Config, UserError
from .models import count_parameters, create_model, save_checkpoint
from .preprocess import Cache, load_splits, make_folds, person_ids

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds"]
AUG_GROUP = 8  # images that share one draw of augmentation parameters (v2 draws once per call)


# --- distributed context -----------------------------------------------------------------------------
@dataclass
class DistContext:
    """Where this process stands: world size, rank, device; `main` is the one that writes files."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
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


def build_augment(
    jitter: float = Config.color_jitter,
    erasing: float = Config.random_erasing,
    rand_augment: int = Config.rand_augment,
    hue: float = Config.hue,
    blur: float = Config.blur,
    noise: float = Config.noise,
    jpeg: float = Config.jpeg,
) -> v2.Compose:
    """Augmentation that keeps a sign readable and varies what a new room and camera change: rotation,
    shift and scale; brightness/contrast/saturation (factors in [1 - jitter, 1 + jitter]) and hue; with
    probabilities `blur`, `noise` and `jpeg` a Gaussian blur, sensor noise and JPEG compression; with
    `rand_augment` > 0 two RandAugment ops of that magnitude (0-30) and, with probability `erasing`, one
    erased rectangle. All torchvision v2 transforms on float images in [0, 1].

    No horizontal flip: a mirrored hand is a left hand, and some signs differ only by orientation.
    """
    to_uint8, to_float = v2.ToDtype(torch.uint8, scale=True), v2.ToDtype(torch.float32, scale=True)
    return v2.Compose([
        v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.8, 1.2)),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=hue),
        *([v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=blur)] if blur > 0 else []),
        *([v2.RandomApply([v2.GaussianNoise(sigma=0.04)], p=noise)] if noise > 0 else []),
        *([v2.RandomApply([to_uint8, v2.JPEG((30, 90)), to_float], p=jpeg)] if jpeg > 0 else []),
        *([v2.RandAugment(num_ops=2, magnitude=rand_augment)] if rand_augment > 0 else []),
        *([v2.RandomErasing(p=erasing, scale=(0.02, 0.2), value=0.5)] if erasing > 0 else []),
    ])


def augment_for(cfg: Config) -> v2.Compose | None:
    """The training augmentation `cfg` asks for (`build_augment` with its knobs), or `None` when `augment` is off."""
    if not cfg.augment:
        return None
    return build_augment(cfg.color_jitter, cfg.random_erasing, cfg.rand_augment, cfg.hue, cfg.blur, cfg.noise, cfg.jpeg)


def build_mixup(alpha: float, num_classes: int) -> v2.MixUp | None:
    """torchvision's MixUp: each image blended with its batch neighbour by a Beta(alpha, alpha) weight, and
    its label turned into the same blend of one-hot targets; `None` when `alpha` is 0."""
    return v2.MixUp(alpha=alpha, num_classes=num_classes) if alpha > 0 else None


def augment_batch(x: torch.Tensor, transform: v2.Compose, group: int = AUG_GROUP) -> torch.Tensor:
    """Apply `transform` to a float NCHW batch, one random draw per group of `group` images."""
    return torch.cat([transform(chunk) for chunk in x.split(group)]).clamp_(0.0, 1.0)


PRETRAINED_MODELS = {"efficientnet_lite0"}  # start from ImageNet weights (rebuilt from checkpoints without them)


def model_options(name: str, image_size: int) -> dict[str, Any]:
    """Constructor options recorded in the checkpoint: every registered model takes the image side."""
    return {"image_size": int(image_size)} | ({"pretrained": True} if name in PRETRAINED_MODELS else {})


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32 in [0, 1]."""
    return images.float().div_(255.0)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: torch.device | None = None) -> torch.Tensor:
    """Logits of a uint8 NCHW tensor, in eval mode, batch by batch (returned on the CPU)."""
    model.eval()
    device = device or next(model.parameters()).device
    out = [model(uint8_to_float(images[i : i + batch_size].to(device))).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module, batch_size: int = 256) -> dict[str, float]:
    """Loss, accuracy and macro-F1 (scikit-learn) of a model on uint8 NCHW images."""
    logits = predict_logits(model, images, batch_size)
    pred = logits.argmax(1).numpy()
    y = labels.numpy()
    return {
        "loss": float(loss_fn(logits, labels)),
        "acc": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
    }


def _write_history(path: Path, rows: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _read_history(path: Path, upto_epoch: int) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) if k != "epoch" else int(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return [r for r in rows if r["epoch"] <= upto_epoch]


def cache_tensors(cache: Cache, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NCHW images and int64 labels of some cache rows (contiguous copies)."""
    images = torch.from_numpy(np.ascontiguousarray(cache.images[index].transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(cache.labels[index].astype(np.int64))


class _Tracker:
    """Optional MLflow logging; a no-op unless asked for and importable."""

    def __init__(self, enabled: bool, cfg: Config, out_dir: Path, tracking_uri: str | None) -> None:
        self.mlflow = None
        if not enabled:
            return
        try:
            import mlflow  # type: ignore[import-not-found]
        except ImportError as exc:
            raise UserError("MLflow tracking was asked for but mlflow is not installed; `pip install mlflow` or drop --mlflow") from exc
        mlflow.set_tracking_uri(tracking_uri or (Path.cwd() / "mlruns").as_uri())
        mlflow.set_experiment("asl-tinyml")
        mlflow.start_run(run_name=f"{cfg.model}:{out_dir}")
        mlflow.log_params({k: v for k, v in cfg.to_dict().items() if not isinstance(v, list)})
        self.mlflow = mlflow

    def epoch(self, row: dict[str, float]) -> None:
        if self.mlflow:
            self.mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def finish(self, summary: dict[str, Any], out_dir: Path) -> None:
        if self.mlflow:
            self.mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            self.mlflow.log_artifacts(str(out_dir))
            self.mlflow.end_run()


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


# --- training ----------------------------------------------------------------------------------------
def should_stop(stale: int, epoch: int, cfg: Config) -> bool:
    """Early stopping: `patience` epochs without a better validation macro-F1, once `epoch` has reached
    `early_stop_after` of the run. The one-cycle learning rate is high until late in the run and validation
    F1 swings with it; the best checkpoints come from the annealing at the end. Seeds 1 and 2 of the default
    recipe, stopped at any time (`early_stop_after=0`), ended at epochs 30 and 37 with test macro-F1 0.910
    and 0.911; after 80% of the epochs seed 2 still stopped at 40; all 50 epochs gave 0.927 and 0.930 (best
    epochs 45 and 46). Hence the default 1.0: every epoch runs and `best.pt` is the best one (README)."""
    return stale >= cfg.patience and epoch >= cfg.early_stop_after * cfg.epochs


def train(
    cfg: Config,
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    resume: bool = False,
    train_index: np.ndarray | None = None,
    val_index: np.ndarray | None = None,
    mlflow: bool = False,
    mlflow_uri: str | None = None,
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `cfg.model` on `run_dir/cache.npz` (train split, or `train_index`), select on validation macro-F1.

    Writes `best.pt`, `last.pt` (with optimizer/scheduler/EMA state for `resume`), `history.csv` and
    `config.yaml` to `out_dir` (default `run_dir/train/<model>`); returns a summary dict. With `ema_decay` > 0
    the validation columns and `best.pt` are those of the weight average (`ema_model`); `last.pt` holds the
    trained weights.
    `options` are extra model constructor options (recorded in the checkpoint), e.g. `{"hidden": 32}`.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "train" / cfg.model
    ctx = setup_distributed()
    try:
        return _train(cfg, run_dir, out_dir, ctx, resume, train_index, val_index, mlflow, mlflow_uri, progress, options)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _train(
    cfg: Config, run_dir: Path, out_dir: Path, ctx: DistContext, resume: bool,
    train_index: np.ndarray | None, val_index: np.ndarray | None, use_mlflow: bool, mlflow_uri: str | None, progress: bool,
    extra_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    cache = Cache.load(run_dir)
    splits = load_splits(run_dir, len(cache))
    tr_idx = np.asarray(splits["train"] if train_index is None else train_index, dtype=np.int64)
    va_idx = np.asarray(splits["val"] if val_index is None else val_index, dtype=np.int64)
    if len(tr_idx) == 0 or len(va_idx) == 0:
        raise UserError(f"empty train or validation split in {run_dir}; re-run `asl-tinyml preprocess` on more images")
    if cache.images.shape[1] != cfg.image_size:
        cfg = cfg.replace(image_size=int(cache.images.shape[1]))  # the cache decides the input size
    classes = list(cache.classes)
    x_tr, y_tr = cache_tensors(cache, tr_idx)
    x_va, y_va = cache_tensors(cache, va_idx)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    options = model_options(cfg.model, cfg.image_size) | dict(extra_options or {})
    net = create_model(cfg.model, len(classes), **options).to(ctx.device)
    net = net.to(memory_format=torch.channels_last)  # ~2x faster convolutions on CPU; same weights and results
    params = count_parameters(net)
    model: nn.Module = net
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    weights = class_weights(y_tr.numpy(), len(classes))
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(ctx.device), label_smoothing=cfg.label_smoothing)
    eval_loss = nn.CrossEntropyLoss(weight=weights)  # validation loss on the CPU, without smoothing
    sampler = DistributedSampler(range(len(y_tr)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
    steps = max(1, (len(sampler) + cfg.batch_size - 1) // cfg.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=min(0.3, 2 / cfg.epochs))
    augment = augment_for(cfg)
    mixup = build_mixup(cfg.mixup_alpha, len(classes))

    start, best, stale, history, spent = 1, {"val_macro_f1": -1.0, "epoch": 0}, 0, [], 0.0
    ckpt: dict[str, Any] = {}
    if resume:
        last = out_dir / "last.pt"
        if not last.exists():
            raise UserError(f"cannot resume: {last} not found; train without --resume first")
        ckpt = torch.load(last, map_location=ctx.device, weights_only=True)
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, best, stale = int(ckpt["epoch"]) + 1, dict(ckpt["best"]), int(ckpt["stale"])
        spent = float(ckpt["meta"].get("train_seconds", 0.0))
        history = _read_history(out_dir / "history.csv", start - 1) if ctx.main else []
    ema = ema_model(net, cfg.ema_decay)  # after a resume's weights: a checkpoint without an average restarts it
    if ema is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    selected = ema.module if ema is not None else net  # the weights validated and saved as best.pt

    def meta(epoch: int, metrics: dict[str, float], seconds: float) -> dict[str, Any]:
        return {
            "model": cfg.model, "model_options": options, "classes": classes, "image_size": cfg.image_size,
            "crop": cache.crop, "crop_margin": cfg.crop_margin, "config": cfg.to_dict(), "epoch": epoch, "params": params, "train_seconds": round(seconds, 2),
            "world_size": ctx.world_size, **{k: float(v) for k, v in metrics.items()},
        }

    tracker = _Tracker(use_mlflow and ctx.main, cfg, out_dir, mlflow_uri)
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
    t0 = time.perf_counter() - spent
    epochs = tqdm(range(start, cfg.epochs + 1), desc=f"train {cfg.model}", unit="epoch", disable=not (progress and ctx.main))
    last_epoch = start - 1
    for epoch in epochs:
        if should_stop(stale, epoch - 1, cfg):  # a resumed run that had already stopped
            break
        last_epoch = epoch
        e0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch * 1_009 + ctx.rank)  # augmentation/dropout draws, resumable
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
        batches = tqdm(order.split(cfg.batch_size), desc=f"epoch {epoch}", leave=False, disable=not (progress and ctx.main))
        for idx in batches:
            if len(idx) < 2:  # BatchNorm needs two samples; equal on every rank (the sampler pads)
                continue
            x = uint8_to_float(x_tr[idx])
            if augment is not None:
                x = augment_batch(x, augment)
            x = x.to(ctx.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y_tr[idx].to(ctx.device, non_blocking=True)
            target = y
            if mixup is not None:
                x, target = mixup(x, y)  # soft targets: the loss weighs each class's share by its class weight
                y = target.argmax(1)  # accuracy counts the label that dominates each blend
            logits = model(x)
            loss = loss_fn(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(net)
            sums += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
            batches.set_postfix(loss=f"{loss.item():.3f}")
        if ctx.distributed:
            dist.all_reduce(sums)
            for buffer in [*net.buffers(), *(ema.buffers() if ema is not None else [])]:
                dist.broadcast(buffer, src=0)  # BatchNorm statistics drift per rank: every rank keeps rank 0's
        val = evaluate(selected, x_va, y_va, eval_loss)
        row = {
            "epoch": epoch, "train_loss": sums[0].item() / max(sums[2].item(), 1), "train_acc": sums[1].item() / max(sums[2].item(), 1),
            "val_loss": val["loss"], "val_acc": val["acc"], "val_macro_f1": val["macro_f1"],
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - e0, 3),
        }
        improved = val["macro_f1"] > best["val_macro_f1"]
        if improved:
            best = {"val_macro_f1": val["macro_f1"], "val_acc": val["acc"], "val_loss": val["loss"], "epoch": epoch}
            stale = 0
        else:
            stale += 1
        stop = torch.tensor([int(should_stop(stale, epoch, cfg))])
        if ctx.distributed:
            dist.broadcast(stop, src=0)  # rank 0 decides, so no rank waits on another that has stopped
        if ctx.main:
            history.append(row)
            metrics = {f"val_{k}": v for k, v in val.items()}
            if improved:
                save_checkpoint(out_dir / "best.pt", selected, meta(epoch, metrics, time.perf_counter() - t0))
            save_checkpoint(
                out_dir / "last.pt", net, meta(epoch, metrics, time.perf_counter() - t0),
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                epoch=epoch, best=best, stale=stale, **({"ema": ema.state_dict()} if ema is not None else {}),
            )
            _write_history(out_dir / "history.csv", history)
            tracker.epoch(row)
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val_f1=f"{val['macro_f1']:.3f}", best=best["epoch"])
        if stop.item():
            break
    seconds = time.perf_counter() - t0
    summary = {
        "model": cfg.model, "best_val_macro_f1": best["val_macro_f1"], "best_epoch": best["epoch"],
        "epochs_run": last_epoch, "train_seconds": round(seconds, 1), "params": params,
        "checkpoint": str(out_dir / "best.pt"), "world_size": ctx.world_size,
    }
    if ctx.main:
        tracker.finish(summary, out_dir)
    return summary


# --- held-out folds: unseen signers, unseen sources ----------------------------------------------------------
FOLD_DIRS = {"person": "lopo", "source": "loso"}  # RUN/train/<model>-<suffix>: leave people / sources out
FOLDS_NAME = "folds"


def folds_dir(run_dir: Path, model: str, kind: str) -> Path:
    """Where the fold models and `folds.json` of `model` live: `RUN/train/<model>-lopo` (people) or `-loso`."""
    return Path(run_dir) / "train" / f"{model}-{FOLD_DIRS[kind]}"


def write_folds(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """`folds.json` and `folds.csv`: one row per held-out fold."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{FOLDS_NAME}.json").write_text(json.dumps(rows, indent=2))
    with open(out_dir / f"{FOLDS_NAME}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def per_person(persons: np.ndarray, correct: np.ndarray) -> dict[str, dict[str, float]]:
    """{person: {n, accuracy}} over the rows of a fold's test set whose person is known."""
    persons = np.asarray(persons).astype(str)
    return {str(p): {"n": int((persons == p).sum()), "accuracy": float(correct[persons == p].mean())}
            for p in np.unique(persons) if p}


def train_folds(
    cfg: Config, run_dir: Path, kind: str = "person", out_dir: Path | None = None, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Train `cfg.model` once per held-out fold (`kind` "person": people left out, `preprocess.person_folds`;
    "source": each source, on the classes the others share), then score the held-out images: accuracy,
    macro-F1 and accuracy per held-out person.

    Writes one training folder per fold plus `folds.json`/`folds.csv` to `out_dir` (default `folds_dir`).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else folds_dir(run_dir, cfg.model, kind)
    cache = Cache.load(run_dir)
    folds = make_folds(kind, cache.labels, cache.groups, cache.sources, load_splits(run_dir, len(cache)), cfg.person_folds)
    persons = person_ids(cache.groups, cache.sources)
    results: list[dict[str, Any]] = []
    for fold in folds:
        summary = train(cfg, run_dir, out_dir / fold.name, train_index=fold.train, val_index=fold.val, progress=progress)
        from .models import load_checkpoint  # local: the checkpoint just written

        model, _ = load_checkpoint(summary["checkpoint"])
        x, y = cache_tensors(cache, fold.test)
        logits = predict_logits(model, x).numpy()
        pred = logits.argmax(1)
        in_kind = predict_in_kind(logits, y.numpy(), cache.classes) == y.numpy()
        results.append({
            "fold": fold.name, "kind": kind, "n_images": int(len(fold.test)), "n_train": int(len(fold.train)),
            "accuracy": float(accuracy_score(y.numpy(), pred)),
            "macro_f1": float(f1_score(y.numpy(), pred, labels=np.unique(y.numpy()), average="macro", zero_division=0)),
            "accuracy_in_kind": float(in_kind.mean()),
            "per_person": per_person(persons[fold.test], pred == y.numpy()),
            "per_person_in_kind": per_person(persons[fold.test], in_kind),
            "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"],
        })
    write_folds(results, out_dir)
    return results
