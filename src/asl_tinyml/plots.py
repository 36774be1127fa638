"""The figures of an evaluation: confusion matrix, ROC and precision-recall curves, per-class F1, the most
confident mistakes, and training curves; and of the motion models: their confusion matrix and the
fingertip paths of recorded `j`, `z` and static letters.

Each `plot_*` function draws one figure with matplotlib's object API (a `Figure` rendered by the Agg canvas,
no pyplot and so no global state), saves it as a PNG at `path` and returns `path`, or None when there is
nothing to draw. The metrics themselves are computed in `evaluate` (and `motion.score`); this module only draws them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

DPI = 110
WORST_COLOURS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink")  # one per highlighted class
CURVE_GRID = np.linspace(0, 1, 501)  # x values of the macro-average curves


def new_figure(width: float, height: float) -> Any:
    """An empty `width` x `height` inch figure with a constrained layout, drawn by the Agg canvas."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


# --- confusion matrix ----------------------------------------------------------------------------------
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
    fig = new_figure(side + 1.2, side)
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


# --- ROC and precision-recall curves -------------------------------------------------------------------
def _scorable_classes(y_true: np.ndarray) -> np.ndarray:
    """The classes of `y_true` with both positive and negative images, so that a one-vs-rest curve exists."""
    return np.array(
        [c for c in np.unique(y_true) if 0 < np.sum(y_true == c) < len(y_true)], dtype=np.int64
    )


def _class_curve(positive: np.ndarray, score: np.ndarray, kind: str) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """One class's one-vs-rest curve as (x, y) and its area: ROC (x FPR, y TPR; AUC) or PR (x recall,
    y precision; average precision)."""
    if kind == "roc":
        x, y, _ = roc_curve(positive, score)
        return (x, y), float(auc(x, y))
    y, x, _ = precision_recall_curve(positive, score)
    return (x, y), float(average_precision_score(positive, score))


def _macro_curve(curves: list[tuple[np.ndarray, np.ndarray]], kind: str) -> np.ndarray:
    """The mean of the class curves on `CURVE_GRID`; for PR each curve is interpolated (the best precision
    at recall >= r)."""
    if kind == "roc":
        return np.mean([np.interp(CURVE_GRID, *xy) for xy in curves], axis=0)
    return np.mean([np.array([y[x >= r].max() for r in CURVE_GRID]) for x, y in curves], axis=0)


def _curve_plot(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path, kind: str, title: str
) -> Path | None:
    """One-vs-rest ROC (`kind` "roc") or PR ("pr") curves: every class thin and grey, the worst classes in
    colour, micro and macro averages bold.

    None (no figure) when no class has both positive and negative images (one class, or one image).
    """
    labels = _scorable_classes(y_true)
    if len(labels) == 0:
        return None
    curves, scores = {}, {}
    for c in labels:
        curves[c], scores[c] = _class_curve(y_true == c, proba[:, c], kind)
    metric = "AUC" if kind == "roc" else "AP"
    fig = new_figure(9.8, 6.0)
    ax = fig.add_subplot()
    for c in labels:
        ax.plot(*curves[c], color="0.7", lw=0.6, alpha=0.7)
    ax.plot([], [], color="0.7", lw=0.6, label=f"each class ({len(labels)})")
    onehot = (y_true[:, None] == labels[None, :]).ravel()
    (x, y), micro = _class_curve(onehot, proba[:, labels].ravel(), kind)
    ax.plot(x, y, color="black", lw=2, label=f"micro-average ({metric} = {micro:.3f})")
    ax.plot(CURVE_GRID, _macro_curve([curves[c] for c in labels], kind), color="tab:blue", lw=2, ls="--",
            label=f"macro-average (mean {metric} = {np.mean(list(scores.values())):.3f})")
    worst = sorted(labels, key=lambda c: scores[c])[: len(WORST_COLOURS)]
    for c, color in zip(worst, WORST_COLOURS):
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
    """One-vs-rest ROC curves of every class, the 5 with the lowest AUC in colour, micro and macro averages."""
    return _curve_plot(y_true, proba, classes, path, "roc", "One-vs-rest ROC curves (worst 5 classes in colour)")


def plot_pr(y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path) -> Path | None:
    """One-vs-rest precision-recall curves of every class, the 5 with the lowest average precision in colour."""
    return _curve_plot(y_true, proba, classes, path, "pr", "One-vs-rest precision-recall curves (worst 5 in colour)")


# --- per class, mistakes, training ---------------------------------------------------------------------
def plot_per_class_f1(metrics: dict[str, Any], path: Path) -> Path:
    """Horizontal bars of per-class F1 (`metrics["per_class"]`), worst first, with support in the labels."""
    rows = sorted(metrics["per_class"].items(), key=lambda cv: cv[1]["f1"])
    fig = new_figure(6.5, max(3.0, 0.2 * len(rows) + 1.2))
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
    """The `k` most confident mistakes, titled `true -> predicted (probability)`; None when there is none."""
    y_pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    if len(wrong) == 0:
        return None
    wrong = wrong[np.argsort(-proba[wrong, y_pred[wrong]])][:k]
    cols = min(8, len(wrong))
    rows = -(-len(wrong) // cols)
    fig = new_figure(1.4 * cols, 1.6 * rows + 0.4)
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
    fig = new_figure(4.2 * len(panels), 3.6)
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


# --- motion ----------------------------------------------------------------------------------------------
def plot_motion_confusion(metrics: dict[str, Any], path: Path, title: str) -> Path | None:
    """The confusion matrix of a motion model's metrics (`motion.score`: `classes`, `confusion`); None when empty."""
    if not metrics.get("confusion"):
        return None
    return plot_confusion(np.asarray(metrics["confusion"]), metrics["classes"], path, title)


def plot_trajectories(data_path: str | Path, path: str | Path, letters: tuple[str, ...] = ("j", "z", "i"),
                      per_letter: int = 6, seed: int = 0) -> Path:
    """The fingertip paths of a few recordings per letter (pinky tip for `j` and `i`, index tip otherwise),
    relative to their mean and in palm sizes, image y downwards: `j` and `z` travel, a static letter stays."""
    from .motion.data import DEFAULT_ASPECT, _present, load_sequences, split_parts
    from .motion.features import _mirror, _palm_size, signing_hand_is_left

    data = load_sequences(data_path)
    parts = split_parts(data.x)
    _mirror(parts, signing_hand_is_left(parts))
    rng = np.random.default_rng(seed)
    fig = new_figure(3.2 * len(letters), 3.4)
    axes = fig.subplots(1, len(letters), sharex=True, sharey=True)
    for ax, letter in zip(np.atleast_1d(axes), letters):
        rows = np.flatnonzero(data.labels == letter)
        tip = 20 if letter in ("j", "i") else 8
        for k, row in enumerate(rng.choice(rows, size=min(per_letter, len(rows)), replace=False)):
            hand = parts.right[row]
            seen = _present(hand)
            if seen.sum() < 2:
                continue
            xy = hand[seen, tip, :2] * np.array([1.0, DEFAULT_ASPECT])
            xy = (xy - xy.mean(0)) / _palm_size(hand[None], seen[None])[0]
            ax.plot(xy[:, 0], xy[:, 1], "-", lw=1.2, alpha=0.8, color=f"C{k}")
            ax.plot(xy[-1, 0], xy[-1, 1], "o", ms=3, color=f"C{k}")
        ax.set_title(f"{letter}: {'pinky' if tip == 20 else 'index'} tip, {min(per_letter, len(rows))} recordings")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    first = np.atleast_1d(axes)[0]
    first.invert_yaxis()
    first.set_ylabel("palm sizes (image y down)")
    fig.supxlabel("palm sizes (camera view; dots mark the last frame)")
    fig.savefig(path)
    return Path(path)
