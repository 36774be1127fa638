"""Pixel models: `fastkan` (FastKAN on flattened pixels, the prior design) and `convkan` (conv stem + FastKAN)."""

from __future__ import annotations

import torch
from torch import nn

from .fastkan import FastKAN


class PixelFastKAN(nn.Module):
    """FastKAN on the flattened image: the prior-art baseline, large and background-sensitive."""

    def __init__(self, num_classes: int, image_size: int = 64, hidden: int = 64, num_grids: int = 8) -> None:
        super().__init__()
        self.kan = FastKAN([3 * image_size * image_size, hidden, num_classes], num_grids=num_grids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kan(x.flatten(1))


def _dw_block(
    c_in: int, c_out: int, pool: bool = True, pool_first: bool = False, strided: bool = False
) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1 conv, BN and ReLU after each, then (optionally) 2x2 max-pool;
    `pool_first` pools between the two convs, so the pointwise conv runs on a quarter of the pixels;
    `strided` halves the size with a stride-2 depthwise conv instead of pooling (MobileNet's way)."""
    stride = 2 if pool and strided else 1
    depthwise = [
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(True),
    ]
    pointwise = [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    pooling = [nn.MaxPool2d(2)] if pool and not strided else []
    layers = [*depthwise, *pooling, *pointwise] if pool_first else [*depthwise, *pointwise, *pooling]
    return nn.Sequential(*layers)


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C): the mean over the pixels, exported as one ReduceMean (`AdaptiveAvgPool2d(1)` then
    `Flatten` exports as a mean, a strided gather and two reshapes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _Residual(nn.Module):
    """x + f(x): a same-size block that is cheap at the last, smallest resolution."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


CONVKAN_V1 = {"channels": [24, 48, 96, 192], "pool_first": False}  # the defaults of checkpoints that lack them


class ConvKAN(nn.Module):
    """A depthwise-separable conv stem feeding a small FastKAN head `[channels[-1], hidden, num_classes]`.

    The stem is a 3x3 conv (stride `stem_stride`; above 2, non-overlapping `stem_stride` patches), optionally
    max-pooled (`stem_pool`), then one depthwise-separable block per step of `channels`, each halving the
    size. `mid_blocks` residual blocks run before the last of them, at its input (8x8 for 64x64 inputs), and
    `tail_blocks` residual blocks after it (4x4); a global average pool feeds the head through dropout.
    `pool_first` max-pools between each block's depthwise and pointwise conv, so the pointwise conv
    runs on a quarter of the pixels; `strided` downsamples that many leading blocks with a stride-2
    depthwise conv instead of pooling. The defaults (about 157k parameters for 37 classes) and the
    measurements behind each option are in docs/experiments.md.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int = 64,
        channels: tuple[int, ...] = (16, 48, 96, 192),
        hidden: int = 32,
        num_grids: int = 6,
        dropout: float = 0.1,
        tail_blocks: int = 2,
        mid_blocks: int = 0,
        stem_stride: int = 2,
        stem_pool: bool = False,
        pool_first: bool = True,
        strided: int = 0,
    ) -> None:
        super().__init__()
        del image_size  # global average pooling makes the stem size-agnostic; accepted like every model
        kernel, pad = (3, 1) if stem_stride <= 2 else (stem_stride, 0)  # stride > 2: non-overlapping patches
        stem = [
            nn.Conv2d(3, channels[0], kernel, stride=stem_stride, padding=pad, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
            *([nn.MaxPool2d(2)] if stem_pool else []),
        ]
        blocks = [
            _dw_block(a, b, pool_first=pool_first, strided=i < strided)
            for i, (a, b) in enumerate(zip(channels[:-1], channels[1:]))
        ]
        # mid_blocks residual blocks go before the last downsampling block, at its input width
        blocks[-1:-1] = [_Residual(_dw_block(channels[-2], channels[-2], pool=False)) for _ in range(mid_blocks)]
        blocks += [_Residual(_dw_block(channels[-1], channels[-1], pool=False)) for _ in range(tail_blocks)]
        self.features = nn.Sequential(*stem, *blocks, GlobalAvgPool())
        self.dropout = nn.Dropout(dropout)
        self.head = FastKAN([channels[-1], hidden, num_classes], num_grids=num_grids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
