"""Decoding images from files and uploads: the one place that turns a bad file into a ValueError.

Every stage that reads pixels (merge, preprocess, evaluate, predict, the landmark path and the server)
goes through `open_image`, so a corrupt, truncated, hostile or oversized file is one skipped file with
a reason, never a traceback.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps

MAX_PIXELS = 64_000_000  # files: decoded size guard (width x height), checked from the header
MAX_SIDE = 512  # larger photos are decoded at reduced scale: MediaPipe works at 192-256 px, crops need less

# What Pillow raises on a bad file. Its own fuzz tests list OSError (incl. UnidentifiedImageError and
# truncated data), SyntaxError, ValueError, MemoryError, NotImplementedError and the decompression-bomb
# pair; plugins also leak EOFError, struct.error, IndexError, KeyError, TypeError, ZeroDivisionError and
# OverflowError from the parsing of headers and chunks.
IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error,
    NotImplementedError, ZeroDivisionError, OverflowError, MemoryError, RecursionError,
    Image.DecompressionBombError, Image.DecompressionBombWarning,
)

# `open_image` refuses images past its own, lower `max_pixels` before decoding; Pillow's warning for
# images past its limit would only repeat that (and would print on stderr mid-run).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Pillow's plugins warn about malformed metadata (a TIFF tag past the end of the file) while decoding what
# they can; such a file is decoded or skipped with a reason here, so the warning is noise in the output.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class BadImageError(ValueError):
    """A file or upload that is not a readable image; the message says why."""


class ImageTooLargeError(BadImageError):
    """An image whose header declares more pixels than accepted."""


def _reason(exc: BaseException) -> str:
    """`Type: message`, without the memory addresses Pillow puts in messages about in-memory files."""
    text = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_regular_file(path: str | Path) -> None:
    """A path must name a regular file: a named pipe would block the read, a device never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise BadImageError(f"cannot read the file ({exc.strerror or _reason(exc)})") from exc
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "a special file"
        raise BadImageError(f"not a regular file ({kind})")


@contextmanager
def open_image(src: str | Path | BinaryIO | bytes, max_pixels: int | None = MAX_PIXELS) -> Iterator[Image.Image]:
    """An opened Pillow image (header read, size checked) for the `with` block.

    Anything Pillow (or the block) raises on a bad file becomes BadImageError naming the reason;
    ImageTooLargeError when the header declares more than `max_pixels` pixels (None: Pillow's own limit).
    A path must be a regular file (a named pipe or a device is refused without being opened).
    """
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise BadImageError("empty image: no bytes")
        src = io.BytesIO(src)
    elif isinstance(src, (str, Path)):
        _check_regular_file(src)
    try:
        with Image.open(src) as im:
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image of {width}x{height} pixels exceeds {max_pixels / 1e6:g} megapixels"
                )
            yield im
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image too large to decode safely ({_reason(exc)})") from exc
    except IMAGE_ERRORS as exc:
        raise BadImageError(f"not a readable image ({_reason(exc)})") from exc


def to_rgb(im: Image.Image) -> Image.Image:
    """Upright RGB: EXIF rotation applied; grayscale, palette, CMYK and alpha (over black) converted.

    An upright RGB image is returned as it is, not copied: a full-size copy of a 16-megapixel photo is 48 MB.
    """
    if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return im if im.mode == "RGB" else im.convert("RGB")


def load_image(src: str | Path | BinaryIO | bytes, size: int = 64, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode any Pillow image, centre-crop to square, resize to `size`: uint8 (size, size, 3).

    Raises BadImageError (a ValueError) naming the reason when it is not a readable image.
    """
    with open_image(src, max_pixels) as im:
        im.draft("RGB", (size * 2, size * 2))  # JPEG: decode huge photos at reduced scale
        rgb = to_rgb(im)
        rgb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def read_rgb(
    src: str | Path | BinaryIO | bytes, max_side: int = MAX_SIDE, max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """An image as upright RGB uint8 (H, W, 3), at most about `max_side` pixels on its longer side."""
    with open_image(src, max_pixels) as im:
        im.draft("RGB", (max_side, max_side))
        rgb = to_rgb(im)
        if max(rgb.size) > max_side:
            rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def verify_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of a file that decodes in full (a truncated JPEG does not); raises BadImageError."""
    with open_image(path, max_pixels) as im:
        size = im.size
        im.load()  # every byte of the pixel data; `verify()` alone would accept a truncated JPEG
        return size
