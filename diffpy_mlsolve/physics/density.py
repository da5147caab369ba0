"""Electron density <-> structure factors on a fractional grid.

With F(h) = Σ_j f_j exp(+2πi h·x_j) (DESIGN.md), the density is

    ρ(x) = (1/V) Σ_h F(h) exp(-2πi h·x)            (e/Å^3)

which on an N^3 grid x = n/N is ``fftn(F_grid).real / V``; the inverse
is F(h) = V · ifftn(ρ)[h].  The other sign would invert the structure
through the origin.  Densities are band-limited: only reflections with
|d*| <= ``dstar_cutoff`` (a sphere inside the grid's Nyquist box) are
summed, so nothing aliases; the resolution is d_min = 1 / dstar_cutoff.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "dstar_cutoff",
    "density_from_structure_factors",
    "structure_factors_from_density",
]


def dstar_cutoff(cells, grid: int) -> np.ndarray:
    """Largest |d*| (Å^-1) a grid of ``grid`` points per edge resolves.

    The grid holds |h|, |k|, |l| <= H = (grid - 1) // 2 without
    aliasing; the sphere inscribed in that box of reciprocal space has
    radius H / max(a, b, c) (the planes h = ±H lie H/a from the origin).

    Parameters
    ----------
    cells : array (B, 6) or (6,)
    grid : int
    """
    cells = np.atleast_2d(np.asarray(cells, float))
    return ((grid - 1) // 2) / cells[:, :3].max(axis=1)


def _flat_index(hkl: torch.Tensor, grid: int) -> torch.Tensor:
    idx = torch.remainder(hkl, grid)
    return (idx[:, 0] * grid + idx[:, 1]) * grid + idx[:, 2]


def density_from_structure_factors(
    hkl: torch.Tensor,
    fh: torch.Tensor,
    f000: torch.Tensor,
    volume: torch.Tensor,
    grid: int,
) -> torch.Tensor:
    """ρ on an N^3 fractional grid (e/Å^3) from half-space F(h).

    Parameters
    ----------
    hkl : Tensor (H, 3)
        One member of each Friedel pair (no 000), all |index| < grid/2.
    fh : Tensor (B, H) complex
        F(h); reflections to leave out must already be zero.
    f000 : Tensor (B,)
        F(000), the electrons in the cell.
    volume : Tensor (B,)
        Cell volume (Å^3).
    grid : int
        Points per cell edge.

    Returns
    -------
    Tensor (B, N, N, N), real; axis order a, b, c.
    """
    bsz = fh.shape[0]
    plus = _flat_index(hkl, grid)
    minus = _flat_index(-hkl, grid)
    fgrid = fh.new_zeros(bsz, grid**3)
    fgrid = fgrid.index_add(1, plus, fh)
    fgrid = fgrid.index_add(1, minus, torch.conj(fh))
    fgrid[:, 0] = fgrid[:, 0] + f000.to(fgrid.dtype)
    fgrid = fgrid.reshape(bsz, grid, grid, grid)
    rho = torch.fft.fftn(fgrid, dim=(-3, -2, -1)).real
    return rho / volume[:, None, None, None]


def structure_factors_from_density(
    rho: torch.Tensor, volume: torch.Tensor, hkl: torch.Tensor
) -> torch.Tensor:
    """F(h) of densities on N^3 grids, differentiable in ``rho``.

    Parameters
    ----------
    rho : Tensor (B, N, N, N)
        Electron density (e/Å^3), axis order a, b, c.
    volume : Tensor (B,)
        Cell volume (Å^3).
    hkl : Tensor (H, 3)
        Reflections wanted, |index| < N/2.

    Returns
    -------
    Tensor (B, H) complex
    """
    bsz, grid = rho.shape[0], rho.shape[-1]
    fgrid = torch.fft.ifftn(
        rho.to(torch.promote_types(rho.dtype, torch.float32)), dim=(-3, -2, -1)
    )
    flat = fgrid.reshape(bsz, -1)[:, _flat_index(hkl, grid)]
    return flat * volume[:, None].to(flat.dtype)
