"""The variational coordinate-based density network (CrystalNet-style).

1. Encoders: a 1D CNN of the pattern on the model's Q grid with its
   coverage mask, an MLP of the composition vector and its mode, an MLP
   of the cell (a, b, c / 10 Å, cos of the angles).
2. A variational latent: mean and σ = softplus(·) + 1e-4 from the joined
   features; z = μ + ε σ (ε = 0 gives the mean prediction).
3. A coordinate decoder: periodic integer Fourier features of a
   fractional point, residual MLP blocks with LayerNorm, FiLM-modulated
   by z, to one value u(x) = ρ(x)/ρ_max (or its square root).
4. A scale head: log ρ_max (e/Å^3) from z and the cell, so densities come
   out in e/Å^3.

Reference: Guo et al., npj Comput. Mater. 10 (2024) ("CrystalNet"), with
the defects listed in ../shared/reference/crystalnet.md fixed: periodic
field, the cell as input, LayerNorm instead of BatchNorm, σ by softplus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from diffpy_mlsolve.data.composition import MODES, VECTOR_SIZE
from diffpy_mlsolve.model.layers import (
    FiLMResidualBlock,
    PatternEncoder,
    PeriodicFourierFeatures,
    mlp,
)

__all__ = ["ModelConfig", "CrystalNet"]


@dataclass(frozen=True)
class ModelConfig:
    """Every hyperparameter of :class:`CrystalNet`."""

    qpoints: int = 2400
    conv_channels: int = 16
    conv_max_channels: int = 128
    conv_layers: int = 6
    pattern_features: int = 256
    composition_features: int = 128
    lattice_features: int = 64
    latent: int = 256
    fourier_dense: int = 2
    fourier_kmax: int = 8
    fourier_extra: int = 256
    fourier_seed: int = 0
    width: int = 256
    blocks: int = 4
    target_transform: str = "linear"  # "linear" | "sqrt"

    def to_dict(self) -> dict:
        return asdict(self)


class CrystalNet(nn.Module):
    """Pattern + composition + cell -> latent -> density at points."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c = self.config = config
        self.pattern_encoder = PatternEncoder(
            c.conv_channels,
            c.conv_max_channels,
            c.conv_layers,
            out=c.pattern_features,
        )
        self.composition_encoder = mlp(
            [
                VECTOR_SIZE + len(MODES),
                c.composition_features,
                c.composition_features,
            ]
        )
        self.lattice_encoder = mlp([6, c.lattice_features, c.lattice_features])
        joined = (
            c.pattern_features + c.composition_features + c.lattice_features
        )
        self.trunk = mlp([joined, 2 * c.latent])
        self.mean = nn.Linear(2 * c.latent, c.latent)
        self.sigma = nn.Linear(2 * c.latent, c.latent)
        self.features = PeriodicFourierFeatures(
            c.fourier_dense, c.fourier_kmax, c.fourier_extra, c.fourier_seed
        )
        self.lift = nn.Linear(self.features.out_features, c.width)
        self.blocks = nn.ModuleList(
            FiLMResidualBlock(c.width, c.latent) for _ in range(c.blocks)
        )
        self.out = nn.Linear(c.width, 1)
        self.scale = mlp([c.latent + 6, 64, 1], last_act=False)

    def encode(self, batch: dict):
        """Latent mean and σ, each (B, latent)."""
        mode = nn.functional.one_hot(batch["comp_mode"], len(MODES))
        comp = torch.cat(
            [batch["composition"], mode.to(batch["composition"].dtype)], -1
        )
        h = torch.cat(
            [
                self.pattern_encoder(batch["pattern"], batch["mask"]),
                self.composition_encoder(comp),
                self.lattice_encoder(batch["lattice"]),
            ],
            -1,
        )
        h = self.trunk(h)
        return self.mean(h), nn.functional.softplus(self.sigma(h)) + 1e-4

    def decode(self, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """u(x) at fractional points (B, P, 3) -> (B, P)."""
        h = self.lift(self.features(points))
        for block in self.blocks:
            h = block(h, z)
        return self.out(h).squeeze(-1)

    def log_rho_max(self, z: torch.Tensor, lattice: torch.Tensor):
        """Predicted log ρ_max (e/Å^3), (B,)."""
        return self.scale(torch.cat([z, lattice], -1)).squeeze(-1)

    def to_density(self, u: torch.Tensor, log_rho_max: torch.Tensor):
        """Network output u -> density in e/Å^3."""
        if self.config.target_transform == "sqrt":
            u = torch.clamp(u, min=0) ** 2
        return u * torch.exp(log_rho_max)[..., None]

    def target(self, density: torch.Tensor, rho_max: torch.Tensor):
        """The value u the network learns for a density in e/Å^3."""
        u = density / rho_max[..., None]
        if self.config.target_transform == "sqrt":
            u = torch.sqrt(torch.clamp(u, min=0))
        return u

    def forward(self, batch: dict, generator=None):
        """Training pass: sampled z -> (u at batch points, log ρ_max, μ, σ)."""
        mu, sigma = self.encode(batch)
        eps = torch.randn(
            mu.shape, generator=generator, device=mu.device, dtype=mu.dtype
        )
        z = mu + eps * sigma
        u = self.decode(z, batch["points"])
        return u, self.log_rho_max(z, batch["lattice"]), mu, sigma

    @torch.no_grad()
    def sample_latents(
        self, batch: dict, samples: int, generator=None, mean_first=True
    ) -> torch.Tensor:
        """Latents (S, B, latent): the mean first when ``mean_first``,
        then z = μ + ε σ drawn with ``generator``."""
        mu, sigma = self.encode(batch)
        out = []
        for s in range(samples):
            if s == 0 and mean_first:
                out.append(mu)
                continue
            eps = torch.randn(
                mu.shape, generator=generator, device=mu.device, dtype=mu.dtype
            )
            out.append(mu + eps * sigma)
        return torch.stack(out)

    @torch.no_grad()
    def decode_grid(
        self, z: torch.Tensor, lattice: torch.Tensor, grid: int, chunk=8192
    ) -> torch.Tensor:
        """Densities (B, N, N, N) in e/Å^3 of latents z (B, latent) with
        lattice features (B, 6) on an N^3 fractional grid."""
        r = torch.arange(grid, device=z.device, dtype=z.dtype) / grid
        pts = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1)
        pts = pts.reshape(1, -1, 3)
        u = torch.cat(
            [
                self.decode(z, pts[:, i : i + chunk].expand(len(z), -1, -1))
                for i in range(0, pts.shape[1], chunk)
            ],
            1,
        )
        rho = self.to_density(u, self.log_rho_max(z, lattice))
        return rho.reshape(len(z), grid, grid, grid)

    @torch.no_grad()
    def predict_grid(
        self,
        batch: dict,
        grid: int,
        samples: int = 1,
        generator=None,
        mean_first=True,
        chunk=8192,
    ):
        """Densities (B, S, N, N, N) in e/Å^3 on an N^3 fractional grid.

        Sample 0 is the mean latent when ``mean_first``; the others draw
        z = μ + ε σ with ``generator``.
        """
        zs = self.sample_latents(batch, samples, generator, mean_first)
        out = [self.decode_grid(z, batch["lattice"], grid, chunk) for z in zs]
        return torch.stack(out, 1)


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, 1)), averaged over the batch, summed over dims."""
    return 0.5 * (mu**2 + sigma**2 - 1 - 2 * torch.log(sigma)).sum(-1).mean()
