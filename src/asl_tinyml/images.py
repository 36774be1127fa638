"""Decoding image files: any format Pillow reads, upright RGB, at the size a stage needs."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 512  # larger photos are decoded at reduced scale: MediaPipe works at 192-256 px, crops need less


def to_rgb(im: Image.Image) -> Image.Image:
    """Upright RGB: EXIF rotation applied; grayscale, palette, CMYK and alpha (over black) converted."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def load_image(src: str | Path | BinaryIO, size: int = 64) -> np.ndarray:
    """Decode any Pillow image, centre-crop to square, resize to `size`: uint8 (size, size, 3).

    Raises ValueError naming the reason when the file is not a readable image.
    """
    try:
        with Image.open(src) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode huge photos at reduced scale
            rgb = to_rgb(im)
            rgb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from exc


def read_rgb(path: str | Path | BinaryIO, max_side: int = MAX_SIDE) -> np.ndarray:
    """An image file as upright RGB uint8 (H, W, 3), at most about `max_side` pixels on its longer side.

    Raises ValueError when the file is not a readable image.
    """
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side))
            rgb = to_rgb(im)
            if max(rgb.size) > max_side:
                rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
