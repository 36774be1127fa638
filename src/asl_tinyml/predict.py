"""Classify image files with a `.pt` or `.onnx` model: top-k labels and probabilities per file.

Folders are searched recursively (hidden files skipped); every file is tried with Pillow, so any format
it reads works and anything else (a corrupt image, a text file) gives an error row for that file only.
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


def expand_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given and, for folders, every non-hidden file below them (sorted); missing paths as given."""
    for path in map(Path, paths):
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                rel = f.relative_to(path).parts
                if f.is_file() and not any(part.startswith(".") for part in rel):
                    yield f
        else:
            yield path


def _rows(predictor: SignPredictor, files: list[Path], topk: int, mask: np.ndarray) -> Iterator[dict[str, Any]]:
    """One row per file of one batch, in order: top-k labels and probabilities, or the read error."""
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
    for path in expand_paths(paths):
        batch.append(path)
        if len(batch) == CHUNK:
            yield from _rows(predictor, batch, topk, mask)
            batch = []
    if batch:
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
