"""Evaluate a model file on a run's split or on any folder of class folders: metrics, figures, report.

Labels are matched to the model by class name, so a model trained with `del`/`nothing` or without some
classes is still scored correctly. This module computes the metrics and writes `metrics.json` and
`report.md`; the PNG figures are drawn by `plots`.
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
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from .answers import NO_HAND_LABEL, class_mask, restrict_proba, twin_of
from .config import IMAGE_EXTENSIONS, UserError, canonical_classes, output_dir
from .fusion import HandInputs, SignPredictor, load_sign_predictor
from .inference import Predictor
from .model_sets import describe_file
from .merge import find_class_dirs, read_manifest
from .plots import plot_confusion, plot_errors, plot_per_class_f1, plot_pr, plot_roc, plot_training_curves
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


def default_out_dir(model_path: str | Path, data: str | Path, fused: bool = False) -> Path | None:
    """`<run>/eval/<name>` for a run folder (name: the model file's stem, or its folder for best.pt; `fused-<name>`
    for the fused predictor), else None: a folder of class folders gets outputs only where `--out` says."""
    if not is_run_dir(data):
        return None
    model_path = Path(model_path)
    name = model_path.parent.name if model_path.stem in GENERIC_STEMS and model_path.parent.name else model_path.stem
    return Path(data) / "eval" / (f"fused-{name}" if fused else name)


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
    else:
        lines.append("nothing written: --out DIR keeps metrics.json, report.md and the figures")
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
    models_dir: str | Path | None = None,
    into_run: bool = True,
) -> dict[str, Any]:
    """Score a predictor on `data`; write `metrics.json`, `report.md` and PNG figures to `out_dir`, else (with
    `into_run`) into a run folder's `eval/<model>` (`default_out_dir`); otherwise nothing is written.

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
    out = Path(out_dir) if out_dir is not None else (
        default_out_dir(model_path, data, predictor.landmark is not None) if into_run else None)
    if out is not None:
        output_dir(out, "--out", create=False)  # a file in the way is refused before the scoring
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
        "model_set": describe_file(model_path),
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
        "out_dir": str(out) if out is not None else None,
    }
    history = find_history(model_path, train_dir)
    metrics["history"] = str(history) if history else None
    metrics["figures"] = {}
    if out is not None:
        write_outputs(metrics, ev.images, ev.labels, proba, output_dir(out, "--out"), history)
    return metrics


def write_outputs(metrics: dict[str, Any], images: np.ndarray, labels: np.ndarray, proba: np.ndarray, out: Path,
                  history: Path | None) -> None:
    """The figures, `metrics.json` (their names under `figures`) and `report.md` of one evaluation, into `out`."""
    classes_ = metrics["classes"]
    title = f"Normalised confusion matrix, accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f} (cells in %, blanks < 5%)"
    figures: dict[str, Path | None] = {
        "confusion matrix": plot_confusion(np.array(metrics["confusion_matrix"]), classes_, out / "confusion_matrix.png", title),
        "per-class F1": plot_per_class_f1(metrics, out / "per_class_f1.png"),
        "ROC curves": plot_roc(labels, proba, classes_, out / "roc_curves.png"),
        "precision-recall curves": plot_pr(labels, proba, classes_, out / "pr_curves.png"),
        "confident mistakes": plot_errors(images, labels, proba, classes_, out / "errors.png"),
    }
    if history is not None:
        figures["training curves"] = plot_training_curves(history, out / "training_curves.png")
    metrics["figures"] = {k: v.name for k, v in figures.items() if v is not None}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(metrics, out / "report.md")
