"""`asl-tinyml package`: a main-job model set copied into the package (`model_sets.PACKAGED_DIR`) with its card."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import PATH


def add_package(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("package", help="for maintainers: ship a main-job model set inside the package, with its card")
    p.add_argument("--run", type=PATH, default=Path("runs/default"), help="the run that made the models (its metrics.json)")
    p.add_argument("--models-dir", type=PATH, default=Path("models"), help="the set to package (default: models)")
    p.add_argument("--dest", type=PATH, default=None, help="where to write (default: the package's packaged_models/)")
    p.set_defaults(func=_cmd_package)


def _cmd_package(args: argparse.Namespace) -> int:
    from ..model_sets import PACKAGED_DIR, package_models

    dest = package_models(args.run, args.models_dir, args.dest or PACKAGED_DIR)
    print(f"packaged {args.models_dir} (run {args.run}) into {dest}")
    return 0
