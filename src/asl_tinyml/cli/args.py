"""The command line's shared pieces: the parser with the project's error style, the number types of the
flags, and the flags that choose a predictor."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one `error:` line naming the flag (no usage block), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _number(kind: type, low: float, high: float | None = None, *, above: bool = False, below: bool = False
            ) -> Callable[[str], float]:
    """An argparse `type=` for a finite int/float in [low, high] (`above`/`below`: the bound excluded)."""
    what = "a whole number" if kind is int else "a number"
    bounds = [f"{'>' if above else '>='} {low:g}"] + ([f"{'<' if below else '<='} {high:g}"] if high is not None else [])

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and (value > low if above else value >= low)
        if ok and high is not None:
            ok = value < high if below else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {what} {' and '.join(bounds)}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _path(text: str) -> Path:
    """An argparse `type=` for a file or folder path; an empty one (which would mean the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r} (an empty path would mean the current folder)")
    return Path(text)


PATH = _path
POSITIVE_INT = _number(int, 1)
NONNEGATIVE_INT = _number(int, 0)
PORT = _number(int, 0, 65535)  # 0: any free port
POSITIVE_FLOAT = _number(float, 0, above=True)
NONNEGATIVE_FLOAT = _number(float, 0)
FRACTION = _number(float, 0, 1)
SPARSITY = _number(float, 0, 1, below=True)


def add_fusion_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose the predictor: shipped default, or a pixel model with an optional landmark model."""
    p.add_argument("--landmark-model", type=PATH, default=None,
                   help="a landmark_fastkan .pt/.onnx: the fused predictor (landmarks where a hand is found; "
                   "default with no --model: models/asl_landmarks_int8.onnx when it exists)")
    p.add_argument("--fusion-weight", type=FRACTION, default=None,
                   help="weight of the landmark model in [0, 1] where a hand is found (default: the one the "
                   "landmark file records, chosen on held-out sources)")
    p.add_argument("--classes", choices=["all", "letters", "digits"], default="all",
                   help="restrict the answers: letters (a-z, space) or digits (0-9) tell ASL twins like o/0 apart")
    p.add_argument("--models-dir", type=PATH, default=None,
                   help="a model set (default: $ASL_TINYML_MODELS, else ./models when the main job wrote one, else "
                   "the set packaged with asl-tinyml)")
