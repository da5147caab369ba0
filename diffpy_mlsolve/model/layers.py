"""Small network modules, each with its hyperparameters as keywords and
its init rule beside it (in the spirit of lucidrains/siren-pytorch)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "PeriodicFourierFeatures",
    "FiLMResidualBlock",
    "PatternEncoder",
    "mlp",
]


class PeriodicFourierFeatures(nn.Module):
    """cos/sin(2π k·x) of fractional coordinates x for integer k ∈ Z^3.

    Integer frequencies make every feature, and so the decoded field,
    exactly periodic in the cell (the reference's Gaussian random
    frequencies are not).  The set holds every k with |k|∞ <= ``dense``
    (one of each ±k pair) plus ``extra`` random k with |k|∞ <= ``kmax``,
    drawn once from ``seed`` and stored as a buffer.

    Parameters
    ----------
    dense, kmax, extra, seed : int
    """

    def __init__(self, dense=2, kmax=8, extra=256, seed=0):
        super().__init__()
        r = torch.arange(-dense, dense + 1)
        grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1)
        grid = grid.reshape(-1, 3)
        grid = grid[_positive_half(grid)]
        gen = torch.Generator().manual_seed(int(seed))
        rand = torch.randint(-kmax, kmax + 1, (extra * 3, 3), generator=gen)
        rand = rand[_positive_half(rand) & (rand.abs().amax(1) > dense)]
        freqs = torch.unique(torch.cat([grid, rand[:extra]]), dim=0)
        self.register_buffer("freqs", freqs.float())

    @property
    def out_features(self) -> int:
        return 2 * self.freqs.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * x @ self.freqs.T
        return torch.cat([torch.cos(phase), torch.sin(phase)], -1)


def _positive_half(k: torch.Tensor) -> torch.Tensor:
    h, kk, ll = k.unbind(-1)
    return (h > 0) | ((h == 0) & (kk > 0)) | ((h == 0) & (kk == 0) & (ll > 0))


class FiLMResidualBlock(nn.Module):
    """h + ReLU(FiLM(LayerNorm(Linear(h)))), FiLM = (1 + γ(z)) · x + β(z).

    LayerNorm, not BatchNorm: a prediction never depends on what else is
    in the batch.  γ and β start at zero, so each block starts as a plain
    residual MLP layer.
    """

    def __init__(self, width: int, latent: int):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.film = nn.Linear(latent, 2 * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(z).unsqueeze(1).chunk(2, -1)
        y = self.norm(self.linear(h))
        return h + torch.relu((1 + gamma) * y + beta)


class PatternEncoder(nn.Module):
    """1D CNN over (intensity, coverage mask) on the model's Q grid.

    ``layers`` stages of Conv1d(k) + GELU + MaxPool(2), channels doubling
    from ``channels`` up to ``max_channels``, then adaptive average
    pooling to ``pooled`` positions and a linear map to ``out``.
    """

    def __init__(
        self,
        channels=16,
        max_channels=128,
        layers=6,
        kernel=7,
        pooled=16,
        out=256,
    ):
        super().__init__()
        mods, c_in = [], 2
        for i in range(layers):
            c_out = min(max_channels, channels * 2**i)
            mods += [
                nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
                nn.GELU(),
                nn.MaxPool1d(2),
            ]
            c_in = c_out
        self.conv = nn.Sequential(*mods, nn.AdaptiveAvgPool1d(pooled))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * pooled, out), nn.GELU()
        )

    def forward(self, pattern, mask):
        x = torch.stack([pattern, mask.to(pattern.dtype)], 1)
        return self.head(self.conv(x))


def mlp(sizes, act=nn.GELU, last_act=True) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``act`` between (and after)."""
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(a, b))
        if last_act or i < len(sizes) - 2:
            mods.append(act())
    return nn.Sequential(*mods)
