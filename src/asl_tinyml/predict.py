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

from .config import UserError
from .fusion import DEFAULT_WEIGHT, FusedPredictor, LandmarkPredictor, fuse_proba
from .inference import Predictor, load_predictor
from .preprocess import load_image

CHUNK = 64  # images decoded and classified together


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


def _classify(
    predictor: Predictor, pending: list[tuple[Path, np.ndarray | str]], topk: int, fused: FusedPredictor | None = None
) -> Iterator[dict[str, Any]]:
    """Rows for decoded images (one batch through the model) and read errors, in the order given."""
    images = [img for _, img in pending if isinstance(img, np.ndarray)]
    probs = iter([])
    hands = iter([])
    if images:
        try:
            if fused is None:
                probs = iter(predictor.predict_proba(np.stack(images)))
            else:
                features, found = fused.landmark.hands_for_files([p for p, img in pending if isinstance(img, np.ndarray)])
                probs, hands = iter(fused.predict_proba(np.stack(images), features, found)), iter(found)
        except UserError:
            raise
        except Exception as exc:  # the model file loaded but cannot run on these inputs
            raise UserError(
                f"{predictor.path} failed to run ({type(exc).__name__}: {exc}); re-export it with `asl-tinyml export`"
            ) from exc
    for path, item in pending:
        if isinstance(item, str):
            yield {"file": str(path), "error": item}
            continue
        p = next(probs)
        order = np.argsort(-p, kind="stable")[:topk]
        yield {
            "file": str(path),
            "labels": [predictor.classes[i] for i in order],
            "probs": [round(float(p[i]), 6) for i in order],
            **({"hand": bool(next(hands))} if fused is not None else {}),
        }


def predict_paths(
    paths: Iterable[str | Path],
    model: str | Path | Predictor,
    topk: int = 3,
    threads: int | None = None,
    landmark_model: str | Path | None = None,
    fusion_weight: float = DEFAULT_WEIGHT,
) -> Iterator[dict[str, Any]]:
    """One dict per file, in order: `{file, labels, probs}` (top-k, most likely first) or `{file, error}`.

    `model` is a model file (`.pt` checkpoint or `.onnx` export) or a loaded Predictor; a missing or
    unusable model raises UserError before any file is read. With `landmark_model` the fused predictor
    runs (MediaPipe on each file; rows gain `hand`: whether a hand was found).
    """
    if topk < 1:
        raise UserError(f"--topk must be at least 1, got {topk}")
    predictor = model if isinstance(model, Predictor) else load_predictor(model, threads=threads)
    fused = None
    if landmark_model is not None:
        fused = FusedPredictor(predictor, LandmarkPredictor(landmark_model, threads), fusion_weight)
        fuse_proba(np.ones((1, 1)), np.ones((1, 1)), np.ones(1, bool), fusion_weight)  # a bad weight fails now
    topk = min(topk, len(predictor.classes))
    pending: list[tuple[Path, np.ndarray | str]] = []
    decoded = 0
    for path in expand_paths(paths):
        if not path.exists():
            pending.append((path, "no such file or folder"))
        else:
            try:
                pending.append((path, load_image(path, predictor.image_size)))
                decoded += 1
            except (ValueError, OSError) as exc:
                pending.append((path, str(exc)))
        if decoded == CHUNK or len(pending) >= 4 * CHUNK:
            yield from _classify(predictor, pending, topk, fused)
            pending, decoded = [], 0
    if pending:
        yield from _classify(predictor, pending, topk, fused)


def format_row(row: dict[str, Any], json_lines: bool = False) -> str:
    """One output line: a JSON object, or `file  label (p)  label (p) ...` / `file  error: reason`."""
    if json_lines:
        return json.dumps(row)
    if "error" in row:
        return f"{row['file']}  error: " + " ".join(str(row["error"]).split())
    hand = {True: "  [hand]", False: "  [no hand: pixels only]"}.get(row.get("hand"), "")
    return row["file"] + "  " + "  ".join(f"{label} ({p:.3f})" for label, p in zip(row["labels"], row["probs"])) + hand
