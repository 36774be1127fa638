"""FastKAN (Li, 2024): Kolmogorov-Arnold layers whose B-splines are replaced by Gaussian RBFs.

Each layer computes `spline(rbf(layernorm(x))) + base(silu(x))`: the RBF expansion turns every input
into `num_grids` bumps on a fixed grid, and a linear map over all bumps learns one univariate function
per (input, output) edge, which is what makes it a KAN layer.
"""

from __future__ import annotations

import torch
from torch import nn


class RadialBasis(nn.Module):
    """x -> exp(-((x - g_i) / h)^2) for `num_grids` fixed centres g_i on [grid_min, grid_max]."""

    def __init__(self, grid_min: float = -2.0, grid_max: float = 2.0, num_grids: int = 8) -> None:
        super().__init__()
        self.register_buffer("grid", torch.linspace(grid_min, grid_max, num_grids))
        self.inv_width = (num_grids - 1) / (grid_max - grid_min)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(((x.unsqueeze(-1) - self.grid) * self.inv_width) ** 2))


class FastKANLayer(nn.Module):
    """One FastKAN layer: LayerNorm -> Gaussian RBFs -> linear, plus a SiLU base path."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_grids: int = 8,
        grid_min: float = -2.0,
        grid_max: float = 2.0,
        use_base: bool = True,
        spline_init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.rbf = RadialBasis(grid_min, grid_max, num_grids)
        self.spline = nn.Linear(in_features * num_grids, out_features, bias=False)
        nn.init.trunc_normal_(self.spline.weight, std=spline_init_scale)
        self.base = nn.Linear(in_features, out_features) if use_base else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.spline(self.rbf(self.norm(x)).flatten(-2))
        if self.base is not None:
            y = y + self.base(nn.functional.silu(x))
        return y


class FastKAN(nn.Module):
    """A stack of FastKAN layers: widths `[in, hidden..., out]`."""

    def __init__(self, widths: list[int], num_grids: int = 8, grid_min: float = -2.0, grid_max: float = 2.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(FastKANLayer(a, b, num_grids, grid_min, grid_max) for a, b in zip(widths[:-1], widths[1:]))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
