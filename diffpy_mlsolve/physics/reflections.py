"""Reflections, structure factors and the Lorentz-polarisation factor.

Conventions (DESIGN.md): F(h) = Σ_j occ_j f_j(s) exp(-B_j s^2)
exp(+2πi h·x_j) with s = |d*|/2 = sin θ / λ.  Reflections come as one
member of each Friedel pair (h and -h give the same |F|^2 without
anomalous scattering), so powder sums weigh each by 2.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffpy_mlsolve.physics.formfactors import form_factors
from diffpy_mlsolve.physics.lattice import inv_d_spacing, reciprocal_metric

__all__ = [
    "hkl_limits",
    "half_hkl_box",
    "reflections_within",
    "equivalent_reflections",
    "structure_factors",
    "lorentz_polarization",
]

# reflections per chunk in structure_factors: bounds the (B, H, n) arrays
_CHUNK_ELEMENTS = 4_000_000


def hkl_limits(cells: np.ndarray, dstar_max: float) -> tuple[int, int, int]:
    """Largest |h|, |k|, |l| of any cell in ``cells`` (B, 6) up to |d*|.

    |h| = |d*·a| <= |d*| a, so h_max = floor(dstar_max * a).
    """
    cells = np.atleast_2d(np.asarray(cells, float))
    lim = np.floor(dstar_max * cells[:, :3].max(axis=0) + 1e-9).astype(int)
    return tuple(int(v) for v in lim)


def half_hkl_box(hmax: int, kmax: int, lmax: int) -> torch.Tensor:
    """One of each Friedel pair in the box |h|<=hmax...; (H, 3) int64.

    Keeps h > 0, or h = 0 and k > 0, or h = k = 0 and l > 0.
    """
    h = torch.arange(-hmax, hmax + 1)
    k = torch.arange(-kmax, kmax + 1)
    l_ = torch.arange(-lmax, lmax + 1)
    grid = torch.stack(torch.meshgrid(h, k, l_, indexing="ij"), -1)
    grid = grid.reshape(-1, 3)
    hh, kk, ll = grid.unbind(-1)
    keep = (
        (hh > 0) | ((hh == 0) & (kk > 0)) | ((hh == 0) & (kk == 0) & (ll > 0))
    )
    return grid[keep]


def reflections_within(
    cells: torch.Tensor, dstar_max: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half-sphere reflections of a batch of cells up to |d*| = dstar_max.

    Parameters
    ----------
    cells : Tensor (B, 6)
        a, b, c (Å), alpha, beta, gamma (degrees).
    dstar_max : float
        Largest |d*| = 1/d (Å^-1), i.e. Q_max / 2π.

    Returns
    -------
    hkl : Tensor (H, 3) int64
        A common set for the batch (the union of every cell's set).
    dstar : Tensor (B, H)
        |d*| (Å^-1) of each reflection in each cell (differentiable).
    mask : Tensor (B, H) bool
        True where the reflection is within dstar_max for that cell.
    """
    limits = hkl_limits(cells.detach().cpu().numpy(), dstar_max)
    hkl = half_hkl_box(*limits).to(cells.device)
    gstar = reciprocal_metric(cells)
    dstar = inv_d_spacing(hkl, gstar)
    mask = dstar <= dstar_max
    keep = mask.any(0)
    return hkl[keep], dstar[:, keep], mask[:, keep]


def equivalent_reflections(hkl, rotations) -> tuple[np.ndarray, np.ndarray]:
    """Sets of reflections of equal |F|^2 for atoms in whole orbits of a
    group: h and h R for each rotation R, and -h (Friedel).

    Parameters
    ----------
    hkl : array (H, 3) of integers
    rotations : array (S, 3, 3)
        The group's rotations, in the setting of ``hkl``.

    Returns
    -------
    first : ndarray (U,)
        The index in ``hkl`` of one reflection of each set present.
    inverse : ndarray (H,)
        The set (0..U-1) of each reflection.
    """
    hkl = np.rint(np.asarray(hkl, float)).astype(np.int64)
    rots = np.rint(np.asarray(rotations, float)).astype(np.int64)
    images = np.einsum("hi,sij->shj", hkl, rots)
    images = np.concatenate([images, -images])
    base = 2 * int(np.abs(images).max(initial=0)) + 1
    code = (images + base // 2) @ np.array([base * base, base, 1])
    _, first, inverse = np.unique(
        code.max(0), return_index=True, return_inverse=True
    )
    return first, inverse.ravel()


def structure_factors(
    hkl: torch.Tensor,
    dstar: torch.Tensor,
    frac: torch.Tensor,
    type_coeffs: torch.Tensor,
    type_biso: torch.Tensor,
    type_index: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """F(h) of a batch of structures (complex, electrons).

    Atoms are grouped into scattering types (one element with one B), so
    form factors and Debye-Waller factors are evaluated once per type and
    reflection, not once per atom.

    Parameters
    ----------
    hkl : Tensor (H, 3)
        Miller indices, shared by the batch.
    dstar : Tensor (B, H)
        |d*| (Å^-1) of each reflection in each cell.
    frac : Tensor (B, n, 3)
        Fractional coordinates, padded to n atoms.
    type_coeffs : Tensor (B, T, 11)
        Form factor coefficients of each scattering type.
    type_biso : Tensor (B, T)
        Isotropic displacement B (Å^2) of each type.
    type_index : Tensor (B, n) int64
        The type of each atom.
    weight : Tensor (B, n)
        Occupancy, 0 for padding atoms.

    Returns
    -------
    Tensor (B, H), complex
    """
    bsz, nref = dstar.shape
    natoms = frac.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, bsz * natoms))
    hkl_f = hkl.to(frac.dtype)
    out = []
    for start in range(0, nref, chunk):
        sl = slice(start, start + chunk)
        s2 = 0.25 * dstar[:, sl] ** 2  # (sin θ/λ)^2
        f = form_factors(type_coeffs, s2)  # (B, h, T)
        f = f * torch.exp(-type_biso[:, None, :] * s2[:, :, None])
        idx = type_index[:, None, :].expand(-1, f.shape[1], -1)
        amp = torch.gather(f, 2, idx) * weight[:, None, :]  # (B, h, n)
        phase = 2 * math.pi * torch.einsum("hi,bni->bhn", hkl_f[sl], frac)
        re = (amp * torch.cos(phase)).sum(-1)
        im = (amp * torch.sin(phase)).sum(-1)
        out.append(torch.complex(re, im))
    return torch.cat(out, dim=1)


def lorentz_polarization(
    tth_deg: torch.Tensor, monochromator_tth: float = 0.0
) -> torch.Tensor:
    """Lorentz-polarisation factor for Bragg-Brentano powder geometry.

    LP = (1 + cos^2 2θ cos^2 2θ_m) / ((1 + cos^2 2θ_m) sin^2 θ cos θ)

    With no monochromator (2θ_m = 0) this is pymatgen XRDCalculator's
    (1 + cos^2 2θ) / (sin^2 θ cos θ) divided by 2, i.e. the same shape.

    Parameters
    ----------
    tth_deg : Tensor
        Scattering angle 2θ in degrees.
    monochromator_tth : float
        2θ_m of a monochromator crystal in degrees (0 for none, e.g.
        26.6 for a graphite 002 monochromator with Cu Kα).
    """
    tth = torch.deg2rad(tth_deg)
    th = tth / 2
    cm2 = math.cos(math.radians(monochromator_tth)) ** 2
    num = 1 + torch.cos(tth) ** 2 * cm2
    den = (1 + cm2) * torch.sin(th) ** 2 * torch.cos(th)
    return num / den
