"""Latent refinement: move the latent samples so that the decoded density,
through the differentiable density -> |F(h)|^2 -> powder pattern path,
matches the measured pattern.

The measured pattern is put on 2θ, freed of a smooth background and
scaled to its strongest point; the density is decoded on a coarse grid
(enough for the reflections the data reach), its pattern drawn with the
data's wavelength lines and peak width, and scaled by the least-squares
factor.  Adam on z minimises the weighted misfit; the R factor of this
same comparison is reported before and after, per sample.  The network's
weights are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffpy_mlsolve.errors import PatternFormatError

__all__ = ["LatentFit", "refine_latents"]


@dataclass(frozen=True)
class LatentFit:
    """Refined latents and the pattern R factor before and after.

    Attributes
    ----------
    z : Tensor (S, latent)
    r_before, r_after : ndarray (S,)
        sqrt(Σ (y_obs − s y_calc)^2 / Σ y_obs^2) on the coarse 2θ grid.
    steps : int
    """

    z: torch.Tensor
    r_before: np.ndarray
    r_after: np.ndarray
    steps: int


def _target(pattern, npoints):
    """(tth grid (lo, step, n), background-free y scaled to max 1)."""
    from diffpy_mlsolve.background import chebyshev_background_fit
    from diffpy_mlsolve.radiation import radiation_of
    from diffpy_mlsolve.rfactor import estimate_fwhm

    if pattern.xtype == "r":
        raise PatternFormatError(
            "Latent refinement fits powder patterns; a PDF G(r) cannot be "
            "used here."
        )
    pat = pattern.on_tth()
    x, y = pat.x, pat.intensity
    y = y - chebyshev_background_fit(x, y)
    n = int(min(npoints, len(x)))
    grid = np.linspace(x[0], x[-1], n)
    yt = np.interp(grid, x, y)
    yt = np.clip(yt, 0, None) / max(yt.max(), 1e-30)
    rad = radiation_of(pat)
    fwhm = estimate_fwhm(x, pat.intensity)
    if rad.wavelength2 is not None:  # the doublet widens the estimate
        fwhm *= 0.8
    return (float(grid[0]), float(grid[1] - grid[0]), n), yt, rad, fwhm


def refine_latents(
    model,
    batch: dict,
    pattern,
    lattice,
    z: torch.Tensor,
    *,
    steps: int = 30,
    lr: float = 0.05,
    grid: int = 20,
    npoints: int = 1500,
    eta: float = 0.5,
) -> LatentFit:
    """Refine latent samples ``z`` (S, latent) against ``pattern``.

    Parameters
    ----------
    model : CrystalNet
    batch : dict
        The model's input batch of the measurement (size 1): its lattice
        features feed the density scale.
    pattern : Pattern
        The measured powder pattern (with its wavelength).
    lattice : sequence of 6 floats
    z : Tensor (S, latent)
        Starting latents (the mean and samples).
    steps, lr : Adam steps and step size on z.
    grid : int
        Decoding grid per edge (its band limit must reach the data's
        largest |d*|; 20 resolves d = max(a, b, c) / 9).
    npoints : int
        Points of the coarse 2θ grid.
    eta : float
        Lorentzian fraction of the calculated peaks.
    """
    from diffpy_mlsolve.physics.density import (
        dstar_cutoff,
        structure_factors_from_density,
    )
    from diffpy_mlsolve.physics.lattice import cell_volume
    from diffpy_mlsolve.physics.powder import powder_pattern
    from diffpy_mlsolve.physics.reflections import reflections_within

    dev = z.device
    tth, yobs, rad, fwhm = _target(pattern, npoints)
    yobs_t = torch.as_tensor(yobs, dtype=torch.float32, device=dev)
    cell = torch.as_tensor(lattice, dtype=torch.float32, device=dev)[None]
    cut = float(dstar_cutoff(np.asarray(lattice, float), grid)[0])
    hkl, dstar, mask = reflections_within(cell, cut)
    volume = cell_volume(cell)
    r = torch.arange(grid, device=dev, dtype=torch.float32) / grid
    pts = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1)
    pts = pts.reshape(1, -1, 3)
    s = z.shape[0]
    lattice_feat = batch["lattice"].expand(s, -1)
    ones = torch.ones(1, dtype=torch.float32, device=dev)
    lines = [(lam * ones, w) for lam, w in rad.lines]

    def r_factor(zz):
        u = model.decode(zz, pts.expand(s, -1, -1))
        rho = model.to_density(u, model.log_rho_max(zz, lattice_feat))
        rho = rho.reshape(s, grid, grid, grid)
        out = []
        for k in range(s):
            fh = structure_factors_from_density(rho[k : k + 1], volume, hkl)
            f2 = fh.real**2 + fh.imag**2
            y = powder_pattern(
                f2,
                dstar,
                mask,
                tth,
                lines,
                fwhm=fwhm * ones,
                eta=eta * ones,
            )[0]
            scale = (y * yobs_t).sum() / torch.clamp((y * y).sum(), 1e-30)
            res = yobs_t - scale * y
            out.append(torch.sqrt((res**2).sum() / (yobs_t**2).sum()))
        return torch.stack(out)

    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        zz = z.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([zz], lr=lr)
        with torch.no_grad():
            before = r_factor(zz)
        best_r, best_z = before.clone(), zz.detach().clone()
        for _ in range(int(steps)):
            opt.zero_grad()
            r_now = r_factor(zz)
            better = r_now.detach() < best_r  # each sample keeps its best
            best_r = torch.where(better, r_now.detach(), best_r)
            best_z[better] = zz.detach()[better]
            r_now.sum().backward()
            opt.step()
        with torch.no_grad():
            r_last = r_factor(zz)
        better = r_last < best_r
        best_r = torch.where(better, r_last, best_r)
        best_z[better] = zz.detach()[better]
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return LatentFit(
        best_z, before.cpu().numpy(), best_r.cpu().numpy(), int(steps)
    )
