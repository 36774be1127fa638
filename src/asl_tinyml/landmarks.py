"""The landmark model: a run's landmark cache, `landmark_fastkan` training, its folds and its export.

`landmarks.npz` in a run folder holds one row per `cache.npz` row, in the same order, with a `found`
mask: images without a detected hand are counted, never dropped silently. Detection and features are
in `hands.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from .answers import predict_in_kind
from .config import UserError
from .engine import write_history
from .hands import LEFT, NUM_LANDMARKS, RIGHT, FeatureRecipe, attempts_for, cached_hands, canonical_points
from .inference import LANDMARK_INPUT, check_model_kind
from .merge import file_sha256, read_manifest
from .preprocess import Cache, Fold, grouped_split, load_splits
from .progress import bar
from .sources import HandSet, keypoint_hands, sequence_hands

LANDMARKS_NAME = "landmarks.npz"


# --- the landmark cache of a run ---------------------------------------------------------------------
@dataclass
class LandmarkCache:
    """Landmarks aligned row for row with a run's `cache.npz` (same `paths`, same order)."""

    landmarks: np.ndarray  # (N, 21, 3) float32, units of the image's longer side
    world: np.ndarray  # (N, 21, 3) float32, metres
    handedness: np.ndarray  # (N,) int8: RIGHT, LEFT or NO_HAND
    found: np.ndarray  # (N,) bool
    attempt: np.ndarray  # (N,) int8 index into `attempts`, -1 when no hand was found
    paths: np.ndarray  # (N,) str, relative to the merged folder
    attempts: list[tuple[float, int]]
    seconds_per_image: float

    def __len__(self) -> int:
        return len(self.found)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path, landmarks=self.landmarks, world=self.world, handedness=self.handedness, found=self.found,
            attempt=self.attempt, paths=self.paths, attempts=np.array(self.attempts, dtype=np.float32),
            seconds_per_image=np.float64(self.seconds_per_image),
        )

    @classmethod
    def load(cls, run_dir: str | Path, cache: Cache | None = None) -> LandmarkCache:
        """Load `run_dir/landmarks.npz`; with `cache`, check that both hold the same paths in the same order."""
        path = Path(run_dir)
        path = path / LANDMARKS_NAME if path.is_dir() else path
        if not path.exists():
            raise UserError(f"no landmark cache at {path}; run `asl-tinyml landmarks --run {path.parent}` first")
        with np.load(path, allow_pickle=False) as z:
            out = cls(
                z["landmarks"], z["world"], z["handedness"], z["found"], z["attempt"], z["paths"],
                [(float(f), int(c)) for f, c in z["attempts"]], float(z["seconds_per_image"]),
            )
        if cache is not None and not np.array_equal(out.paths, cache.paths):
            raise UserError(
                f"{path} does not match the run's cache.npz (rebuilt since?); run `asl-tinyml landmarks` again"
            )
        return out


def build_landmark_cache(
    merged_dir: str | Path,
    run_dir: str | Path,
    *,
    hand_cache: str | Path | None = None,
    pad_fraction: float = 0.5,
    retry: bool = True,
    progress: bool = True,
) -> Path:
    """Hand landmarks of the original merged image of every `cache.npz` row into `run_dir/landmarks.npz`;
    images that `hand_cache` already holds (by content hash) are not detected again."""
    merged_dir, run_dir = Path(merged_dir), Path(run_dir)
    cache = Cache.load(run_dir)
    missing = [str(p) for p in cache.paths if not (merged_dir / str(p)).is_file()]
    if missing:
        raise UserError(
            f"{merged_dir / missing[0]} not found; pass the merged folder the run was built from (--merged)"
        )
    sha = {r["merged_path"]: r["sha256"] for r in read_manifest(merged_dir)}
    files = [merged_dir / str(p) for p in cache.paths]
    table = cached_hands(
        files, [sha.get(str(p)) or file_sha256(f) for p, f in zip(cache.paths, files)], hand_cache,
        attempts=attempts_for(pad_fraction, retry), progress=progress,
    )
    out = LandmarkCache(
        table.landmarks, table.world, table.handedness, table.found, table.attempt, cache.paths, table.attempts,
        float(np.mean(table.seconds)) if len(table) else 0.0,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    out.save(run_dir / LANDMARKS_NAME)
    return run_dir / LANDMARKS_NAME


def detection_rates(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Detection rates of a run's landmark cache: tables `by_source` and `by_class` (images, found, rate)."""
    cache = Cache.load(run_dir)
    lm = LandmarkCache.load(run_dir, cache)
    frame = pd.DataFrame({
        "source": cache.sources.astype(str), "class": np.array(cache.classes)[cache.labels], "found": lm.found,
    })
    tables = {}
    for key in ("source", "class"):
        table = frame.groupby(key, sort=False)["found"].agg(images="size", found="sum")
        table.loc["all"] = [len(frame), int(frame["found"].sum())]
        table["rate"] = (table["found"] / table["images"]).round(4)
        tables[f"by_{key}"] = table
    return tables


def format_detection_report(run_dir: str | Path) -> str:
    """A printable summary: detection rate per source, the worst classes, and time per image."""
    tables = detection_rates(run_dir)
    lm = LandmarkCache.load(run_dir)
    by_class = tables["by_class"].drop(index="all").sort_values("rate")
    lines = [
        f"hand found in {int(lm.found.sum())}/{len(lm)} images ({lm.found.mean():.1%}); "
        f"{lm.seconds_per_image * 1000:.0f} ms per image; attempts {lm.attempts}",
        "per source:", tables["by_source"].to_string(),
        "lowest classes:", by_class.head(8).to_string(),
    ]
    return "\n".join(lines)


# --- training ----------------------------------------------------------------------------------------
@dataclass
class LandmarkData:
    """A run's landmark set: canonical points for every cache row, with labels, sources, groups and `found`,
    then the rows of the landmark-only sources (`sources.HandSet`s), split by group like the images."""

    points: np.ndarray  # (N, 21, 3) canonical (zeros where no hand was found)
    labels: np.ndarray
    classes: list[str]
    sources: np.ndarray
    groups: np.ndarray
    found: np.ndarray
    splits: dict[str, np.ndarray]
    n_images: int  # rows [0, n_images) are the run's cache rows; the rest come from landmark-only sources


def extra_hands(classes: list[str], sequences: str | Path | None = None, keypoints: str | Path | None = None) -> list[HandSet]:
    """The landmark-only sources that exist among `sequences` (a `letters.npz`) and `keypoints` (the keypoint
    collection's `letters.npz`), restricted to `classes`."""
    out = []
    if keypoints is not None and Path(keypoints).exists():
        out.append(keypoint_hands(keypoints, classes))
    if sequences is not None and Path(sequences).exists():
        out.append(sequence_hands(sequences, classes))
    return out


def load_landmark_data(run_dir: str | Path, mirror: bool = False, sequences: str | Path | None = None,
                       keypoints: str | Path | None = None) -> LandmarkData:
    """`cache.npz` + `landmarks.npz` + `splits.json` of a run, landmarks canonicalised (flipped by MediaPipe's
    label only with `mirror`); its first `n_images` rows are the cache's. The landmark-only sources
    (`extra_hands`) follow, each split by group (`preprocess.grouped_split`)."""
    cache = Cache.load(run_dir)
    lm = LandmarkCache.load(run_dir, cache)
    points = canonical_points(lm.landmarks, lm.handedness, mirror)
    points[~lm.found] = 0.0
    n = len(cache)
    parts = [HandSet(points, lm.found, cache.labels, cache.groups.astype(str), cache.sources.astype(str))]
    splits = {k: [v] for k, v in load_splits(run_dir, n).items()}
    offset = n
    for extra in extra_hands(cache.classes, sequences, keypoints):
        index = {c: i for i, c in enumerate(cache.classes)}
        labels = np.array([index[c] for c in extra.labels], np.int64)
        for k, v in grouped_split(labels, extra.groups, extra.sources).items():
            splits[k].append(v + offset)
        parts.append(HandSet(extra.points, extra.found, labels, extra.groups, extra.sources))
        offset += len(extra)
    every = HandSet.concat(parts)
    return LandmarkData(every.points, every.labels.astype(np.int64), cache.classes, every.sources, every.groups,
                        every.found, {k: np.concatenate(v) for k, v in splits.items()}, n)


def sampling_units(groups: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """What `balanced_rows` caps: the person where one is known (`preprocess.person_ids`: a signer, the alphabet
    source's one person, a keypoint repository, a session), else the group (a video segment, a digits block)."""
    from .preprocess import person_ids

    persons = person_ids(groups, sources)
    return np.where(persons != "", persons, np.asarray(groups).astype(str))


def sampling_cells(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) int: one id per (sampling unit, class) pair, the cells `balanced_rows` caps."""
    pairs = np.char.add(np.char.add(np.asarray(groups).astype(str), "|"), np.asarray(labels).astype(str))
    return np.unique(pairs, return_inverse=True)[1]


def balanced_rows(rows: np.ndarray, cells: np.ndarray, cap: int, generator: torch.Generator) -> torch.Tensor:
    """One epoch's rows, shuffled: at most `cap` of each cell (`sampling_cells`), drawn afresh each call, so
    one large group (a repository of 20,000 rows) weighs like a few signers rather than drowning them."""
    rows = np.asarray(rows)
    order = torch.randperm(len(rows), generator=generator).numpy()
    rank = np.empty(len(rows), np.int64)  # each row's place within its cell in this epoch's order
    rank[order] = pd.Series(cells[rows][order]).groupby(cells[rows][order]).cumcount().to_numpy()
    chosen = rows[rank < cap]
    return torch.as_tensor(chosen[torch.randperm(len(chosen), generator=generator).numpy()], dtype=torch.long)


def epoch_labels(rows: np.ndarray, cells: np.ndarray, labels: np.ndarray, cap: int) -> np.ndarray:
    """The labels of one `balanced_rows` epoch (their counts, in cell order): its size and class weights."""
    rows = np.asarray(rows)
    _, first, counts = np.unique(cells[rows], return_index=True, return_counts=True)
    return np.repeat(labels[rows][first], np.minimum(counts, cap))


def _rotation(axis: int, angle: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotations about coordinate `axis` by `angle` (N,) radians."""
    c, s = torch.cos(angle), torch.sin(angle)
    m = torch.zeros(len(angle), 3, 3)
    i, j = [a for a in range(3) if a != axis]
    m[:, axis, axis] = 1.0
    m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
    return m


def augment_points(
    points: torch.Tensor, generator: torch.Generator, degrees: float = 35.0, roll: float = 20.0,
    scale: float = 0.15, noise: float = 0.03,
) -> torch.Tensor:
    """A new viewpoint of canonical points (N, 21, 3): turns about the vertical and horizontal axes up to
    `degrees`, in-plane up to `roll`, each axis scaled by up to +-`scale` (camera aspect, foreshortening),
    and per-joint jitter of `noise` palm sizes."""
    n = len(points)

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * limit

    rot = _rotation(1, uniform(np.radians(degrees))) @ _rotation(0, uniform(np.radians(degrees))) @ _rotation(
        2, uniform(np.radians(roll)))
    stretch = 1 + (torch.rand(n, 1, 3, generator=generator) * 2 - 1) * scale
    out = (points @ rot.transpose(1, 2)) * stretch
    return out + noise * torch.randn(out.shape, generator=generator)


def train_landmark_model(
    points: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    num_classes: int,
    groups: np.ndarray | None = None,
    group_cap: int = 30,
    recipe: FeatureRecipe = FeatureRecipe(),
    hidden: int = 24,
    num_grids: int = 6,
    epochs: int = 40,
    batch_size: int = 256,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    patience: int = 12,
    augment: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train `landmark_fastkan` on canonical points with `engine.fit` (class-weighted cross-entropy, AdamW,
    one-cycle), each batch turned and stretched by `augment_points`. With `groups`, each epoch takes at most
    `group_cap` rows of each (group, class) (`balanced_rows`). Keeps the weights of the epoch with the best
    validation macro-F1 (stopping after `patience` epochs without one); returns (model in eval mode, history)."""
    from .engine import FitOptions, class_weights, fit
    from .models import create_model

    torch.manual_seed(seed)
    pts = torch.as_tensor(points, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    model = create_model("landmark_fastkan", num_classes, in_features=recipe.size, hidden=hidden, num_grids=num_grids,
                         mirror_dims=recipe.mirror_dims or None)
    train_np = np.asarray(train_idx)
    train_t = torch.as_tensor(train_np, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)  # one stream over the epochs: orders and augmentation

    cells = sampling_cells(groups, labels) if groups is not None else None  # once, not every epoch

    def epoch_rows() -> torch.Tensor:
        if cells is None:
            return train_t[torch.randperm(len(train_t), generator=gen)]
        return balanced_rows(train_np, cells, group_cap, gen)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in epoch_rows().split(batch_size):
            batch = augment_points(pts[idx], gen) if augment else pts[idx]
            yield recipe.features_torch(batch), y[idx]

    seen = labels[train_np] if cells is None else epoch_labels(train_np, cells, labels, group_cap)
    opts = FitOptions(epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience, seed=seed)
    result = fit(model, batches, opts, steps_per_epoch=-(-len(seen) // batch_size),
                 class_weight=class_weights(seen, num_classes),
                 val=(recipe.features_torch(pts[val_idx]), y[val_idx]) if len(val_idx) else None, progress=progress,
                 desc="landmark_fastkan")
    return result.model, result.history


def predict_points_proba(model: nn.Module, points: np.ndarray, recipe: FeatureRecipe = FeatureRecipe()) -> np.ndarray:
    """Class probabilities (N, C) for canonical points (N, 21, 3)."""
    model.eval()
    with torch.no_grad():
        logits = model(recipe.features_torch(torch.as_tensor(points, dtype=torch.float32)))
        return torch.softmax(logits, dim=1).numpy()


def predict_points(model: nn.Module, points: np.ndarray, recipe: FeatureRecipe = FeatureRecipe()) -> np.ndarray:
    """Class indices for canonical points (N, 21, 3)."""
    return predict_points_proba(model, points, recipe).argmax(1)


def landmark_metrics(data: LandmarkData, pred: np.ndarray, index: np.ndarray) -> dict[str, Any]:
    """Detection rate, accuracy and macro-F1 (over the classes present, as `evaluate` does per source) on the
    images of `index` with a hand, and accuracy end to end (a missed hand counts as wrong)."""
    hit = index[data.found[index]]
    y, p = data.labels[hit], pred[hit]
    end_to_end = np.where(data.found[index], pred[index], -1)
    out: dict[str, Any] = {
        "images": int(len(index)), "hand_found": int(len(hit)),
        "detection_rate": float(len(hit) / max(len(index), 1)),
        "accuracy": float(accuracy_score(y, p)) if len(hit) else float("nan"),
        "macro_f1": (
            float(f1_score(y, p, labels=np.unique(y), average="macro", zero_division=0)) if len(hit) else float("nan")
        ),
        "end_to_end_accuracy": float(np.mean(end_to_end == data.labels[index])) if len(index) else float("nan"),
    }
    return out


def train_landmarks(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    sequences: str | Path | None = None,
    keypoints: str | Path | None = None,
    recipe: FeatureRecipe = FeatureRecipe(),
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train on the train split's detected hands, images and landmark-only sources alike (`load_landmark_data`,
    sampled by group), select on val, score the test split (images: overall and per source; landmark-only
    sources: per held-out group).

    Writes `best.pt` (a `save_checkpoint` file, meta `input: landmarks`), `history.csv` and `metrics.json`
    to `out_dir` (default `run_dir/train/landmark_fastkan`); returns the metrics.
    """
    from .models import count_parameters

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "train" / "landmark_fastkan"
    data = load_landmark_data(run_dir, recipe.mirror, sequences, keypoints)
    tr, va = (data.splits[k][data.found[data.splits[k]]] for k in ("train", "val"))
    if len(tr) == 0 or len(va) == 0:
        raise UserError(f"no detected hand in the train or val split of {run_dir}; check {run_dir / LANDMARKS_NAME}")
    start = time.perf_counter()
    model, history = train_landmark_model(
        data.points, data.labels, tr, va, num_classes=len(data.classes), groups=sampling_units(data.groups, data.sources),
        recipe=recipe, progress=progress, **options,
    )
    pred = predict_points(model, data.points, recipe)
    test = data.splits["test"][data.splits["test"] < data.n_images]  # the images' test split
    held = data.splits["test"][data.splits["test"] >= data.n_images]  # landmark-only sources' test groups
    metrics: dict[str, Any] = {
        "model": "landmark_fastkan", "params": count_parameters(model),
        "train_seconds": round(time.perf_counter() - start, 1),
        "epochs_run": len(history), "best_val_macro_f1": max(h["val_macro_f1"] for h in history),
        "test": landmark_metrics(data, pred, test),
        "test_by_source": {
            str(s): landmark_metrics(data, pred, test[data.sources[test] == s]) for s in np.unique(data.sources[test])
        },
        "held_out_groups": {
            str(g): landmark_metrics(data, pred, held[data.groups[held] == g]) for g in np.unique(data.groups[held])
        },
    }
    save_landmark_model(out_dir, model, data.classes, history, metrics, recipe=recipe, **options)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def save_landmark_model(
    out_dir: Path, model: nn.Module, classes: list[str], history: list[dict[str, float]], metrics: dict[str, Any],
    *, recipe: FeatureRecipe, **options: Any,
) -> Path:
    """`out_dir/best.pt` (a `save_checkpoint` file with meta `input: landmarks`) and `history.csv`."""
    from .models import save_checkpoint

    hp = {"hidden": options.get("hidden", 24), "num_grids": options.get("num_grids", 6),
          "mirror_dims": recipe.mirror_dims or None}
    meta = {
        "model": "landmark_fastkan", "model_options": {"in_features": recipe.size, **hp},
        "classes": list(classes), "image_size": None, "input": LANDMARK_INPUT,
        "features": recipe.to_meta(), "metrics": metrics,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "best.pt", model, meta)
    write_history(out_dir / "history.csv", history)
    return out_dir / "best.pt"


LANDMARK_STEM = "asl_landmarks"


def export_landmark_onnx(checkpoint: str | Path, out_path: str | Path, int8_path: str | Path | None = None,
                         calibration: np.ndarray | None = None, fusion_weight: float | None = None) -> dict[str, Path]:
    """A landmark checkpoint -> float ONNX (input (N, F) features) and, with `int8_path` and calibration
    features (N, F) float32, a static int8 QDQ copy. Both carry `input: landmarks` and the feature recipe."""
    from .export import quantize_onnx, save_onnx
    from .models import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    check_model_kind(checkpoint, meta.get("input"), "hand-landmark", "`asl-tinyml landmarks --export`")
    if fusion_weight is not None:
        meta = {**meta, "fusion_weight": float(fusion_weight)}
    out = {"onnx": save_onnx(model, meta, out_path, full_check=True)}
    if int8_path is not None:
        if calibration is None or len(calibration) == 0:
            raise UserError("int8 export of a landmark model needs calibration features (a run's landmark cache)")
        out["onnx_int8"] = quantize_onnx(out["onnx"], int8_path, np.asarray(calibration, np.float32), per_channel=False)
    return out


def export_landmark_model(
    run_dir: str | Path, out_dir: str | Path = "models", checkpoint: str | Path | None = None, n_calibration: int = 500,
    fusion_weight: float | None = None, tflite: bool | None = None,
) -> dict[str, Path]:
    """`asl_landmarks.pt`, `.onnx` and `_int8.onnx` (static int8, calibrated on the train split's detected
    hands) of a run's landmark model (default `RUN/train/landmark_fastkan/best.pt`) into `out_dir`; the
    files record `fusion_weight`, the weight the fused predictor gives them (`fusion.SignPredictor`).
    With the tflite extra (`tflite` None: when installed) also `_int8.tflite`, as `micro.export_landmark_tflite`."""
    import shutil

    from .micro import tflite_available
    from .models import load_checkpoint

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "train" / "landmark_fastkan" / "best.pt"
    _, meta = load_checkpoint(checkpoint)
    recipe = FeatureRecipe.from_meta(meta.get("features"))
    data = load_landmark_data(run_dir, recipe.mirror)
    features = recipe.features(data.points)
    train = data.splits["train"]
    rows = train[data.found[train]]
    rows = np.random.default_rng(0).choice(rows, size=min(n_calibration, len(rows)), replace=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, out_dir / f"{LANDMARK_STEM}.pt")
    paths = export_landmark_onnx(
        checkpoint, out_dir / f"{LANDMARK_STEM}.onnx", out_dir / f"{LANDMARK_STEM}_int8.onnx", features[np.sort(rows)],
        fusion_weight,
    )
    if tflite_available() if tflite is None else tflite:
        from .micro import export_landmark_tflite

        paths["tflite"] = export_landmark_tflite(checkpoint, out_dir / f"{LANDMARK_STEM}_int8.tflite", features[np.sort(rows)])
    return {"pt": out_dir / f"{LANDMARK_STEM}.pt", **paths}


def extra_folds(data: LandmarkData, kind: str, k: int = 4) -> list[Fold]:
    """Held-out folds of the landmark-only rows. `person`: their groups (repositories, sessions) in `k`
    folds (`preprocess.person_folds`), trained on the images' train split and the other groups. `source`: each
    landmark-only source in turn, on the classes the rest hold, trained on everything else's train split."""
    from .preprocess import person_folds, person_ids

    n = data.n_images
    is_extra = np.arange(len(data.labels)) >= n
    if not is_extra.any():
        return []
    if kind == "person":
        persons = np.where(is_extra, person_ids(data.groups, data.sources), "")
        return [Fold(f"groups{j + 1}", f.train, f.val, f.test) for j, f in enumerate(person_folds(persons, data.splits, k))]
    folds = []
    for source in np.unique(data.sources[is_extra]):
        mine = data.sources == source
        train = data.splits["train"][~mine[data.splits["train"]]]
        test = np.flatnonzero(mine & np.isin(data.labels, np.unique(data.labels[train])))
        folds.append(Fold(str(source), train, data.splits["val"][~mine[data.splits["val"]]], test))
    return folds


def landmark_folds(
    run_dir: str | Path,
    kind: str = "person",
    out_dir: str | Path | None = None,
    *,
    sequences: str | Path | None = None,
    keypoints: str | Path | None = None,
    person_folds: int = 4,
    group_folds: int = 4,
    recipe: FeatureRecipe = FeatureRecipe(),
    progress: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """`train.train_folds` for `landmark_fastkan`: the same folds of the run's images as the pixel model's
    (`kind` "person" or "source"), trained on the fold's detected hands plus every landmark-only row, then
    the landmark-only sources' own folds (`extra_folds`), so that every group is held out once. Scores all
    the fold's test rows (a missed hand counts as wrong in `end_to_end_accuracy`), per person or group.
    Writes `<fold>/best.pt` and `folds.json`/`.csv` to `out_dir` (default `train.folds_dir`); one dict per fold.
    """
    from .preprocess import make_folds, person_ids
    from .train import folds_dir, per_person, write_folds

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else folds_dir(run_dir, "landmark_fastkan", kind)
    data = load_landmark_data(run_dir, recipe.mirror, sequences, keypoints)
    n = data.n_images
    images = {k: v[v < n] for k, v in data.splits.items()}
    extra = np.arange(n, len(data.labels))  # landmark-only rows: in training for the image folds
    folds = [Fold(f.name, np.union1d(f.train, extra), f.val, f.test)
             for f in make_folds(kind, data.labels[:n], data.groups[:n], data.sources[:n], images, person_folds)]
    folds += extra_folds(data, kind, group_folds)
    persons = person_ids(data.groups, data.sources)
    units = sampling_units(data.groups, data.sources)
    results = []
    for fold in bar(folds, progress=progress, desc=f"{kind} folds", unit="fold", leave=False):
        start = time.perf_counter()
        model, history = train_landmark_model(
            data.points, data.labels, fold.train[data.found[fold.train]], fold.val[data.found[fold.val]],
            num_classes=len(data.classes), groups=units, recipe=recipe, **options,
        )
        proba = predict_points_proba(model, data.points, recipe)
        pred, y, found = proba.argmax(1), data.labels[fold.test], data.found[fold.test]
        correct = found & (pred[fold.test] == y)
        in_kind = found & (predict_in_kind(proba[fold.test], y, data.classes) == y)
        row = {"fold": fold.name, "kind": kind, "n_train": int(data.found[fold.train].sum()), "epochs_run": len(history),
               **landmark_metrics(data, pred, fold.test), "end_to_end_accuracy_in_kind": float(in_kind.mean()),
               "per_person": per_person(persons[fold.test], correct),
               "per_person_in_kind": per_person(persons[fold.test], in_kind),
               "train_seconds": round(time.perf_counter() - start, 1)}
        save_landmark_model(out_dir / fold.name, model, data.classes, history, row, recipe=recipe, **options)
        results.append(row)
    write_folds(results, out_dir)
    return results
