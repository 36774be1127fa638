"""Images -> a compact uint8 cache (N, S, S, 3) with labels, sources and groups; grouped splits."""

from __future__ import annotations

import json
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import UserError, canonical_classes, output_dir
from .images import load_image, to_rgb  # noqa: F401  (re-exported: the stages import them from here)
from .merge import read_manifest

CACHE_NAME = "cache.npz"
SPLITS_NAME = "splits.json"
SPLITS = ("train", "val", "test")


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


@dataclass
class Cache:
    """The preprocessed data set: uint8 images and one label, source, group and path per image."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64 index into classes
    classes: list[str]
    sources: np.ndarray  # (N,) str
    groups: np.ndarray  # (N,) str
    paths: np.ndarray  # (N,) str, relative to the merged folder

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Cache:
        return Cache(
            self.images[index], self.labels[index], self.classes,
            self.sources[index], self.groups[index], self.paths[index],
        )

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, images=self.images, labels=self.labels, classes=np.array(self.classes),
            sources=self.sources, groups=self.groups, paths=self.paths,
        )

    @classmethod
    def load(cls, path: str | Path) -> Cache:
        path = Path(path)
        if path.is_dir():
            path = path / CACHE_NAME
        if not path.exists():
            raise UserError(f"no preprocessed cache at {path}; run `asl-tinyml preprocess` first")
        try:
            with np.load(path, allow_pickle=False) as z:
                cache = cls(
                    z["images"], z["labels"].astype(np.int64), [str(c) for c in z["classes"]],
                    z["sources"], z["groups"], z["paths"],
                )
        except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise UserError(
                f"{path} is not a readable cache ({type(exc).__name__}: {exc}); re-run `asl-tinyml preprocess`"
            ) from exc
        n = len(cache.labels)
        shapes_ok = cache.images.ndim == 4 and cache.images.shape[3] == 3 and cache.images.dtype == np.uint8
        if not shapes_ok or any(len(a) != n for a in (cache.images, cache.sources, cache.groups, cache.paths)) or (
            n and (cache.labels.min() < 0 or cache.labels.max() >= len(cache.classes))
        ):
            raise UserError(f"{path} is inconsistent (arrays of different lengths or bad labels); re-run `asl-tinyml preprocess`")
        return cache


def build_cache(merged_dir: Path, size: int = 64, workers: int = 4) -> tuple[Cache, list[tuple[str, str]]]:
    """Read every manifest row of `merged_dir` into a Cache; returns it with the (path, reason) skipped."""
    merged_dir = Path(merged_dir)
    rows = read_manifest(merged_dir)
    if not rows:
        raise UserError(f"no manifest.csv in {merged_dir}; run `asl-tinyml merge` first")
    present = {r["class"] for r in rows}
    classes = [c for c in canonical_classes(include_extra=True) if c in present]
    index = {c: i for i, c in enumerate(classes)}

    def load(row: dict[str, str]) -> np.ndarray | str:
        try:
            return load_image(merged_dir / row["merged_path"], size)
        except ValueError as exc:  # images.BadImageError: missing or unreadable
            return str(exc)

    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(load, rows), total=len(rows), desc="preprocess", unit="img", leave=False))
    keep = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    skipped = [(rows[i]["merged_path"], str(r)) for i, r in enumerate(results) if not isinstance(r, np.ndarray)]
    if not keep:
        raise UserError(f"no readable image in {merged_dir}")
    kept = [rows[i] for i in keep]
    cache = Cache(
        images=np.stack([results[i] for i in keep]),
        labels=np.array([index[r["class"]] for r in kept], dtype=np.int64),
        classes=classes,
        sources=np.array([r["source"] for r in kept]),
        groups=np.array([r["group"] for r in kept]),
        paths=np.array([r["merged_path"] for r in kept]),
    )
    return cache, skipped


def _one_fold(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) positions: the first fold of a stratified group k-fold."""
    from sklearn.model_selection import StratifiedGroupKFold  # imported here: keeps CLI/server start fast

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes smaller than k are fine here
        rest, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return rest, held


def _few_group_split(groups: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Whole groups (e.g. 3 signers) to the split that most lacks images, largest group first."""
    names, sizes = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    need = {k: f * len(groups) for k, f in fractions.items()}
    chosen: dict[str, list[str]] = {k: [] for k in fractions}
    for i in order:
        split = max(need, key=lambda k: (need[k], k == "test", k == "val"))
        chosen[split].append(names[i])
        need[split] -= sizes[i]
    return {k: np.flatnonzero(np.isin(groups, v)) for k, v in chosen.items()}


def grouped_split(
    labels: np.ndarray,
    groups: np.ndarray,
    sources: np.ndarray | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> dict[str, np.ndarray]:
    """Train/val/test indices, made per source, stratified by class, and grouped: no group in two splits.

    A source with at least `1 / test_fraction` groups is split by scikit-learn's StratifiedGroupKFold;
    one with fewer (Massey's three signers) sends whole groups where images are most lacking, so its
    smallest signer becomes an unseen-signer test set rather than leaking into training.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    sources = np.zeros(len(labels), dtype=int) if sources is None else np.asarray(sources)
    fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    k_test = round(1 / test_fraction)
    k_val = round((1 - test_fraction) / val_fraction)
    out: dict[str, list[np.ndarray]] = {k: [] for k in SPLITS}
    for source in np.unique(sources):
        idx = np.flatnonzero(sources == source)
        parts = None
        if len(np.unique(groups[idx])) >= k_test + k_val:
            try:
                rest, test = _one_fold(labels[idx], groups[idx], k_test, seed)
                train, val = _one_fold(labels[idx][rest], groups[idx][rest], k_val, seed)
                parts = {"train": rest[train], "val": rest[val], "test": test}
            except ValueError:  # every class smaller than k: too little data to stratify
                parts = None
        if parts is None:
            parts = _few_group_split(groups[idx], fractions, seed)
        for k in SPLITS:
            out[k].append(idx[parts[k]])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in out.items()}


def save_splits(splits: dict[str, np.ndarray], path: Path, seed: int) -> None:
    payload = {"seed": seed, "method": "StratifiedGroupKFold"} | {k: v.tolist() for k, v in splits.items()}
    Path(path).write_text(json.dumps(payload))


def load_splits(path: str | Path, n_images: int | None = None) -> dict[str, np.ndarray]:
    """The train/val/test row indices of a run; `n_images` (the cache's length) bounds them. Raises UserError."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLITS_NAME
    if not path.exists():
        raise UserError(f"no splits at {path}; run `asl-tinyml preprocess` first")
    try:
        payload = json.loads(path.read_text())
        splits = {k: np.array(payload[k], dtype=np.int64).reshape(-1) for k in SPLITS}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise UserError(
            f"{path} is not a readable splits file ({type(exc).__name__}: {exc}); re-run `asl-tinyml preprocess`"
        ) from exc
    top = max((int(v.max()) for v in splits.values() if v.size), default=-1)
    low = min((int(v.min()) for v in splits.values() if v.size), default=0)
    if low < 0 or (n_images is not None and top >= n_images):
        raise UserError(f"{path} lists images the run's cache does not hold; re-run `asl-tinyml preprocess`")
    return splits


# --- held-out folds: unseen signers, unseen sources -------------------------------------------------------
SIGNER_PREFIX = "massey_asl:hand"
FOLD_KINDS = ("signer", "source")


@dataclass(frozen=True)
class Fold:
    """One held-out evaluation over cache rows: train on `train`, select on `val`, score `test`."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def signer_groups(groups: np.ndarray, prefix: str = SIGNER_PREFIX) -> list[str]:
    """The Massey signer groups present (`massey_asl:hand1`, ...), sorted."""
    return sorted({str(g) for g in np.unique(groups) if str(g).startswith(prefix)})


def signer_folds(groups: np.ndarray, splits: dict[str, np.ndarray], prefix: str = SIGNER_PREFIX) -> list[Fold]:
    """Leave one signer out: for signer k, train on the train split plus the other signers (never k),
    select on the val split without k, test on all of k's images."""
    groups = np.asarray(groups).astype(str)
    signers = signer_groups(groups, prefix)
    if len(signers) < 2:
        raise UserError(f"leave-one-signer-out needs at least two signers ({prefix}N groups); found {signers}")
    everyone = np.flatnonzero(np.isin(groups, signers))
    folds = []
    for signer in signers:
        held = np.flatnonzero(groups == signer)
        folds.append(Fold(
            signer.split(":")[-1], np.setdiff1d(np.union1d(splits["train"], everyone), held),
            np.setdiff1d(splits["val"], held), held,
        ))
    return folds


def source_folds(sources: np.ndarray, labels: np.ndarray, splits: dict[str, np.ndarray]) -> list[Fold]:
    """Leave one source out, on the classes the sources share: for source s, train on the other sources'
    train split, select on their val and test splits (s is the test here), test on s's images of the
    classes the training sources hold. Sources sharing no class with the others get no fold."""
    sources, labels = np.asarray(sources).astype(str), np.asarray(labels)
    names = np.unique(sources)
    if len(names) < 2:
        raise UserError(f"leave-one-source-out needs at least two sources; found {names.tolist()}")
    folds = []
    for source in names:
        others = sources != source
        train = np.intersect1d(splits["train"], np.flatnonzero(others))
        val = np.intersect1d(np.union1d(splits["val"], splits["test"]), np.flatnonzero(others))
        test = np.flatnonzero(~others & np.isin(labels, np.unique(labels[train])))
        if len(train) and len(val) and len(test):
            folds.append(Fold(str(source), train, val, test))
    return folds


def make_folds(kind: str, labels: np.ndarray, groups: np.ndarray, sources: np.ndarray, splits: dict[str, np.ndarray]) -> list[Fold]:
    """`signer` or `source` folds of a cache."""
    if kind == "signer":
        return signer_folds(groups, splits)
    if kind == "source":
        return source_folds(sources, labels, splits)
    raise UserError(f"unknown fold kind {kind!r}; choose one of {FOLD_KINDS}")


@dataclass
class PreprocessResult:
    cache_path: Path
    splits_path: Path
    n_images: int
    split_sizes: dict[str, int]
    skipped: list[tuple[str, str]]


def preprocess(
    merged_dir: Path, out_dir: Path, size: int = 64, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> PreprocessResult:
    """Build `out_dir/cache.npz` and `out_dir/splits.json` from a merged folder."""
    if size < 1:
        raise UserError(f"--size must be at least 1 pixel, got {size}")
    out_dir = output_dir(out_dir, "--out", create=False)
    cache, skipped = build_cache(Path(merged_dir), size)
    splits = grouped_split(cache.labels, cache.groups, cache.sources, seed, val_fraction, test_fraction)
    output_dir(out_dir, "--out")
    cache.save(out_dir / CACHE_NAME)
    save_splits(splits, out_dir / SPLITS_NAME, seed)
    return PreprocessResult(
        out_dir / CACHE_NAME, out_dir / SPLITS_NAME, len(cache), {k: len(v) for k, v in splits.items()}, skipped
    )
