"""Classify image files with a `.pt` or `.onnx` model: top-k labels and probabilities per file.

Folders are searched recursively (hidden files skipped); every file is tried with Pillow, so any format
it reads works and anything else (a corrupt image, a text file) gives an error row for that file only, as
does a folder with no file to read (empty, or only links that loop).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .answers import NO_HAND_LABEL, class_mask, restrict_proba
from .config import UserError
from .fusion import LandmarkPredictor, SignPredictor, load_sign_predictor
from .inference import Predictor
from .model_sets import describe_file

CHUNK = 128  # images decoded, detected and classified together


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def folder_files(folder: Path) -> list[Path]:
    """Every non-hidden regular file below `folder`, sorted."""
    return [f for f in sorted(folder.rglob("*")) if f.is_file() and not _hidden(f, folder)]


def empty_folder_reason(folder: Path) -> str:
    """Why `folder` holds no file to classify (`folder_files` found none), and what to pass instead."""
    entries = list(folder.rglob("*"))
    links = sum(p.is_symlink() and not p.exists() for p in entries)  # a link to itself does not exist either
    hidden = sum(_hidden(p, folder) for p in entries)
    held = [f"{links} link(s) that loop or lead nowhere"] * bool(links) + [f"{hidden} hidden entr(ies)"] * bool(hidden)
    what = "it is empty" if not entries else f"it holds only {' and '.join(held) or 'folders'}"
    return f"no file to classify in this folder: {what}; pass image files or a folder of them"


def _rows(predictor: SignPredictor, files: list[Path], topk: int, mask: np.ndarray) -> Iterator[dict[str, Any]]:
    """One row per file of one batch, in order: top-k labels and probabilities, or the read error."""
    if not files:
        return
    try:
        proba, found, errors, _ = predictor.predict_files(files)
    except UserError:
        raise
    except Exception as exc:  # the model file loaded but cannot run on these inputs
        raise UserError(
            f"{predictor.pixel.path} failed to run ({type(exc).__name__}: {exc}); re-export it with `asl-tinyml export`"
        ) from exc
    model_set = describe_file(predictor.pixel.path)
    for path, p, hand, error in zip(files, restrict_proba(proba, mask), found, errors):
        if error is not None:
            yield {"file": str(path), "error": error}
            continue
        order = np.argsort(-p, kind="stable")[:topk]
        yield {
            "file": str(path),
            "label": predictor.label(p, bool(hand)),
            "labels": [predictor.classes[i] for i in order],
            "probs": [round(float(p[i]), 6) for i in order],
            **({"hand": bool(hand)} if predictor.needs_hands else {}),
            "model_set": model_set,
        }


def predict_paths(
    paths: Iterable[str | Path],
    model: str | Path | Predictor | SignPredictor | None = None,
    topk: int = 3,
    threads: int | None = None,
    landmark_model: str | Path | None = None,
    fusion_weight: float | None = None,
    classes: str = "all",
    models_dir: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """One dict per file, in order: `{file, label, labels, probs[, hand]}` (top-k, most likely first) or
    `{file, error}`.

    `model` is a model file (`.pt` or `.onnx`), a loaded predictor, or None for the shipped default in
    `models_dir` (`fusion.load_sign_predictor`: the fused predictor when the landmark model is there). A
    missing or unusable model raises UserError before any file is read. `label` is the answer: the top
    class, or "no hand found" for an unsure guess on a photo without a detected hand. `classes` (`all`,
    `letters`, `digits`) restricts the answers.
    """
    if topk < 1:
        raise UserError(f"--topk must be at least 1, got {topk}")
    if isinstance(model, SignPredictor):
        predictor = model
    elif isinstance(model, Predictor):
        landmark = LandmarkPredictor(landmark_model, threads) if landmark_model is not None else None
        predictor = SignPredictor(model, landmark, fusion_weight)
    else:
        predictor = load_sign_predictor(model, landmark_model, models_dir=models_dir, weight=fusion_weight, threads=threads)
    mask = class_mask(predictor.classes, classes)
    topk = min(topk, int(mask.sum()))
    batch: list[Path] = []
    for path in map(Path, paths):
        files = folder_files(path) if path.is_dir() else [path]
        if not files:  # a row of its own, in the order the paths were given
            yield from _rows(predictor, batch, topk, mask)
            batch = []
            yield {"file": str(path), "error": empty_folder_reason(path)}
        for f in files:
            batch.append(f)
            if len(batch) == CHUNK:
                yield from _rows(predictor, batch, topk, mask)
                batch = []
    yield from _rows(predictor, batch, topk, mask)


def format_row(row: dict[str, Any], json_lines: bool = False) -> str:
    """One output line: a JSON object, or `file  label (p)  label (p) ...` / `file  error: reason`."""
    if json_lines:
        return json.dumps(row)
    if "error" in row:
        return f"{row['file']}  error: " + " ".join(str(row["error"]).split())
    hand = {True: "  [hand]", False: "  [no hand found: centre crop, pixels only]"}.get(row.get("hand"), "")
    answer = f"{row['label']}  " if row.get("label") == NO_HAND_LABEL else ""
    top = "  ".join(f"{label} ({p:.3f})" for label, p in zip(row["labels"], row["probs"]))
    return f"{row['file']}  {answer}{top}{hand}"
