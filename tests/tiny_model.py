"""A tiny convkan trained in a second on coloured noise, and a run folder of the same images (for the
export, predict and compress tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asl_tinyml.models import create_model, save_checkpoint
from asl_tinyml.preprocess import Cache, save_splits

CLASSES = ["a", "b", "c", "space"]
SIZE = 24
OPTIONS = {"channels": [8, 32], "hidden": 64}
COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (200, 200, 40)]


def color_images(per_class: int, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images whose class is their dominant colour (plus noise and a random bright square)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k, color in enumerate(COLORS):
        for _ in range(per_class):
            img = np.clip(np.array(color) + rng.normal(0, 30, (size, size, 3)), 0, 255)
            y, x = rng.integers(0, size - 6, 2)
            img[y : y + 6, x : x + 6] = 255
            images.append(img.astype(np.uint8))
            labels.append(k)
    return np.stack(images), np.array(labels, dtype=np.int64)


def trained_checkpoint(path: Path, steps: int = 60, seed: int = 0) -> Path:
    """Train the tiny convkan on coloured noise until it is confident, and save it as a checkpoint."""
    torch.manual_seed(seed)
    model = create_model("convkan", len(CLASSES), **OPTIONS)
    images, labels = color_images(16, seed=seed)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() / 255
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = {"model": "convkan", "model_options": OPTIONS, "classes": CLASSES, "image_size": SIZE}
    save_checkpoint(path, model.eval(), meta)
    return path


def make_run(root: Path, per_class: int = 24, seed: int = 1) -> Path:
    """A run folder (cache.npz + splits.json) of coloured-noise images, split 50/25/25 per class."""
    images, labels = color_images(per_class, seed=seed)
    n = len(labels)
    cache = Cache(
        images=images,
        labels=labels,
        classes=list(CLASSES),
        sources=np.array(["gen"] * n),
        groups=np.array([f"g{i}" for i in range(n)]),
        paths=np.array([f"{CLASSES[k]}/{i}.png" for i, k in enumerate(labels)]),
    )
    root.mkdir(parents=True, exist_ok=True)
    cache.save(root / "cache.npz")
    pos = np.arange(n) % per_class
    splits = {
        "train": np.flatnonzero(pos < per_class // 2),
        "val": np.flatnonzero((pos >= per_class // 2) & (pos < 3 * per_class // 4)),
        "test": np.flatnonzero(pos >= 3 * per_class // 4),
    }
    save_splits(splits, root / "splits.json", seed)
    return root
