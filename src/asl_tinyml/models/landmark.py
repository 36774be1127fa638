"""`landmark_fastkan`: a FastKAN on the normalised hand-landmark feature vector (see `asl_tinyml.landmarks`)."""

from __future__ import annotations

import torch
from torch import nn

from .fastkan import FastKAN


class LandmarkFastKAN(nn.Module):
    """FastKAN `[in_features, hidden, num_classes]` on float32 (N, in_features) landmark features.

    About `in_features * num_grids * hidden` weights: the defaults stay under 20k parameters. Not an image
    model: `input_kind` tells pixel-only code (training on caches, image tests) to leave it out.
    """

    input_kind = "landmarks"

    def __init__(
        self,
        num_classes: int,
        in_features: int = 63,
        hidden: int = 24,
        num_grids: int = 6,
        grid_min: float = -2.0,
        grid_max: float = 2.0,
        image_size: int | None = None,
        mirror_dims: list[int] | None = None,
    ) -> None:
        super().__init__()
        del image_size  # the model reads landmarks, not pixels; accepted like every registered model
        self.in_features = in_features
        widths = [in_features, hidden, num_classes]
        self.kan = FastKAN(widths, num_grids=num_grids, grid_min=grid_min, grid_max=grid_max)
        self.symmetric = bool(mirror_dims)
        sign = torch.ones(in_features)
        sign[list(mirror_dims or [])] = -1.0
        self.register_buffer("mirror_sign", sign, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if not self.symmetric:
            return self.kan(x)
        return 0.5 * (self.kan(x) + self.kan(x * self.mirror_sign))
