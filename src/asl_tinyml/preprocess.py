"""Images -> a compact uint8 cache (N, S, S, 3) with labels, sources and groups; grouped splits."""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import UserError, canonical_classes, output_dir
from .hands import HandTable, cached_hands, hand_crop
from .images import load_image, read_rgb
from .merge import read_manifest
from .negatives import build_negatives, save_negatives
from .progress import bar

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
    crop: str = "centre"  # "hand": each image is the square around its detected hand (centre where none)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Cache:
        return Cache(
            self.images[index], self.labels[index], self.classes,
            self.sources[index], self.groups[index], self.paths[index], self.crop,
        )

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, images=self.images, labels=self.labels, classes=np.array(self.classes),
            sources=self.sources, groups=self.groups, paths=self.paths, crop=np.array(self.crop),
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
                    z["sources"], z["groups"], z["paths"], str(z["crop"]) if "crop" in z else "centre",
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


def build_cache(
    merged_dir: Path, size: int = 64, workers: int = 4, hands: HandTable | None = None, margin: float = 0.25
) -> tuple[Cache, list[tuple[str, str]]]:
    """Read every manifest row of `merged_dir` into a Cache; returns it with the (path, reason) skipped.

    With `hands` (detections aligned with the manifest rows) each image is cropped to the square around
    its hand (`hands.hand_crop`), else centre-cropped.
    """
    merged_dir = Path(merged_dir)
    rows = read_manifest(merged_dir)
    if not rows:
        raise UserError(f"no manifest.csv in {merged_dir}; run `asl-tinyml merge` first")
    present = {r["class"] for r in rows}
    classes = [c for c in canonical_classes(include_extra=True) if c in present]
    index = {c: i for i, c in enumerate(classes)}

    def load(i: int) -> np.ndarray | str:
        path = merged_dir / rows[i]["merged_path"]
        try:
            if hands is None:
                return load_image(path, size)
            return hand_crop(read_rgb(path), hands.landmarks[i] if hands.found[i] else None, size, margin)
        except ValueError as exc:  # images.BadImageError: missing or unreadable
            return str(exc)

    with ThreadPoolExecutor(workers) as pool:
        results = list(bar(pool.map(load, range(len(rows))), total=len(rows), desc="preprocess", unit="img", leave=False))
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
        crop="centre" if hands is None else "hand",
    )
    return cache, skipped


def merged_hands(merged_dir: Path, hand_cache: str | Path | None = None, progress: bool = True) -> HandTable:
    """Hand detections of every manifest row of `merged_dir`, in order, detecting only images (by content
    hash) that `hand_cache` does not hold yet."""
    rows = read_manifest(Path(merged_dir))
    files = [Path(merged_dir) / r["merged_path"] for r in rows]
    return cached_hands(files, [r["sha256"] for r in rows], hand_cache, progress=progress)


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


# --- held-out folds: unseen people, unseen sources -------------------------------------------------------
FOLD_KINDS = ("person", "source")
PERSON_GROUP = re.compile(r"^[^:]+:(hand|user|signer|subject|session-)[0-9a-z]+$", re.IGNORECASE)
SINGLE_PERSON_SOURCES = ("asl_alphabet_subset",)  # sources whose every image shows one person (datasets README)
GROUP_PERSON_SOURCES = ("asl_keypoints",)  # landmark sources whose every group is one person's webcam (its README)


@dataclass(frozen=True)
class Fold:
    """One held-out evaluation over cache rows: train on `train`, select on `val`, score `test`."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def person_ids(groups: np.ndarray, sources: np.ndarray, single_person_sources: tuple[str, ...] = SINGLE_PERSON_SOURCES) -> np.ndarray:
    """The person of each row: its group where that names one (`massey_asl:hand3`, `asl_users_mon95:user4`,
    `asl_fingerspelling_4signers:signer2`, `sign_sequences:session-cam`), the source for a one-person source,
    else "" (unknown: the digits' 218 students are not named)."""
    groups, sources = np.asarray(groups).astype(str), np.asarray(sources).astype(str)
    named = np.array([bool(PERSON_GROUP.match(g)) for g in groups], bool) | np.isin(sources, GROUP_PERSON_SOURCES)
    return np.where(named, groups, np.where(np.isin(sources, single_person_sources), sources, ""))


def person_folds(persons: np.ndarray, splits: dict[str, np.ndarray], k: int = 4) -> list[Fold]:
    """Leave people out, every known person exactly once, in `k` folds of about equal size: fold j trains on the
    train split plus every other person's images (never fold j's people), selects on the val split without
    them and tests on all their images. Rows of unknown people stay where the splits put them."""
    persons = np.asarray(persons).astype(str)
    names, sizes = np.unique(persons[persons != ""], return_counts=True)
    if len(names) < 2:
        raise UserError(f"leave-people-out needs at least two known people; found {names.tolist()}")
    buckets: list[list[str]] = [[] for _ in range(min(k, len(names)))]
    load = np.zeros(len(buckets))
    for i in np.argsort(-sizes, kind="stable"):  # largest first, into the lightest fold
        j = int(np.argmin(load))
        buckets[j].append(str(names[i]))
        load[j] += sizes[i]
    everyone = np.flatnonzero(persons != "")
    folds = []
    for j, held_people in enumerate(buckets):
        held = np.flatnonzero(np.isin(persons, held_people))
        folds.append(Fold(
            f"people{j + 1}", np.setdiff1d(np.union1d(splits["train"], everyone), held),
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


def make_folds(kind: str, labels: np.ndarray, groups: np.ndarray, sources: np.ndarray, splits: dict[str, np.ndarray],
               k: int = 4) -> list[Fold]:
    """`person` (`person_folds` in `k` folds) or `source` folds of a cache."""
    if kind == "person":
        return person_folds(person_ids(groups, sources), splits, k)
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
    hands_found: int | None = None  # images cropped to a detected hand (None: centre crops)


def preprocess(
    merged_dir: Path, out_dir: Path, size: int = 64, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
    *, hand_crop: bool = False, hand_cache: str | Path | None = None, margin: float = 0.25,
) -> PreprocessResult:
    """Build `out_dir/cache.npz` and `out_dir/splits.json` from a merged folder; with `hand_crop` every image
    is cropped to its hand (MediaPipe, detections kept in `hand_cache` by image hash). Also writes
    `out_dir/negatives.npz`, the empty scenes training shows the pixel model (`negatives.build_negatives`)."""
    if size < 1:
        raise UserError(f"--size must be at least 1 pixel, got {size}")
    out_dir = output_dir(out_dir, "--out", create=False)
    hands = merged_hands(Path(merged_dir), hand_cache) if hand_crop else None
    cache, skipped = build_cache(Path(merged_dir), size, hands=hands, margin=margin)
    splits = grouped_split(cache.labels, cache.groups, cache.sources, seed, val_fraction, test_fraction)
    output_dir(out_dir, "--out")
    cache.save(out_dir / CACHE_NAME)
    save_splits(splits, out_dir / SPLITS_NAME, seed)
    save_negatives(build_negatives(Path(merged_dir), size, hands), out_dir)  # empty scenes for training
    return PreprocessResult(
        out_dir / CACHE_NAME, out_dir / SPLITS_NAME, len(cache), {k: len(v) for k, v in splits.items()}, skipped,
        int(hands.found.sum()) if hands is not None else None,
    )
