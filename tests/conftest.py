"""Shared fixtures: one deterministic torch state per test, tiny generated image sources, and the real data
root when present."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from asl_tinyml.config import default_data_root

from .helpers import write_image

TEST_THREADS = 1  # torch intra-op threads in every test: results then depend on neither the cores nor the load
os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))  # the CLI subprocesses some tests start


def reset_torch() -> None:
    """One torch state: `TEST_THREADS` threads, deterministic algorithms where torch has them (a warning, not a
    failure, where it has none), seeded global generators."""
    torch.set_num_threads(TEST_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


reset_torch()  # for the first module- and session-scoped fixtures too


@pytest.fixture(autouse=True)
def deterministic_torch() -> Iterator[None]:
    """Each test, and each wider fixture set up after it, starts from `reset_torch`'s state whatever ran before
    (compress and motion set their own thread counts; unseeded draws would follow the previous test's). Margins
    for what remains (the same arithmetic on another CPU's kernels) are measured over seeds:
    docs/experiments.md, "Test margins"."""
    reset_torch()
    yield
    reset_torch()


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
