"""Cell parameters to metric tensors, in torch (differentiable).

A cell is a tensor ``(..., 6)`` of a, b, c (Å) and alpha, beta, gamma
(degrees).  Reciprocal quantities use the crystallographer's convention
without 2π: ``|d*|^2 = h^T G* h = 1/d^2`` and ``Q = 2π |d*|``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "metric_tensor",
    "reciprocal_metric",
    "cell_volume",
    "lattice_matrix",
    "inv_d_spacing",
]


def _cosines(cell: torch.Tensor):
    ang = torch.deg2rad(cell[..., 3:6])
    return (
        torch.cos(ang[..., 0]),
        torch.cos(ang[..., 1]),
        torch.cos(ang[..., 2]),
    )


def metric_tensor(cell: torch.Tensor) -> torch.Tensor:
    """Real-space metric G (Å^2), shape ``(..., 3, 3)``."""
    a, b, c = cell[..., 0], cell[..., 1], cell[..., 2]
    ca, cb, cg = _cosines(cell)
    row0 = torch.stack([a * a, a * b * cg, a * c * cb], -1)
    row1 = torch.stack([a * b * cg, b * b, b * c * ca], -1)
    row2 = torch.stack([a * c * cb, b * c * ca, c * c], -1)
    return torch.stack([row0, row1, row2], -2)


def reciprocal_metric(cell: torch.Tensor) -> torch.Tensor:
    """Reciprocal metric G* = G^-1 (Å^-2), shape ``(..., 3, 3)``."""
    return torch.linalg.inv(metric_tensor(cell))


def cell_volume(cell: torch.Tensor) -> torch.Tensor:
    """Cell volume (Å^3), shape ``(...)``."""
    a, b, c = cell[..., 0], cell[..., 1], cell[..., 2]
    ca, cb, cg = _cosines(cell)
    arg = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg
    return a * b * c * torch.sqrt(torch.clamp(arg, min=0))


def lattice_matrix(cell: torch.Tensor) -> torch.Tensor:
    """Rows are the cell vectors a, b, c in Cartesian Å, shape ``(..., 3, 3)``.

    The standard orientation: a along x, b in the xy plane.
    """
    a, b, c = cell[..., 0], cell[..., 1], cell[..., 2]
    ca, cb, cg = _cosines(cell)
    sg = torch.sqrt(torch.clamp(1 - cg * cg, min=1e-12))
    zero = torch.zeros_like(a)
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz = torch.sqrt(torch.clamp(c * c - cx * cx - cy * cy, min=0))
    va = torch.stack([a, zero, zero], -1)
    vb = torch.stack([b * cg, b * sg, zero], -1)
    vc = torch.stack([cx, cy, cz], -1)
    return torch.stack([va, vb, vc], -2)


def inv_d_spacing(hkl: torch.Tensor, gstar: torch.Tensor) -> torch.Tensor:
    """|d*| = 1/d (Å^-1) of each reflection.

    Parameters
    ----------
    hkl : Tensor (H, 3) or (B, H, 3)
        Miller indices (any real dtype).
    gstar : Tensor (B, 3, 3)
        Reciprocal metrics.

    Returns
    -------
    Tensor (B, H)
    """
    h = hkl.to(gstar.dtype)
    if h.dim() == 2:
        h = h.unsqueeze(0).expand(gstar.shape[0], -1, -1)
    d2 = torch.einsum("bhi,bij,bhj->bh", h, gstar, h)
    return torch.sqrt(torch.clamp(d2, min=0))


TWO_PI = 2.0 * math.pi
