"""Evaluate a model file on a run's split or on any folder of class folders: metrics, figures, report.

Labels are matched to the model by class name, so a model trained with `del`/`nothing` or without some
classes is still scored correctly. Figures are PNGs drawn with matplotlib's object API (Agg canvas).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    auc,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from .answers import NO_HAND_LABEL, class_mask, restrict_proba, twin_of
from .config import IMAGE_EXTENSIONS, UserError, canonical_classes, output_dir
from .fusion import HandInputs, SignPredictor, load_sign_predictor
from .inference import Predictor
from .merge import find_class_dirs, read_manifest
from .preprocess import CACHE_NAME, Cache, load_splits

GENERIC_STEMS = {"best", "last", "model", "checkpoint", "final"}
HISTORY_NAME = "history.csv"
N_WORST = 5


@dataclass
class EvalData:
    """Images to score: uint8 NHWC, labels indexing the model's classes, and where each came from."""

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    paths: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    index: np.ndarray | None = None  # rows of the run's cache.npz, for a run folder


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CACHE_NAME).is_file()


def default_out_dir(model_path: str | Path, data: str | Path) -> Path:
    """`<run>/eval/<name>` for a run folder (name: the model file's stem, or its folder for best.pt), else `eval`."""
    model_path = Path(model_path)
    name = model_path.parent.name if model_path.stem in GENERIC_STEMS and model_path.parent.name else model_path.stem
    return Path(data) / "eval" / name if is_run_dir(data) else Path("eval")


# --- data ----------------------------------------------------------------------------------------------
def _label_index(names: list[str], classes: list[str], where: Path) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise UserError(
            f"the data in {where} holds class(es) {unknown} that the model does not know (it knows {classes}); "
            "evaluate a model trained on those classes or data without them"
        )
    return np.array([index[n] for n in names], dtype=np.int64)


def load_run_split(run_dir: Path, split: str, classes: list[str], image_size: int) -> EvalData:
    """The `split` images ("train", "val", "test" or "all") of a run folder's cache."""
    cache = Cache.load(run_dir)
    index = np.arange(len(cache)) if split == "all" else load_splits(run_dir, len(cache))[split]
    cache = cache.subset(index)
    if len(cache) == 0:
        raise UserError(f"split {split!r} of {run_dir} is empty; choose another --split")
    if cache.images.shape[1] != image_size:
        raise UserError(
            f"{run_dir / CACHE_NAME} holds {cache.images.shape[1]}px images but the model takes {image_size}px; "
            f"re-run `asl-tinyml preprocess --size {image_size}` or pass a folder of class folders as --data"
        )
    labels = _label_index([cache.classes[i] for i in cache.labels], classes, run_dir)
    return EvalData(cache.images, labels, cache.sources.astype(str), cache.paths.astype(str), index=index)


def _class_folder_sources(folder: Path, known: list[str]) -> tuple[dict[str, dict[str, list[Path]]], list[Path]]:
    """{source name: {class: folders}} for a folder of class folders, or a folder of such sources."""
    class_dirs, unknown = find_class_dirs(folder, known)
    if class_dirs:
        return {folder.name: class_dirs}, unknown
    sources: dict[str, dict[str, list[Path]]] = {}
    stray: list[Path] = []
    for sub in unknown:
        inner, inner_unknown = find_class_dirs(sub, known)
        if inner:
            sources[sub.name] = inner
            stray += inner_unknown
        else:
            stray.append(sub)
    return sources, stray


def folder_files(folder: Path, classes: list[str]) -> tuple[list[tuple[Path, str, str]], list[tuple[str, str]]]:
    """Every image file in the class folders (names normalised like merge) of `folder`, as (file, class,
    source), and the (path, reason) skipped: folders that are no class of the model, non-image files.
    The source of an image is its manifest row (a merged folder), else the source folder's name."""
    if not folder.is_dir():
        raise UserError(f"data folder {folder} not found; pass a run folder (cache.npz) or a folder of class folders")
    known = list(dict.fromkeys(canonical_classes(include_extra=True) + list(classes)))
    sources, stray = _class_folder_sources(folder, known)
    if not sources:
        raise UserError(
            f"no class folders in {folder}; expected folders named like {classes[0]}..{classes[-1]} "
            "(or a run folder holding cache.npz)"
        )
    skipped = [(str(d), "not a class folder") for d in stray]
    # a manifest.csv that merge did not write is ignored: it only names sources
    from_manifest = {r["merged_path"]: r["source"] for r in read_manifest(folder, strict=False)}
    todo: list[tuple[Path, str, str]] = []  # (file, class, source)
    for source, class_dirs in sources.items():
        for cls, dirs in class_dirs.items():
            if cls not in classes:
                skipped += [(str(d), f"the model has no class {cls!r}") for d in dirs]
                continue
            for d in dirs:
                for f in sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")):
                    if f.suffix.lower() not in IMAGE_EXTENSIONS:
                        skipped.append((str(f), f"not an image extension ({f.suffix or 'none'})"))
                        continue
                    rel = f.relative_to(folder).as_posix()
                    todo.append((f, cls, from_manifest.get(rel, source)))
    return todo, skipped


def load_folder(folder: Path, predictor: SignPredictor) -> tuple[EvalData, np.ndarray, np.ndarray]:
    """The images of a folder of class folders through `predictor` (hand detection, crop, fusion):
    (data with the pixel crops as images, probabilities (N, C), hand found (N,)); unreadable files skipped."""
    todo, skipped = folder_files(folder, predictor.classes)
    result = predictor.predict_files([t[0] for t in todo], progress=True)
    keep = [i for i, e in enumerate(result.errors) if e is None]
    skipped += [(str(todo[i][0]), str(e)) for i, e in enumerate(result.errors) if e is not None]
    if not keep:
        raise UserError(f"no readable image in the class folders of {folder}")
    data = EvalData(
        images=result.crops[keep],
        labels=_label_index([todo[i][1] for i in keep], predictor.classes, folder),
        sources=np.array([todo[i][2] for i in keep]),
        paths=np.array([str(todo[i][0]) for i in keep]),
        skipped=skipped,
    )
    return data, result.proba[keep], result.found[keep]


def run_split(run_dir: Path, split: str, predictor: SignPredictor) -> tuple[EvalData, np.ndarray, np.ndarray | None]:
    """A run folder's `split` through `predictor`: its cached crops, and landmarks from `landmarks.npz`."""
    ev = load_run_split(run_dir, split, predictor.classes, predictor.pixel.image_size)
    cache_crop = Cache.load(run_dir).crop
    if cache_crop != predictor.pixel.crop:
        print(f"warning: {run_dir} holds {cache_crop} crops but {predictor.pixel.path} was trained on {predictor.pixel.crop} "
              "crops", file=sys.stderr)
    if predictor.landmark is None:
        return ev, predictor.pixel.predict_proba(ev.images, progress=True), None
    features, found = predictor.landmark.hands_for_run(run_dir)
    inputs = HandInputs(ev.images, features[ev.index], found[ev.index])
    return ev, predictor.predict_proba(inputs), inputs.found


def _one_vs_rest(y_true: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> dict[int, tuple[float, float]]:
    """class -> (ROC AUC, average precision) for every class with both positives and negatives."""
    out = {}
    for c in labels:
        positive = y_true == c
        if 0 < positive.sum() < len(y_true):
            out[int(c)] = (
                float(roc_auc_score(positive, proba[:, c])), float(average_precision_score(positive, proba[:, c]))
            )
    return out


def compute_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[str],
    sources: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, macro/weighted precision, recall and F1, per-class and per-source figures.

    `y_true`, `y_pred` index `classes`. Macro averages run over the classes present in `y_true` (of the
    whole set, or of one source), so a digits-only source is scored on digits; a wrong prediction still
    costs its true class recall, and `per_class` also lists classes only ever predicted (support 0).
    `proba` (N, C) adds one-vs-rest ROC AUC, average precision, top-3 accuracy and log loss.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    labels = np.unique(np.concatenate([y_true, y_pred]))
    names = [classes[i] for i in labels]
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=names, output_dict=True, zero_division=0
    )
    twin = twin_of(classes)
    twin_right = (y_pred == y_true) | ((y_pred >= 0) & (twin[np.clip(y_pred, 0, None)] == y_true))
    metrics: dict[str, Any] = {
        "n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred)),
        "twin_aware_accuracy": float(np.mean(twin_right)) if len(y_true) else float("nan"),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=np.unique(y_true), average=average, zero_division=0
        )
        metrics |= {f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)}
    ovr: dict[int, tuple[float, float]] = {}
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        ovr = _one_vs_rest(y_true, proba, labels)
        all_labels = np.arange(len(classes))
        metrics["roc_auc_macro"] = float(np.mean([v[0] for v in ovr.values()])) if ovr else None
        metrics["average_precision_macro"] = float(np.mean([v[1] for v in ovr.values()])) if ovr else None
        metrics["top3_accuracy"] = (
            float(top_k_accuracy_score(y_true, proba, k=3, labels=all_labels)) if len(classes) > 3 else None
        )
        rows = proba / proba.sum(axis=1, keepdims=True)  # float32 softmax sums drift by ~1e-7
        metrics["log_loss"] = float(log_loss(y_true, rows, labels=all_labels))
    metrics["per_class"] = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
            **({"roc_auc": ovr[c][0], "average_precision": ovr[c][1]} if c in ovr else {}),
        }
        for c, name in zip(labels.tolist(), names)
    }
    per_source = {}
    if sources is not None:
        sources = np.asarray(sources).astype(str)
        for s in np.unique(sources):
            m = sources == s
            per_source[str(s)] = {
                "n": int(m.sum()),
                "accuracy": float(accuracy_score(y_true[m], y_pred[m])),
                "twin_aware_accuracy": float(np.mean(twin_right[m])),
                "macro_f1": float(
                    f1_score(y_true[m], y_pred[m], labels=np.unique(y_true[m]), average="macro", zero_division=0)
                ),
            }
    metrics["per_source"] = per_source
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = np.argwhere(off > 0)
    pairs = pairs[np.argsort(-off[pairs[:, 0], pairs[:, 1]], kind="stable")][:10]
    metrics["top_confusions"] = [
        {"true": classes[t], "pred": classes[p], "count": int(off[t, p])} for t, p in pairs
    ]
    metrics["confusion_matrix"] = cm.tolist()
    return metrics


def worst_classes(metrics: dict[str, Any], k: int = N_WORST) -> list[tuple[str, dict[str, Any]]]:
    """The `k` classes with the lowest F1 among those with test images."""
    rows = [(c, v) for c, v in metrics["per_class"].items() if v["support"] > 0]
    return sorted(rows, key=lambda cv: (cv[1]["f1"], cv[1]["support"]))[:k]


# --- figures -------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, rendered by the Agg canvas

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall on the diagonal) over the classes present in the data."""
    import seaborn as sns

    cm = np.asarray(cm, dtype=float)
    present = np.flatnonzero(cm.sum(axis=1) + cm.sum(axis=0) > 0)
    cm = cm[np.ix_(present, present)]
    names = [classes[i] for i in present]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    annot = np.where(norm >= 0.05, np.vectorize(lambda v: f"{100 * v:.0f}")(norm), "")
    side = max(5.0, 0.3 * len(names) + 2.5)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    sns.heatmap(
        norm, ax=ax, cmap="Blues", vmin=0, vmax=1, square=True, annot=annot, fmt="",
        annot_kws={"fontsize": 6 if len(names) > 20 else 8}, linewidths=0.3, linecolor="#eeeeee",
        xticklabels=names, yticklabels=names, cbar_kws={"label": "fraction of the true class", "shrink": 0.6},
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(axis="both", labelsize=8, length=0)
    ax.tick_params(axis="y", labelrotation=0)
    ax.tick_params(axis="x", labelrotation=0)
    ax.set_title(title or "Normalised confusion matrix (cells in %, blanks < 5%)")
    fig.savefig(path)
    return path


def _curve_plot(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path, kind: str, title: str
) -> Path | None:
    """One-vs-rest ROC or PR curves: every class thin and grey, the worst classes in colour, micro and macro bold.

    None (no figure) when no class has both positive and negative images (one class, or one image).
    """
    labels = np.array(sorted(_one_vs_rest(y_true, proba, np.unique(y_true))), dtype=np.int64)
    if len(labels) == 0:
        return None
    curves, scores = {}, {}
    for c in labels:
        positive = y_true == c
        if kind == "roc":
            x, y, _ = roc_curve(positive, proba[:, c])
            scores[c] = auc(x, y)
        else:
            y, x, _ = precision_recall_curve(positive, proba[:, c])
            scores[c] = average_precision_score(positive, proba[:, c])
        curves[c] = (x, y)
    fig = _figure(9.8, 6.0)
    ax = fig.add_subplot()
    metric = "AUC" if kind == "roc" else "AP"
    for c in labels:
        ax.plot(*curves[c], color="0.7", lw=0.6, alpha=0.7)
    ax.plot([], [], color="0.7", lw=0.6, label=f"each class ({len(labels)})")
    onehot = (y_true[:, None] == labels[None, :]).ravel()
    flat = proba[:, labels].ravel()
    if kind == "roc":
        x, y, _ = roc_curve(onehot, flat)
        micro = auc(x, y)
        grid = np.linspace(0, 1, 501)
        mean_y = np.mean([np.interp(grid, *curves[c]) for c in labels], axis=0)
    else:
        y, x, _ = precision_recall_curve(onehot, flat)
        micro = average_precision_score(onehot, flat)
        grid = np.linspace(0, 1, 501)
        # precision as a function of recall, taking the best precision at recall >= r (interpolated PR)
        mean_y = np.mean(
            [np.array([curves[c][1][curves[c][0] >= r].max() for r in grid]) for c in labels], axis=0
        )
    if len(labels):
        ax.plot(x, y, color="black", lw=2, label=f"micro-average ({metric} = {micro:.3f})")
        ax.plot(grid, mean_y, color="tab:blue", lw=2, ls="--",
                label=f"macro-average (mean {metric} = {np.mean(list(scores.values())):.3f})")
    worst = sorted(labels, key=lambda c: scores[c])[:N_WORST]
    palette = ["tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink"]
    for c, color in zip(worst, palette):
        ax.plot(*curves[c], color=color, lw=1.4, label=f"class {classes[c]!r} ({metric} = {scores[c]:.3f})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls=":")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.01, 1), ylim=(0, 1.01))
    else:
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)  # outside: curves stay visible
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path


def plot_roc(y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path) -> Path | None:
    return _curve_plot(y_true, proba, classes, path, "roc", "One-vs-rest ROC curves (worst 5 classes in colour)")


def plot_pr(y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path) -> Path | None:
    return _curve_plot(y_true, proba, classes, path, "pr", "One-vs-rest precision-recall curves (worst 5 in colour)")


def plot_per_class_f1(metrics: dict[str, Any], path: Path) -> Path:
    """Horizontal bars of per-class F1, worst first, with support in the labels."""
    rows = sorted(metrics["per_class"].items(), key=lambda cv: cv[1]["f1"])
    fig = _figure(6.5, max(3.0, 0.2 * len(rows) + 1.2))
    ax = fig.add_subplot()
    f1 = [v["f1"] for _, v in rows]
    colors = ["tab:red" if v < 0.5 else "tab:orange" if v < 0.8 else "tab:blue" for v in f1]
    ax.barh(range(len(rows)), f1, color=colors)
    ax.set_yticks(range(len(rows)), [f"{c} (n={v['support']})" for c, v in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(metrics["macro_f1"], color="black", ls="--", lw=1, label=f"macro F1 = {metrics['macro_f1']:.3f}")
    ax.set(xlim=(0, 1), xlabel="F1")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("F1 per class (worst at the top)")
    fig.savefig(path)
    return path


def plot_errors(
    images: np.ndarray, y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path, k: int = 24
) -> Path | None:
    """The `k` most confident mistakes, titled `true -> predicted (probability)`."""
    y_pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    if len(wrong) == 0:
        return None
    wrong = wrong[np.argsort(-proba[wrong, y_pred[wrong]])][:k]
    cols = min(8, len(wrong))
    rows = -(-len(wrong) // cols)
    fig = _figure(1.4 * cols, 1.6 * rows + 0.4)
    for j, i in enumerate(wrong):
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.imshow(images[i])
        ax.set_title(f"{classes[y_true[i]]} → {classes[y_pred[i]]} ({proba[i, y_pred[i]]:.2f})", fontsize=8)
        ax.axis("off")
    fig.suptitle("Most confident mistakes: true → predicted (probability)", fontsize=10)
    fig.savefig(path)
    return path


def plot_training_curves(history_csv: Path, path: Path) -> Path | None:
    """Loss, accuracy and macro-F1 per epoch from a trainer's `history.csv`; None when it holds no epoch."""
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    try:
        h = pd.read_csv(history_csv)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if "epoch" not in h or h.empty:
        return None
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "validation")]),
        ("accuracy", [("train_acc", "train"), ("val_acc", "validation")]),
        ("macro F1", [("train_macro_f1", "train"), ("val_macro_f1", "validation")]),
    ]
    panels = [(t, [(c, lab) for c, lab in cols if c in h]) for t, cols in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig = _figure(4.2 * len(panels), 3.6)
    best = int(h["epoch"][h["val_macro_f1"].idxmax()]) if "val_macro_f1" in h and h["val_macro_f1"].notna().any() else None
    for j, (title, cols) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        for col, label in cols:
            ax.plot(h["epoch"], h[col], marker="o" if len(h) < 20 else None, ms=3, label=label)
        if best is not None:
            ax.axvline(best, color="0.4", ls=":", lw=1, label=f"best val F1 (epoch {best})")
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title != "loss":
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training curves ({history_csv})", fontsize=9)
    fig.savefig(path)
    return path


def find_history(model_path: Path, train_dir: str | Path | None = None) -> Path | None:
    """`history.csv` in `train_dir`, else next to a `.pt` checkpoint."""
    candidates = [Path(train_dir) / HISTORY_NAME] if train_dir else []
    if model_path.suffix.lower() == ".pt":
        candidates.append(model_path.parent / HISTORY_NAME)
    return next((c for c in candidates if c.is_file()), None)


# --- report --------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def format_summary(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal: headline figures, per source, worst classes."""
    size = f"{metrics['model_bytes'] / 1024:.0f} KiB" if metrics.get("model_bytes") else "?"
    params = f", {metrics['params']:,} params" if metrics.get("params") else ""
    lines = [
        f"model    {metrics.get('model')} ({metrics.get('model_name') or metrics.get('model_kind')}{params}, {size})",
        f"data     {metrics.get('data')}" + (f" [{metrics['split']}]" if metrics.get("split") else "")
        + f": {metrics['n']} images" + (f", {len(metrics.get('skipped', []))} skipped" if metrics.get("skipped") else ""),
        f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   weighted-F1 {metrics['weighted_f1']:.4f}"
        f"   macro-P {metrics['macro_precision']:.4f}   macro-R {metrics['macro_recall']:.4f}"
        + (f"   ROC-AUC {metrics['roc_auc_macro']:.4f}" if metrics.get("roc_auc_macro") is not None else ""),
    ]
    if metrics.get("landmark_model"):
        lines.append(
            f"fused    with {metrics['landmark_model']} (weight {metrics['fusion_weight']}): hand found in "
            f"{metrics['hand_found']}/{metrics['n']} images, the pixel model alone decides the rest"
        )
    if metrics["per_source"]:
        width = max(8, *(len(s) for s in metrics["per_source"]))
        lines.append(f"{'source':<{width}}  {'n':>6}  {'accuracy':>8}  {'macro-F1':>8}")
        for s, v in metrics["per_source"].items():
            lines.append(f"{s:<{width}}  {v['n']:>6}  {v['accuracy']:>8.4f}  {v['macro_f1']:>8.4f}")
    worst = ", ".join(f"{c} {v['f1']:.2f}" for c, v in worst_classes(metrics))
    lines.append(f"worst classes (F1): {worst}")
    if metrics.get("out_dir"):
        lines.append(f"wrote {metrics['out_dir']}/metrics.json, report.md and {len(metrics.get('figures', {}))} figure(s)")
    return "\n".join(lines)


def write_report(metrics: dict[str, Any], path: Path) -> Path:
    """A short markdown report: headline table, per-source table, worst classes, figure links."""
    head = [
        ("model", f"`{metrics.get('model')}` ({metrics.get('model_kind')}, {metrics.get('model_name')})"),
        ("parameters", _fmt(metrics.get("params"))),
        ("model file size", f"{metrics['model_bytes'] / 1024:.1f} KiB" if metrics.get("model_bytes") else "–"),
        ("data", f"`{metrics.get('data')}`" + (f" split `{metrics['split']}`" if metrics.get("split") else "")),
        ("images scored", _fmt(metrics["n"])),
        ("images skipped", _fmt(len(metrics.get("skipped", [])))),
        ("accuracy", _fmt(metrics["accuracy"])),
        ("macro F1", _fmt(metrics["macro_f1"])),
        ("weighted F1", _fmt(metrics["weighted_f1"])),
        ("macro precision", _fmt(metrics["macro_precision"])),
        ("macro recall", _fmt(metrics["macro_recall"])),
        ("top-3 accuracy", _fmt(metrics.get("top3_accuracy"))),
        ("ROC AUC (macro, one-vs-rest)", _fmt(metrics.get("roc_auc_macro"))),
        ("average precision (macro)", _fmt(metrics.get("average_precision_macro"))),
    ]
    lines = ["# Evaluation report", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in head]
    if metrics["per_source"]:
        lines += ["", "## Per source", "", "| source | n | accuracy | macro F1 |", "|---|---:|---:|---:|"]
        lines += [
            f"| {s} | {v['n']} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} |" for s, v in metrics["per_source"].items()
        ]
    classes, cm = metrics.get("classes"), np.array(metrics.get("confusion_matrix", []))
    confusions: dict[str, str] = {}
    if classes and cm.size:
        off = cm - np.diag(np.diag(cm))
        for i, c in enumerate(classes):
            if off[i].max() > 0:
                confusions[c] = f"{classes[off[i].argmax()]} ({off[i].max()} of {cm[i].sum()})"
    lines += ["", "## Worst classes", "", "| class | F1 | precision | recall | n | most often taken for |", "|---|---:|---:|---:|---:|---|"]
    lines += [
        f"| {c} | {v['f1']:.3f} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} | {confusions.get(c, '–')} |"
        for c, v in worst_classes(metrics)
    ]
    if metrics.get("figures"):
        lines += ["", "## Figures", ""]
        lines += [f"- [{name}]({file})" for name, file in metrics["figures"].items()]
        lines += [""] + [f"![{name}]({file})" for name, file in metrics["figures"].items()]
    if metrics.get("skipped"):
        lines += ["", "## Skipped", ""] + [f"- `{s['path']}`: {s['reason']}" for s in metrics["skipped"][:50]]
        if len(metrics["skipped"]) > 50:
            lines.append(f"- … and {len(metrics['skipped']) - 50} more (see metrics.json)")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- stage ---------------------------------------------------------------------------------------------
def evaluate(
    model_path: str | Path | None,
    data: str | Path,
    out_dir: str | Path | None = None,
    *,
    split: str = "test",
    train_dir: str | Path | None = None,
    threads: int | None = None,
    predictor: SignPredictor | Predictor | None = None,
    landmark_model: str | Path | None = None,
    fusion_weight: float | None = None,
    classes: str = "all",
    models_dir: str | Path = "models",
) -> dict[str, Any]:
    """Score a predictor on `data`; write `metrics.json`, `report.md` and PNG figures to `out_dir`.

    The predictor is `predictor`, else `model_path` (with `landmark_model`: fused), else the shipped one in
    `models_dir` (`fusion.load_sign_predictor`). `data` is a run folder (its `split` of cache.npz, hands
    from its landmarks.npz) or a folder of class folders (hands detected, images cropped as the model was
    trained). `classes` (`all`, `letters`, `digits`) restricts the answers; an unsure answer on an image
    without a detected hand is "no hand found" and counts as wrong. Skipped folders and unreadable files
    are printed to stderr and listed in the metrics. Returns the metrics.
    """
    data = Path(data)
    if isinstance(predictor, Predictor):
        predictor = SignPredictor(predictor)
    if predictor is None:
        predictor = load_sign_predictor(model_path, landmark_model, models_dir=models_dir, weight=fusion_weight,
                                        threads=threads)
    model_path = Path(predictor.pixel.path)
    out = Path(out_dir) if out_dir is not None else default_out_dir(model_path, data)
    if predictor.landmark is not None and out_dir is None:
        out = out.parent / f"fused-{out.name}"
    mask = class_mask(predictor.classes, classes)
    if is_run_dir(data):
        ev, proba, found = run_split(data, split, predictor)
    else:
        ev, proba, found = load_folder(data, predictor)
    for path, reason in ev.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    proba = restrict_proba(proba, mask)
    answers = [predictor.label(p, bool(h)) for p, h in zip(proba, found if found is not None else np.ones(len(proba)))]
    no_hand = np.array([a == NO_HAND_LABEL for a in answers], bool)
    y_pred = np.where(no_hand, -1, proba.argmax(axis=1))
    metrics = compute_metrics(ev.labels, y_pred, proba, predictor.classes, ev.sources)
    files = [model_path] + ([predictor.landmark.path] if predictor.landmark else [])
    landmark = predictor.landmark
    metrics = {
        "model": str(model_path),
        "model_kind": predictor.pixel.kind,
        "model_name": predictor.pixel.model_name + (" + landmark_fastkan (fused)" if landmark else ""),
        "landmark_model": str(landmark.path) if landmark else None,
        "fusion_weight": predictor.weight if landmark else None,
        "crop": predictor.pixel.crop,
        "model_bytes": sum(f.stat().st_size for f in files) if all(f.is_file() for f in files) else None,
        "params": (predictor.pixel.params or 0) + ((landmark.params or 0) if landmark else 0) or None,
        "image_size": predictor.pixel.image_size,
        "classes": predictor.classes,
        "answer_classes": classes,
        "data": str(data),
        "split": split if is_run_dir(data) else None,
        "hand_found": int(found.sum()) if found is not None else None,
        "hand_found_rate": float(found.mean()) if found is not None and len(found) else None,
        "no_hand_answers": int(no_hand.sum()),
        **metrics,
        "skipped": [{"path": p, "reason": r} for p, r in ev.skipped],
        "out_dir": str(out),
    }
    classes_ = predictor.classes
    output_dir(out, "--out")
    title = f"Normalised confusion matrix, accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f} (cells in %, blanks < 5%)"
    figures: dict[str, Path | None] = {
        "confusion matrix": plot_confusion(np.array(metrics["confusion_matrix"]), classes_, out / "confusion_matrix.png", title),
        "per-class F1": plot_per_class_f1(metrics, out / "per_class_f1.png"),
        "ROC curves": plot_roc(ev.labels, proba, classes_, out / "roc_curves.png"),
        "precision-recall curves": plot_pr(ev.labels, proba, classes_, out / "pr_curves.png"),
        "confident mistakes": plot_errors(ev.images, ev.labels, proba, classes_, out / "errors.png"),
    }
    history = find_history(model_path, train_dir)
    if history is not None:
        figures["training curves"] = plot_training_curves(history, out / "training_curves.png")
    metrics["history"] = str(history) if history else None
    metrics["figures"] = {k: v.name for k, v in figures.items() if v is not None}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(metrics, out / "report.md")
    return metrics
