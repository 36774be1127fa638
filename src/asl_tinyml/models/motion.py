"""`motion_fastkan`: a small temporal convolution network with a FastKAN head, for landmark sequences.

Input (N, T, in_features) per-frame features (`asl_tinyml.motion.sequence_features`), any T >= 1; output
(N, num_classes) logits. Frames are mixed by residual depthwise-separable 1D convolutions ('same' padding,
growing dilation), then pooled over time (mean and max), so a window of 15 or 45 frames goes through the
same weights as the 20-frame recordings it was trained on.
"""

from __future__ import annotations

import torch
from torch import nn

from .fastkan import FastKAN


class TemporalBlock(nn.Module):
    """Depthwise temporal conv (kernel k, dilation d) -> pointwise conv -> BatchNorm -> SiLU, residual."""

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.depthwise = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.norm(self.pointwise(self.depthwise(x))))


class MotionFastKAN(nn.Module):
    """Per-frame projection -> `blocks` temporal blocks -> mean+max over time -> FastKAN `[2C, hidden, classes]`.

    About `in_features * channels + blocks * channels^2 + 2 * channels * num_grids * hidden` weights.
    """

    input_kind = "motion"

    def __init__(
        self,
        num_classes: int,
        in_features: int = 139,
        channels: int = 48,
        blocks: int = 3,
        kernel: int = 5,
        hidden: int = 32,
        num_grids: int = 6,
        dropout: float = 0.0,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        del image_size  # reads landmark sequences, not pixels; accepted like every registered model
        self.in_features = in_features
        self.proj = nn.Sequential(nn.Conv1d(in_features, channels, 1), nn.BatchNorm1d(channels), nn.SiLU())
        self.blocks = nn.Sequential(*(TemporalBlock(channels, kernel, 2**i) for i in range(blocks)))
        self.drop = nn.Dropout(dropout)  # on the pooled features, training only
        self.head = FastKAN([2 * channels, hidden, num_classes], num_grids=num_grids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.proj(x.transpose(1, 2)))  # (N, C, T)
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.head(self.drop(pooled))
