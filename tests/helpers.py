"""Helpers the tests share: generated images and sequence files, small model files, the WebSocket error
exchange, a folder's digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, color: tuple[int, int, int] = (200, 50, 50), size: tuple[int, int] = (32, 32),
                mode: str = "RGB", fmt: str | None = None, seed: int = 0) -> Path:
    """A small noisy image of one dominant colour, in any Pillow mode and format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None, :] + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, format=fmt)
    return path


def websocket_error(ws: Any, message: str) -> dict[str, Any]:
    """Send one text message on an open `/ws` (its hello already read) and return the error reply, checked to be
    strict JSON (no NaN or Infinity) of type `error`."""
    ws.send_text(message)
    reply = json.loads(ws.receive_text(), parse_constant=lambda c: pytest.fail(f"reply is not valid JSON: {c}"))
    assert reply["type"] == "error", reply
    return reply


def tree_digest(root: Path) -> dict[str, str]:
    """Every file below `root` (relative path) -> its sha256: equal digests mean nothing was written there."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def landmark_checkpoint(path: Path, classes: list[str]) -> Path:
    """An untrained landmark_fastkan checkpoint of `classes` that records its feature recipe."""
    from asl_tinyml.hands import FeatureRecipe
    from asl_tinyml.models import create_model, save_checkpoint

    recipe = FeatureRecipe()
    model = create_model("landmark_fastkan", len(classes), in_features=recipe.size)
    meta = {"model": "landmark_fastkan", "model_options": {"in_features": recipe.size}, "classes": list(classes),
            "image_size": None, "input": "landmarks", "features": recipe.to_meta()}
    save_checkpoint(path, model, meta)
    return path


def motion_checkpoint(path: Path, classes: tuple[str, ...] = ("i", "j")) -> Path:
    """An untrained motion letters checkpoint of `classes`."""
    from asl_tinyml import motion

    return motion.save_motion_model(path, motion.make_model("letters", len(classes)), "letters", list(classes), {})


def letters_npz(path: Path, labels: tuple[str, ...] = ("i", "j", "i", "j"), frames: int = 12, **fields: Any) -> Path:
    """A letters .npz in the shared layout: random two-hand windows of `labels`, two sessions (`fields` replace
    or add arrays)."""
    x = np.random.default_rng(0).uniform(0.3, 0.7, (len(labels), frames, 126)).astype(np.float16)
    sessions = np.array(["cam", "alex"] * len(labels))[: len(labels)]
    np.savez(path, **{"x": x, "label": np.array(labels), "session": sessions, **fields})
    return path
