"""The motion stages the CLI and the pipeline call: train (held-out folds, then the shipped model, exported),
evaluate, predict, and the latency of one window."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import UserError, output_dir
from ..model_sets import describe_file
from .data import (
    DEFAULT_ASPECT,
    HOLDOUT_SESSIONS,
    MOTION_LETTERS,
    SequenceSet,
    concat_sequences,
    load_sequences,
    load_word_collection,
)
from .export import MotionPredictor, default_model_path, export_motion, save_motion_model
from .features import sequence_features
from .train import (
    MODEL_NAME,
    Sampling,
    decide,
    grouped_folds,
    holdout,
    holdout_split,
    score,
    stray_rate,
    thresholds,
    train_motion_model,
)

MODEL_OPTIONS = ("channels", "blocks", "kernel", "hidden", "num_grids", "dropout")  # the rest of **options is training's
WORDS_SAMPLING = Sampling(samples=4000, class_power=1.0)  # the words of the traduttore sessions and the collection
KEY_WORDS = ("hello", "thank-you", "iloveyou")  # recorded by 100-160 repositories each: the held-out bar


def holdout_sessions(sessions: np.ndarray, asked: tuple[str, ...] | None, path: str | Path) -> tuple[str, ...]:
    """The sessions held out in turn: each of `asked`, which must be sessions of the file at `path`, or with
    `asked` None the default ones (`HOLDOUT_SESSIONS`) the file holds."""
    present = sorted(set(np.asarray(sessions).astype(str)))
    if asked is None:
        return tuple(h for h in HOLDOUT_SESSIONS if h in present)
    unknown = [h for h in asked if h not in present]
    if unknown:
        raise UserError(f"{path} has no session {', '.join(unknown)} to hold out (its sessions: {', '.join(present)}); "
                        "pass --holdout some of them, or --holdout alone to skip the folds")
    return tuple(asked)


def load_motion_data(data_path: str | Path, people: str | Path | None = None,
                     limit: int | None = None) -> tuple[SequenceSet, np.ndarray]:
    """A sequence file, joined (words) with the word collection `people`, and a mask of the collection's rows.
    `limit`: at most this many recordings per class and group (a quick slice)."""
    data = load_sequences(data_path)
    sets = [data] + ([load_word_collection(people)] if people is not None and data.kind == "words" else [])
    joined = concat_sequences(sets) if len(sets) > 1 else data
    collection = np.arange(len(joined)) >= len(data)
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be at least 1 window per class and group, got {limit}")
        rank = pd.DataFrame({"label": joined.labels, "group": joined.groups}).groupby(["label", "group"]).cumcount()
        keep = np.flatnonzero(rank.to_numpy() < limit)  # the first `limit` of each, in file order
        joined, collection = joined.subset(keep), collection[keep]
    return joined, collection


def _folds_summary(data: SequenceSet, test: np.ndarray, proba: np.ndarray, classes: list[str],
                   per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Held-out-repository figures pooled over the folds: every word's recall (as `decide` answers), its
    recordings and repositories, and the worst fold of each key word."""
    labels = data.labels[test]
    m = score(labels, proba, classes, **thresholds("words"))
    words = {w: {"recall": v["recall"], "n": v["support"], "groups": len(np.unique(data.groups[test][labels == w]))}
             for w, v in m["per_class"].items() if v["support"] > 0}
    return {"n": int(len(test)), "groups": int(len(np.unique(data.groups[test]))), "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"], "per_word": dict(sorted(words.items(), key=lambda kv: -kv[1]["n"])),
            "key_words": {w: words[w]["recall"] for w in KEY_WORDS if w in words},
            "worst_fold": {w: min(f["per_class"][w]["recall"] for f in per_fold if w in f["per_class"])
                           for w in KEY_WORDS if w in words},
            "by_repository": {w: repository_spread(labels, np.asarray(classes)[decide(proba, classes, **thresholds("words"))],
                                                   data.groups[test], w) for w in KEY_WORDS if w in words}}


def repository_spread(labels: np.ndarray, predicted: np.ndarray, groups: np.ndarray, word: str) -> dict[str, Any]:
    """How a word's held-out errors spread over repositories: how many repositories sign it, how many are
    read wrong on every recording (a repository signing it differently, not a model near the line), their share
    of the errors, the recall without them, and what the errors are read as (most often first)."""
    rows = labels == word
    right, group = predicted[rows] == word, groups[rows]
    names = np.unique(group)
    never = [str(g) for g in names if not right[group == g].any()]
    wrong = ~right
    lost = np.isin(group, never)
    as_what, counts = np.unique(predicted[rows][wrong], return_counts=True)
    return {"repositories": int(len(names)), "never_right": len(never), "never_right_names": never,
            "errors": int(wrong.sum()), "errors_in_never_right": int((wrong & lost).sum()),
            "recall_without_them": float(right[~lost].mean()) if (~lost).any() else float("nan"),
            "read_as": {str(a): int(c) for a, c in sorted(zip(as_what, counts), key=lambda ac: -ac[1])[:5]}}


def write_word_recall(path: Path, summary: dict[str, Any]) -> Path:
    """`per_word_recall.csv`: word, held-out recall, recordings, repositories (most recorded first)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["word", "recall", "recordings", "groups"])
        for word, v in summary["per_word"].items():
            writer.writerow([word, f"{v['recall']:.4f}", v["n"], v["groups"]])
    return path


def train_motion(
    data_path: str | Path,
    out_dir: str | Path,
    models_dir: str | Path | None = "models",
    *,
    people: str | Path | None = None,
    folds: int = 0,
    holdouts: tuple[str, ...] | None = None,
    epochs: int = 20,
    seed: int = 0,
    limit: int | None = None,
    final: bool = True,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """The held-out folds, then the shipped model on every recording, exported to
    `models_dir/asl_motion_<kind>.pt`, `.onnx` and `_int8.onnx` (checked against PyTorch).

    Words with `people` (the word collection): trained on the union of both files, drawn by class and group
    (`WORDS_SAMPLING`); `folds` > 0 runs a grouped k-fold over the collection's repositories (the sessions
    train every fold) and writes every word's held-out recall to `out_dir/words/folds.json` and
    `per_word_recall.csv`. `holdouts`: the sessions held out in turn (`holdout_sessions`; None: the default ones
    the file holds). Writes `out_dir/<kind>/metrics.json` and
    confusion figures; returns the metrics. `limit`: at most this many recordings per class and group."""
    from ..plots import plot_motion_confusion
    from ..progress import bar

    if epochs < 1:
        raise UserError(f"a motion model needs at least 1 epoch, got {epochs}")
    if folds == 1:
        raise UserError("--folds must be 0 (none) or at least 2")
    data, collection = load_motion_data(data_path, people, limit)
    holdouts = holdout_sessions(data.sessions, holdouts, data_path)
    kind = data.kind
    if collection.any():
        options.setdefault("sampling", WORDS_SAMPLING)
    classes = [str(c) for c in sorted(set(data.labels))]
    out = Path(out_dir) / kind
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"kind": kind, "data": [str(data_path)] + [str(people)] * bool(collection.any()),
                              "n": len(data), "frames": sorted({int(n) for n in data.lengths}), "classes": classes,
                              "model": MODEL_NAME, "folds": []}
    splits: list[tuple[str, tuple[np.ndarray, np.ndarray] | None]] = [(held, None) for held in holdouts]
    if folds and collection.any():
        splits += [(f"repositories {i + 1}/{folds}", split) for i, split in
                   enumerate(grouped_folds(data.labels, data.groups, folds, seed, collection))]
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    for held, split in bar(splits, progress=progress, desc=f"motion {kind} folds", unit="fold"):
        fold, _, proba = holdout(data, held, classes=classes, seed=seed, epochs=epochs, progress=progress,
                                 split=split, **options)
        test = split[1] if split is not None else holdout_split(data.sessions, held)[1]
        if split is None:
            m = score(data.labels[test], proba, classes, **thresholds(kind))
            plot_motion_confusion(m, out / f"confusion_{held}.png", f"{kind}: held-out session {held}")
            result["folds"].append(fold)
        else:
            pooled.append((test, proba))
            result.setdefault("repository_folds", []).append(fold)
    sessions = result["folds"]
    if sessions:
        result["holdout_mean_accuracy"] = float(np.mean([f["trained_classes"]["accuracy"] for f in sessions]))
        result["holdout_mean_macro_f1"] = float(np.mean([f["trained_classes"]["macro_f1"] for f in sessions]))
        for letter in MOTION_LETTERS if kind == "letters" else ():
            recalls = [f["per_class"][letter]["recall"] for f in sessions if letter in f["per_class"]]
            result[f"{letter}_recall"] = float(np.mean(recalls)) if recalls else None
    if pooled:
        test = np.concatenate([t for t, _ in pooled])
        summary = _folds_summary(data, test, np.concatenate([p for _, p in pooled]), classes, result["repository_folds"])
        summary.update(folds=folds, seed=seed, epochs=epochs)
        result["held_out_repositories"] = summary
        (out / "folds.json").write_text(json.dumps(summary, indent=2))
        write_word_recall(out / "per_word_recall.csv", summary)
    if final:
        start = time.perf_counter()
        model, _ = train_motion_model(data, classes, np.arange(len(data)), seed=seed, epochs=epochs,
                                      progress=progress, **options)
        result["final_train_seconds"] = round(time.perf_counter() - start, 1)
        from ..models import count_parameters

        result["params"] = count_parameters(model)
        arch = {k: v for k, v in options.items() if k in MODEL_OPTIONS}
        ckpt = save_motion_model(out / "best.pt", model, kind, classes, {"holdout": result.get("holdout_mean_accuracy")},
                                 **arch)
        if models_dir is not None:
            result["export"] = export_motion(ckpt, models_dir, data)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def evaluate_motion(data_path: str | Path, model: str | Path | None = None, out_dir: str | Path | None = None,
                    models_dir: str | Path | None = None, aspect: float = DEFAULT_ASPECT, threads: int = 1) -> dict[str, Any]:
    """Score a motion model on an `.npz` of windows (any number of frames): accuracy, macro-F1, per-class
    precision/recall/F1, the confusion matrix (with `out_dir`: `metrics.json` and its figure there; without,
    nothing is written). Labels outside the model's classes are counted under `skipped`; a file with none of
    them is a UserError. Without `model`, the shipped letters or words model is picked by the landmark
    width (126 or 258)."""
    from ..plots import plot_motion_confusion

    data = load_sequences(data_path)
    path = Path(model) if model else default_model_path(data.kind, models_dir)
    predictor = MotionPredictor(path, threads=threads)
    if predictor.kind != data.kind:
        raise UserError(f"{path} is a {predictor.kind} model but {data_path} holds {data.kind} windows")
    start = time.perf_counter()
    proba = predictor.predict_proba(data.x, aspect)
    ms = (time.perf_counter() - start) * 1000 / max(len(data), 1)
    metrics = score(data.labels, proba, predictor.classes, **predictor.rule)
    if metrics["n"] == 0:
        raise UserError(f"no window of {data_path} is labelled with a class of {path} (labels: "
                        f"{', '.join(sorted(metrics['skipped']))}; classes: {', '.join(predictor.classes)}); "
                        "pass windows of its classes or another --model")
    metrics.update(model=str(path), data=str(data_path), kind=data.kind, frames=int(data.x.shape[1]),
                   ms_per_window=round(ms, 3))
    for letter in MOTION_LETTERS if data.kind == "letters" else ():
        if letter in metrics.get("per_class", {}):
            metrics[f"{letter}_recall"] = metrics["per_class"][letter]["recall"]
    if data.kind == "letters":  # still letters the model reads as j or z, as its file's thresholds decide
        metrics["strays"] = stray_rate(data.labels, np.asarray(predictor.classes)[decide(proba, predictor.classes,
                                                                                          **predictor.rule)])
    metrics["model_set"] = describe_file(path)
    metrics["figures"] = []
    if out_dir is None:
        return metrics
    out = output_dir(out_dir, "--out")
    figure = plot_motion_confusion(metrics, out / "confusion_matrix.png", f"{path.name} on {Path(data_path).name}")
    metrics["figures"] = [str(figure)] if figure else []
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def predict_motion(data_path: str | Path, model: str | Path | None = None, models_dir: str | Path | None = None,
                   topk: int = 3, aspect: float = DEFAULT_ASPECT) -> list[dict[str, Any]]:
    """The top-k classes of every window of an `.npz` (its `label` is reported next to them when present)."""
    if topk < 1:
        raise UserError(f"--topk must be at least 1, got {topk}")
    data = load_sequences(data_path)
    path = Path(model) if model else default_model_path(data.kind, models_dir)
    predictor = MotionPredictor(path)
    proba = predictor.predict_proba(data.x, aspect)
    decided = decide(proba, predictor.classes, **predictor.rule)
    model_set = describe_file(path)
    rows = []
    for i, p in enumerate(proba):
        order = np.argsort(-p)[:topk]
        rows.append({"index": i, "label": str(data.labels[i]), "prediction": predictor.classes[decided[i]],
                     "top": [{"label": predictor.classes[k], "prob": round(float(p[k]), 4)} for k in order],
                     "model_set": model_set})
    return rows


def window_latency(path: str | Path, frames: int = 30, runs: int = 300) -> dict[str, float]:
    """Median milliseconds of one window on one thread: features + model, and the model alone."""
    predictor = MotionPredictor(path, threads=1)
    rng = np.random.default_rng(0)
    window = rng.uniform(0.3, 0.7, (1, frames, predictor.width)).astype(np.float32)
    feats = sequence_features(window, DEFAULT_ASPECT, predictor.kind)
    for _ in range(20):
        predictor.predict_proba(window)
    full, model_only = [], []
    for _ in range(runs):
        t = time.perf_counter()
        predictor.predict_proba(window)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        predictor.logits_features(feats)
        model_only.append(time.perf_counter() - t)
    return {"frames": frames, "ms_window": round(1000 * float(np.median(full)), 4),
            "ms_model": round(1000 * float(np.median(model_only)), 4)}
