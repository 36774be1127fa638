"""Train a registered pixel model on a run's cache, and its held-out folds (people or sources left out).

This module holds what is particular to pixels: the cached uint8 images batched by index, torchvision v2
augmentation for new rooms and cameras, MixUp, and the empty scenes of `negatives` with a uniform target. The loop itself (AdamW + one-cycle, weight EMA, early
stopping, checkpoints, DistributedDataParallel under `torchrun`) is `engine.fit`, shared with the landmark
and motion models.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DistributedSampler
from torchvision.transforms import v2

from .answers import predict_in_kind
from .config import Config, UserError
from .engine import Batches, DistContext, FitOptions, class_weights, fit, predict, setup_distributed
from .models import count_parameters, create_model
from .negatives import load_negatives
from .preprocess import Cache, load_splits, make_folds, person_ids

AUG_GROUP = 8  # images that share one draw of augmentation parameters (v2 draws once per call)


# --- data and augmentation ---------------------------------------------------------------------------
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


def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of a uint8 NCHW tensor, in eval mode, batch by batch (returned on the CPU)."""
    chunks = [predict(model, uint8_to_float(images[i : i + batch_size]), batch_size) for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


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


def fit_options(cfg: Config) -> FitOptions:
    """The engine's recipe for a pixel model: `cfg`'s optimizer, schedule, EMA and early-stopping keys."""
    return FitOptions(
        epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, pct_start=min(0.3, 2 / cfg.epochs),
        label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay,
        patience=cfg.patience, stop_after=cfg.early_stop_after, seed=cfg.seed,
    )


def empty_target(classes: list[str], nothing: str = "nothing") -> torch.Tensor:
    """The target of an empty scene: the `nothing` class where the model has one (`--include-extra`), else
    uniform over the classes (outlier exposure: no sign at all)."""
    if nothing in classes:
        return nn.functional.one_hot(torch.tensor(classes.index(nothing)), len(classes)).float()
    return torch.full((len(classes),), 1.0 / len(classes))


def add_negatives(x: torch.Tensor, y: torch.Tensor, negatives: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (x, hard or soft targets) with `negatives` (empty scenes, same layout as x) appended, every
    target soft: one-hot for the hard ones, `target` (`empty_target`) for the scenes."""
    soft = y.float() if y.ndim == 2 else nn.functional.one_hot(y, len(target)).float()
    return torch.cat([x, negatives]), torch.cat([soft, target.expand(len(negatives), -1)])


def pixel_batches(
    images: torch.Tensor, labels: torch.Tensor, sampler: DistributedSampler, batch_size: int,
    augment: v2.Compose | None, mixup: v2.MixUp | None, negatives: torch.Tensor | None = None,
    negative_share: float = 0.0, empty: torch.Tensor | None = None,
) -> Batches:
    """An epoch's batches of cached uint8 images: this rank's shuffled share, augmented, as channels-last floats
    (with MixUp, soft targets). With `negatives` (uint8 NCHW empty scenes), each batch also holds
    `negative_share` x its size of them, drawn at random and augmented alike, with the target `empty`
    (`empty_target`; `add_negatives`)."""
    extra = round(negative_share * batch_size) if negatives is not None and len(negatives) and empty is not None else 0

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        draw = torch.Generator().manual_seed(sampler.seed * 100_003 + epoch * 101 + sampler.rank)
        for idx in order.split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples; equal on every rank (the sampler pads)
                continue
            x, n = uint8_to_float(images[idx]), len(idx)
            if extra:
                x = torch.cat([x, uint8_to_float(negatives[torch.randint(len(negatives), (extra,), generator=draw)])])
            if augment is not None:
                x = augment_batch(x, augment)
            x_signs, y = mixup(x[:n], labels[idx]) if mixup is not None else (x[:n], labels[idx])
            x, y = add_negatives(x_signs, y, x[n:], empty) if extra else (x_signs, y)
            yield x.contiguous(memory_format=torch.channels_last), y

    return batches


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
    sampler = DistributedSampler(range(len(y_tr)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
    negatives = load_negatives(run_dir, cfg.image_size) if cfg.negatives > 0 else None
    batches = pixel_batches(
        x_tr, y_tr, sampler, cfg.batch_size, augment_for(cfg), build_mixup(cfg.mixup_alpha, len(classes)),
        None if negatives is None else torch.from_numpy(np.ascontiguousarray(negatives.transpose(0, 3, 1, 2))),
        cfg.negatives, empty_target(classes),
    )

    def meta(epoch: int, metrics: dict[str, float], seconds: float) -> dict[str, Any]:
        return {
            "model": cfg.model, "model_options": options, "classes": classes, "image_size": cfg.image_size,
            "crop": cache.crop, "crop_margin": cfg.crop_margin, "config": cfg.to_dict(), "epoch": epoch, "params": params,
            "train_seconds": round(seconds, 2), "world_size": ctx.world_size, **{k: float(v) for k, v in metrics.items()},
        }

    tracker = _Tracker(use_mlflow and ctx.main, cfg, out_dir, mlflow_uri)
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
    result = fit(
        net, batches, fit_options(cfg), steps_per_epoch=-(-len(sampler) // cfg.batch_size),
        class_weight=class_weights(y_tr.numpy(), len(classes)), val=(uint8_to_float(x_va), y_va), ctx=ctx,
        out_dir=out_dir, meta=meta, resume=resume, on_epoch=tracker.epoch, progress=progress, desc=f"train {cfg.model}",
    )
    summary = {
        "model": cfg.model, "best_val_macro_f1": result.best["val_macro_f1"], "best_epoch": result.best["epoch"],
        "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 1), "params": params,
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
