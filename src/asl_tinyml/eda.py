"""Exploratory data analysis: key numbers and one PNG figure per question about the data.

Every `plot_*` function takes data already in memory (the manifest as a DataFrame, the Cache, the
splits) and a PNG path, draws on its own Agg figure (no pyplot state, nothing left open) and returns
the path; `run_eda` loads the data and draws every figure the available files allow.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .config import UserError, canonical_classes, output_dir
from .merge import MANIFEST, MANIFEST_FIELDS, read_manifest
from .preprocess import CACHE_NAME, SPLITS, SPLITS_NAME, Cache, load_splits

log = logging.getLogger(__name__)

DPI = 120
SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


# --- data ------------------------------------------------------------------------------------------
def load_manifest(merged_dir: Path) -> pd.DataFrame:
    """The merge manifest as a DataFrame (class names kept as strings, sizes as integers)."""
    path = Path(merged_dir) / MANIFEST
    if not path.exists():
        raise UserError(f"no manifest.csv in {merged_dir}; run `asl-tinyml merge` first")
    df = pd.DataFrame(read_manifest(merged_dir), columns=MANIFEST_FIELDS)  # a foreign file is a UserError
    df[["width", "height"]] = df[["width", "height"]].astype(int)
    if df.empty:
        raise UserError(f"{path} lists no images; run `asl-tinyml merge` with a source folder of class folders")
    return df


def class_order(classes: object) -> list[str]:
    """The distinct class names present, in canonical order (digits, letters, space...), unknown ones last."""
    present = {str(c) for c in classes}
    known = [c for c in canonical_classes(include_extra=True) if c in present]
    return known + sorted(present - set(known))


def source_palette(sources: object) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per source (sorted by name), shared by every figure."""
    names = sorted({str(s) for s in sources})
    return dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean pixel intensity (0-255) of each uint8 NHWC image."""
    return images.reshape(len(images), -1).mean(axis=1)


def split_of(n: int, splits: dict[str, np.ndarray]) -> np.ndarray:
    """The split name of each of `n` cache rows (`none` for rows in no split)."""
    names = np.full(n, "none", dtype=object)
    for name in SPLITS:
        names[splits[name]] = name
    return names


def split_counts(cache: Cache, splits: dict[str, np.ndarray]) -> pd.DataFrame:
    """Images per split (rows: train, val, test) and source (columns), with totals."""
    df = pd.DataFrame({"split": split_of(len(cache), splits), "source": cache.sources.astype(str)})
    table = pd.crosstab(df["split"], df["source"], margins=True, margins_name="total")
    return table.reindex([s for s in (*SPLITS, "none", "total") if s in table.index])


def groups_across_splits(groups: np.ndarray, splits: dict[str, np.ndarray]) -> list[str]:
    """The leakage groups (signer, frame block) found in more than one split: empty for honest splits."""
    seen: dict[str, set[str]] = {}
    for name in SPLITS:
        for g in np.unique(np.asarray(groups)[splits[name]]):
            seen.setdefault(str(g), set()).add(name)
    return sorted(g for g, names in seen.items() if len(names) > 1)


def summary(merged_dir: Path, run_dir: Path | None = None) -> pd.DataFrame:
    """Key numbers per source and in total: images, classes, groups, pixel sizes; plus brightness and
    split sizes when `run_dir` holds a cache and splits."""
    m = load_manifest(merged_dir)
    m["long_side"] = m[["width", "height"]].max(axis=1)
    per = m.groupby("source")
    table = pd.DataFrame(
        {
            "images": per.size(),
            "classes": per["class"].nunique(),
            "groups": per["group"].nunique(),
            "min_side_px": per[["width", "height"]].min().min(axis=1),
            "median_long_side_px": per["long_side"].median(),
            "max_side_px": per["long_side"].max(),
        }
    )
    table.loc["total"] = [
        len(m), m["class"].nunique(), m["group"].nunique(),
        m[["width", "height"]].min().min(), m["long_side"].median(), m["long_side"].max(),
    ]
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and (run_dir / CACHE_NAME).exists():
        cache = Cache.load(run_dir)
        light = pd.Series(brightness(cache.images)).groupby(cache.sources.astype(str)).mean()
        table["mean_brightness"] = light.reindex(table.index)
        table.loc["total", "mean_brightness"] = brightness(cache.images).mean()
        if (run_dir / SPLITS_NAME).exists():
            counts = split_counts(cache, load_splits(run_dir, len(cache)))
            for name in SPLITS:
                table[name] = counts.loc[name].reindex(table.index) if name in counts.index else 0
    return table.round(1)


# --- figures ---------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path


def plot_class_counts(manifest: pd.DataFrame, path: Path) -> Path:
    """Images per class, stacked by source, with each class's total above its bar."""
    classes = class_order(manifest["class"])
    table = pd.crosstab(manifest["class"].astype(str), manifest["source"]).reindex(classes).fillna(0)
    palette = source_palette(table.columns)
    fig = _figure(max(8.0, 0.32 * len(classes) + 2), 4.5)
    ax = fig.add_subplot()
    bottom = np.zeros(len(classes))
    for source in table.columns:
        ax.bar(classes, table[source], bottom=bottom, color=palette[source], label=source, width=0.8)
        bottom += table[source].to_numpy()
    for x, total in enumerate(bottom):
        ax.text(x, total, f"{int(total)}", ha="center", va="bottom", fontsize=7)
    ax.set(xlabel="class", ylabel="images", xlim=(-0.6, len(classes) - 0.4), ylim=(0, bottom.max() * 1.1))
    ax.set_title(f"Images per class by source ({len(manifest)} images, {len(classes)} classes)")
    ax.legend(title="source", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.margins(x=0.01)
    return _save(fig, path)


def pick_samples(cache: Cache, per_class: int, seed: int = 0) -> dict[str, list[int]]:
    """Up to `per_class` random cache rows per class, taken from each source of that class in turn."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[int]] = {}
    for label, name in enumerate(cache.classes):
        pools = []
        for source in sorted(set(cache.sources[cache.labels == label].astype(str))):
            idx = np.flatnonzero((cache.labels == label) & (cache.sources == source))
            pools.append(list(rng.permutation(idx)))
        picked: list[int] = []
        while len(picked) < per_class and any(pools):
            for pool in pools:
                if pool and len(picked) < per_class:
                    picked.append(int(pool.pop()))
        chosen[name] = picked
    return chosen


def _strip(images: np.ndarray, colors: list[tuple[float, float, float]], per_class: int, border: int) -> np.ndarray:
    """The images of one class side by side, each framed in its source colour, blank cells in white."""
    size = images.shape[1] if len(images) else 16
    cell = size + 2 * border
    gap = max(2, border)
    strip = np.full((cell, per_class * (cell + gap) - gap, 3), 255, dtype=np.uint8)
    for k, (image, color) in enumerate(zip(images, colors, strict=True)):
        x = k * (cell + gap)
        strip[:, x : x + cell] = np.round(np.array(color) * 255).astype(np.uint8)
        strip[border : border + size, x + border : x + border + size] = image
    return strip


def plot_sample_grid(cache: Cache, path: Path, per_class: int = 6, seed: int = 0, blocks: int = 2) -> Path:
    """One row of samples per class (label at the row start), framed by source colour; classes are laid
    out in `blocks` side-by-side columns to keep the figure compact."""
    chosen = pick_samples(cache, per_class, seed)
    palette = source_palette(cache.sources)
    classes = class_order(cache.classes)
    rows = -(-len(classes) // blocks)
    border = max(1, cache.images.shape[1] // 20)
    fig = _figure(blocks * (0.62 * per_class + 0.5), 0.62 * rows + 0.9)
    axes = np.array(fig.subplots(rows, blocks, squeeze=False, gridspec_kw={"hspace": 0.05, "wspace": 0.05}))
    for i, ax in enumerate(axes.T.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i >= len(classes):
            continue
        idx = chosen.get(classes[i], [])
        colors = [palette[str(cache.sources[j])] for j in idx]
        ax.imshow(_strip(cache.images[idx], colors, per_class, border), interpolation="nearest")
        ax.set_ylabel(classes[i], rotation=0, ha="right", va="center", fontsize=11, fontweight="bold")
    handles = [Patch(color=c, label=s) for s, c in palette.items()]
    fig.suptitle(f"Samples per class ({cache.images.shape[1]}x{cache.images.shape[2]} cache); frame colour = source",
                 fontsize=12)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
    return _save(fig, path)


def plot_image_sizes(manifest: pd.DataFrame, path: Path) -> Path:
    """Original image sizes: long side histogram (log-log) and width x height per source, point area = count."""
    m = manifest.assign(long_side=manifest[["width", "height"]].max(axis=1))
    palette = source_palette(m["source"])
    fig = _figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    sns.histplot(
        data=m, x="long_side", hue="source", palette=palette, multiple="stack", log_scale=True, bins=30,
        ax=left, edgecolor="none",
    )
    left.set_yscale("log")
    if left.get_legend() is not None:
        left.get_legend().remove()  # the right panel's legend names the sources
    left.set(xlabel="long side of the original image (px, log)", ylabel="images (log)", title="Long side per image")
    sizes = m.groupby(["source", "width", "height"]).size().rename("images").reset_index()
    sns.scatterplot(
        data=sizes, x="width", y="height", hue="source", size="images", sizes=(30, 500), palette=palette,
        alpha=0.7, ax=right, legend="brief",
    )
    right.set(xscale="log", yscale="log", xlabel="width (px, log)", ylabel="height (px, log)")
    right.set_title("Width x height (area = number of images)")
    if len(sizes) <= 20:
        for row in sizes.itertuples():
            right.annotate(f"{row.width}x{row.height}: {row.images}", (row.width, row.height), fontsize=7,
                           xytext=(6, -10), textcoords="offset points")
    lo, hi = sizes[["width", "height"]].min().min(), sizes[["width", "height"]].max().max()
    right.set(xlim=(lo / 1.6, hi * 2.5), ylim=(lo / 1.6, hi * 1.6))
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    return _save(fig, path)


def plot_brightness(cache: Cache, path: Path) -> Path:
    """Distribution of mean pixel intensity per image, one density per source."""
    df = pd.DataFrame({"brightness": brightness(cache.images), "source": cache.sources.astype(str)})
    fig = _figure(8, 4)
    ax = fig.add_subplot()
    sns.histplot(
        data=df, x="brightness", hue="source", palette=source_palette(df["source"]), stat="density",
        common_norm=False, element="step", bins=np.linspace(0, 255, 52), ax=ax,
    )
    ax.set(xlim=(0, 255), xlabel="mean pixel intensity of the image (0 = black, 255 = white)", ylabel="density")
    ax.set_title("Brightness per source (each source normalised separately)")
    return _save(fig, path)


def plot_split_sizes(cache: Cache, splits: dict[str, np.ndarray], path: Path) -> Path:
    """Images per class in train / val / test, stacked."""
    classes = class_order(cache.classes)
    names = np.asarray(cache.classes)[cache.labels]
    df = pd.DataFrame({"class": names, "split": split_of(len(cache), splits)})
    table = pd.crosstab(df["class"], df["split"]).reindex(index=classes, columns=list(SPLITS)).fillna(0)
    fig = _figure(max(8.0, 0.32 * len(classes) + 2), 4.5)
    ax = fig.add_subplot()
    bottom = np.zeros(len(classes))
    for name in SPLITS:
        ax.bar(classes, table[name], bottom=bottom, color=SPLIT_COLORS[name], width=0.8,
               label=f"{name} ({int(table[name].sum())})")
        bottom += table[name].to_numpy()
    ax.set(xlabel="class", ylabel="images", xlim=(-0.6, len(classes) - 0.4))
    ax.set_title("Images per class in each split (grouped: no signer or frame block in two splits)")
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, path)


def plot_split_sources(cache: Cache, splits: dict[str, np.ndarray], path: Path) -> Path:
    """Heatmap of images (and distinct leakage groups) per split and source."""
    df = pd.DataFrame({"split": split_of(len(cache), splits), "source": cache.sources.astype(str),
                       "group": cache.groups.astype(str)})
    df = df[df["split"] != "none"]
    images = pd.crosstab(df["split"], df["source"]).reindex(list(SPLITS)).fillna(0).astype(int)
    groups = df.groupby(["split", "source"])["group"].nunique().unstack().reindex(list(SPLITS)).fillna(0).astype(int)
    groups = groups.reindex(columns=images.columns, fill_value=0)
    labels = np.array(
        [[f"{n}\n({g} group{'' if g == 1 else 's'})" for n, g in zip(ni, gi, strict=True)]
         for ni, gi in zip(images.values, groups.values, strict=True)]
    )
    share = images / images.sum(axis=0)
    fig = _figure(1.9 * len(images.columns) + 2.5, 3.8)
    ax = fig.add_subplot()
    sns.heatmap(share, annot=labels, fmt="", cmap="Blues", vmin=0, vmax=1, ax=ax, annot_kws={"fontsize": 9},
                cbar_kws={"label": "share of the source's images"})
    ax.set(xlabel="source", ylabel="split")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title("Images per split and source (distinct groups in brackets)")
    return _save(fig, path)


# --- stage -----------------------------------------------------------------------------------------
def run_eda(merged_dir: Path, run_dir: Path, out_dir: Path) -> list[Path]:
    """Draw every figure the data allows into `out_dir`: manifest figures always, cache and split figures
    when `run_dir` holds `cache.npz` / `splits.json` (otherwise a one-line note says they were skipped)."""
    merged_dir, run_dir, out_dir = Path(merged_dir), Path(run_dir), Path(out_dir)
    manifest = load_manifest(merged_dir)
    output_dir(out_dir, "--out")
    figures = [
        plot_class_counts(manifest, out_dir / "class_counts.png"),
        plot_image_sizes(manifest, out_dir / "image_sizes.png"),
    ]
    if not (run_dir / CACHE_NAME).exists():
        log.warning("note: no %s in %s; skipped the sample, brightness and split figures "
                    "(run `asl-tinyml preprocess` first)", CACHE_NAME, run_dir)
        return figures
    cache = Cache.load(run_dir)
    figures += [
        plot_sample_grid(cache, out_dir / "sample_grid.png"),
        plot_brightness(cache, out_dir / "brightness.png"),
    ]
    if not (run_dir / SPLITS_NAME).exists():
        log.warning("note: no %s in %s; skipped the split figures (run `asl-tinyml preprocess` first)",
                    SPLITS_NAME, run_dir)
        return figures
    splits = load_splits(run_dir, len(cache))
    figures += [
        plot_split_sizes(cache, splits, out_dir / "split_sizes.png"),
        plot_split_sources(cache, splits, out_dir / "split_sources.png"),
    ]
    return figures
