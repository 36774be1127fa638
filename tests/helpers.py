"""Helpers the tests share: generated images, the WebSocket error exchange."""

from __future__ import annotations

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
