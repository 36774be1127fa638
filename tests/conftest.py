"""Shared fixtures: tiny generated image sources, and the real data root when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from asl_tinyml.config import default_data_root

from .helpers import write_image


@pytest.fixture
def make_source(tmp_path: Path):
    """Build a source folder: make_source('s1', {'A': ['1.jpg', '2.jpg'], 'b': [...]})."""

    def make(name: str, layout: dict[str, list[str]], seed: int = 0) -> Path:
        root = tmp_path / name
        for k, (cls, files) in enumerate(layout.items()):
            for j, fname in enumerate(files):
                write_image(root / cls / fname, color=(20 * k % 255, 100, 7 * j % 255), seed=seed + 31 * k + j)
        return root

    return make


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_root()
    if root is None or not root.is_dir():
        pytest.skip("../shared/datasets is not present")
    return root
