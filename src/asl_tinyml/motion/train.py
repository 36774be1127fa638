"""Training a motion model (`train_motion_model`), its metrics (`decide`, `score`) and the held-out-session
fold (`holdout`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import UserError
from .augment import TRANSPLANT, Augment, augment_parts, transplant_motion
from .data import DEFAULT_ASPECT, IDLE, Parts, SequenceSet, split_parts
from .features import frame_width, sequence_features

MODEL_NAME = "motion_fastkan"
# a window whose best class is under this probability counts as `idle` (words: measured on the held-out
# sessions; letters: no held-out idle to measure it on, so off)
IDLE_BELOW = {"letters": 0.0, "words": 0.5}


def make_model(kind: str, num_classes: int, **options: Any) -> nn.Module:
    from ..models import create_model

    return create_model(MODEL_NAME, num_classes, in_features=frame_width(kind), **options)


def _predict_logits(model: nn.Module, feats: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(feats), batch):
            out.append(model(torch.as_tensor(feats[i : i + batch])).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def train_motion_model(
    data: SequenceSet,
    classes: list[str],
    train_idx: np.ndarray,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    label_smoothing: float = 0.05,
    seed: int = 0,
    aug: Augment = Augment(),
    transplant: float = 1.0,
    ema: float = 0.0,
    progress: bool = False,
    **options: Any,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train `motion_fastkan` on `train_idx` windows of `data` with `engine.fit` (class-weighted cross-entropy,
    AdamW, one-cycle); every batch is a fresh augmentation at one random length in [min_frames, max_frames], and
    (letters) some `j`/`z` windows take a static `i`/`d` handshape (`transplant_motion`; `TRANSPLANT`'s shares
    times `transplant`).
    `ema` > 0 keeps an exponential moving average of the weights (and BatchNorm statistics) and returns it.
    Returns (model in eval mode, per-epoch history). There is no validation set to select on: the
    held-out session is the test, so the last epoch is kept."""
    from ..engine import FitOptions, class_weights, fit

    torch.manual_seed(seed)
    index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([index.get(str(c), -1) for c in data.labels])
    train_idx = np.asarray(train_idx)[y_all[train_idx] >= 0]
    if len(train_idx) == 0:
        raise UserError("no training window carries one of the model's classes")
    parts = split_parts(data.x)
    kind = data.kind
    model = make_model(kind, len(classes), **options)
    donors = {index[m]: (train_idx[data.labels[train_idx] == s], share * transplant, turn)
              for m, (s, share, turn) in TRANSPLANT.items() if kind == "letters" and m in index and s in index}
    donors = {k: v for k, v in donors.items() if len(v[0]) and v[1] > 0}

    rng = np.random.default_rng(seed)  # one stream over the epochs: orders, lengths, transplants, augmentation

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(train_idx)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:  # BatchNorm needs two windows
                continue
            frames = int(rng.integers(aug.min_frames, aug.max_frames + 1))
            rows = Parts(parts.left[idx], parts.right[idx], None if parts.pose is None else parts.pose[idx])
            for label, (pool, share, turn) in donors.items():
                chosen = np.flatnonzero((y_all[idx] == label) & (rng.random(len(idx)) < share))
                if len(chosen):
                    transplant_motion(rows, chosen, parts.right[rng.choice(pool, len(chosen))], rng, turn)
            batch, aspect = augment_parts(rows, frames, rng, aug)
            yield torch.as_tensor(sequence_features(batch, aspect, kind)), torch.as_tensor(y_all[idx])

    opts = FitOptions(epochs=epochs, lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing, ema_decay=ema, seed=seed)
    result = fit(model, batches, opts, steps_per_epoch=-(-len(train_idx) // batch_size),
                 class_weight=class_weights(y_all[train_idx], len(classes)), progress=progress, desc=f"motion {kind}")
    return result.model, result.history


# --- metrics -----------------------------------------------------------------------------------------
def decide(proba: np.ndarray, classes: list[str], idle_below: float = 0.0) -> np.ndarray:
    """Class indices (N,): the most probable class, or `idle` (when the model has it) where that class's
    probability is under `idle_below`: a window no sign wins outright shows no sign."""
    proba = np.asarray(proba)
    pred = proba.argmax(1) if len(proba) else np.zeros(0, np.int64)
    if idle_below > 0 and IDLE in classes and len(proba):
        pred = np.where(proba.max(1) < idle_below, classes.index(IDLE), pred)
    return pred


def score(labels: np.ndarray, proba: np.ndarray, classes: list[str], idle_below: float = 0.0) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the classes present in `labels`), per-class precision/recall/F1 and the
    confusion matrix of `decide`'s classes, for windows whose label is one of `classes` (the others are
    counted and skipped)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels).astype(str)
    known = np.isin(labels, classes)
    skipped = {str(k): int(v) for k, v in zip(*np.unique(labels[~known], return_counts=True))}
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels[known]], dtype=np.int64)
    pred = decide(np.asarray(proba)[known], list(classes), idle_below) if known.any() else np.zeros(0, np.int64)
    present = np.unique(y)
    out: dict[str, Any] = {"n": int(known.sum()), "skipped": skipped, "classes": list(classes)}
    if not len(y):
        out.update(accuracy=float("nan"), macro_f1=float("nan"), per_class={}, confusion=[])
        return out
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=np.arange(len(classes)), zero_division=0)
    out["accuracy"] = float(np.mean(pred == y))
    out["macro_f1"] = float(np.mean(f[present]))
    out["per_class"] = {
        classes[i]: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4), "f1": round(float(f[i]), 4),
                     "support": int(s[i])}
        for i in range(len(classes)) if s[i] > 0 or (pred == i).any()
    }
    out["confusion"] = confusion_matrix(y, pred, labels=np.arange(len(classes))).tolist()
    return out


def holdout_split(sessions: np.ndarray, held_out: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: every window of session `held_out` is test, all others train."""
    sessions = np.asarray(sessions).astype(str)
    test = np.flatnonzero(sessions == held_out)
    train = np.flatnonzero(sessions != held_out)
    if not len(test):
        raise UserError(f"no window of session {held_out!r}; sessions: {sorted(set(sessions))}")
    return train, test


def holdout(
    data: SequenceSet, held_out: str, *, classes: list[str] | None = None, seed: int = 0, epochs: int = 20,
    progress: bool = False, **options: Any,
) -> tuple[dict[str, Any], nn.Module, np.ndarray]:
    """Train on every session but `held_out`, score `held_out`: (metrics, model, test probabilities)."""
    classes = classes or [str(c) for c in sorted(set(data.labels))]
    train, test = holdout_split(data.sessions, held_out)
    start = time.perf_counter()
    model, history = train_motion_model(data, classes, train, seed=seed, epochs=epochs, progress=progress, **options)
    seconds = time.perf_counter() - start
    proba = _softmax(_predict_logits(model, sequence_features(data.x[test], DEFAULT_ASPECT, data.kind)))
    trained = sorted({str(c) for c in data.labels[train]} & set(classes))
    idle_below = IDLE_BELOW[data.kind]
    metrics = score(data.labels[test], proba, classes, idle_below)
    seen = np.isin(data.labels[test], trained)
    # classes absent from the training sessions cannot be predicted: scored apart, on the trained classes
    metrics_trained = score(data.labels[test][seen], proba[seen], classes, idle_below)
    signs = seen & (data.labels[test] != IDLE)  # the signs alone: `idle` differs most between sessions
    metrics_signs = score(data.labels[test][signs], proba[signs], classes, idle_below)
    return {
        "held_out": held_out, "n_train": len(train), "n_test": len(test), "train_seconds": round(seconds, 1),
        "epochs": epochs, "seed": seed, "untrained_classes": sorted({str(c) for c in data.labels[test]} - set(trained)),
        "all": _brief(metrics), "trained_classes": _brief(metrics_trained), "signs_only": _brief(metrics_signs),
        "per_class": metrics_trained.get("per_class", {}), "final_train_loss": history[-1]["train_loss"] if history else None,
    }, model, proba


def _softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(logits.astype(np.float64), axis=1).astype(np.float32) if len(logits) else logits


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "accuracy", "macro_f1", "skipped")}
