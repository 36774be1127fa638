"""Helpers the tests share: generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
