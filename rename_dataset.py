#!/usr/bin/env python3
"""Merge ASL class-folder sources into `data_merged/`: `python rename_dataset.py [SOURCE ...] [--out DIR]`.

A thin wrapper over `asl-tinyml merge` (see `asl_tinyml.merge`); sources are never modified.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # runs from a plain checkout too

from asl_tinyml.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["merge", *sys.argv[1:]]))
