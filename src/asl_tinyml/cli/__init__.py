"""`asl-tinyml <stage>`: a thin command line over the package's stage functions.

Each `_cmd_<stage>` turns flags into a Config and calls one stage function; user errors print one
line (`error: ...`) and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..config import UserError
from .args import Parser
from .landmarks import add_landmarks, add_motion, add_serve
from .micro import add_micro
from .package import add_package
from .pixels import (
    add_bench,
    add_compare,
    add_compress,
    add_eda,
    add_evaluate,
    add_export,
    add_merge,
    add_pipeline,
    add_predict,
    add_preprocess,
    add_train,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="asl-tinyml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    stages = (add_merge, add_preprocess, add_eda, add_train, add_evaluate, add_compress, add_export,
              add_predict, add_bench, add_micro, add_landmarks, add_motion, add_compare, add_serve, add_pipeline,
              add_package)  # pipeline order
    for add in stages:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, one line printed by Parser.error)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return args.func(args)
    except UserError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except OSError as exc:  # a file the stages could not read or write (disk full, permissions, ...)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}; check the path, its permissions and the free disk",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
