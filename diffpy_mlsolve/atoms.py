"""From a density to atom sites: periodic peak picking.

1. Local maxima of ρ on the N^3 fractional grid, periodic (a peak across
   a cell face is one peak): a 3x3x3 max-pool with circular padding in
   torch, so it runs on the GPU beside the network.
2. Sub-voxel positions: along each axis, the vertex of the parabola
   through log ρ at the peak and its two neighbours (exact for a Gaussian
   peak), clipped to half a voxel.
3. Peaks below ``threshold`` × the highest are dropped; the rest come
   sorted by height.

:func:`find_peaks_skimage` is the CPU path with scikit-image's
``peak_local_max`` on a wrap-padded grid; the tests hold the two to the
same sites.  Element assignment and symmetrisation come next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Peaks", "find_peaks", "find_peaks_skimage"]


@dataclass(frozen=True)
class Peaks:
    """Density maxima of one cell, highest first.

    Attributes
    ----------
    frac : ndarray (K, 3)
        Fractional positions in [0, 1).
    height : ndarray (K,)
        ρ at the grid maximum (e/Å^3).
    """

    frac: np.ndarray
    height: np.ndarray

    def __len__(self) -> int:
        return int(self.height.shape[0])


def _subvoxel(logv: torch.Tensor, idx: torch.Tensor, n: int):
    """Parabola-vertex offsets (K, 3) in voxels around integer peaks."""
    offsets = []
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.long, device=idx.device)
        step[axis] = 1
        lo = torch.remainder(idx - step, n)
        hi = torch.remainder(idx + step, n)
        f0 = logv[idx[:, 0], idx[:, 1], idx[:, 2]]
        fm = logv[lo[:, 0], lo[:, 1], lo[:, 2]]
        fp = logv[hi[:, 0], hi[:, 1], hi[:, 2]]
        curv = fm - 2 * f0 + fp
        off = torch.where(
            curv < 0, 0.5 * (fm - fp) / curv, torch.zeros_like(curv)
        )
        offsets.append(off.clamp(-0.5, 0.5))
    return torch.stack(offsets, -1)


def find_peaks(values, threshold: float = 0.05, max_peaks: int = 256):
    """Periodic local maxima of a density grid.

    Parameters
    ----------
    values : array or Tensor (N, N, N)
        ρ on the fractional grid (e/Å^3), axes a, b, c.
    threshold : float
        Keep peaks at least this fraction of the highest one.
    max_peaks : int
        At most this many, highest first.

    Returns
    -------
    Peaks
    """
    if torch.is_tensor(values):
        rho = values.detach()
    else:
        rho = torch.tensor(np.array(values, dtype=float))
    if rho.dtype != torch.float64:
        rho = rho.float()
    n = rho.shape[0]
    padded = torch.nn.functional.pad(
        rho[None, None], (1, 1, 1, 1, 1, 1), mode="circular"
    )
    pooled = torch.nn.functional.max_pool3d(padded, 3, stride=1)[0, 0]
    top = rho.max()
    is_peak = (rho >= pooled) & (rho >= threshold * top) & (rho > 0)
    idx = torch.nonzero(is_peak)
    heights = rho[idx[:, 0], idx[:, 1], idx[:, 2]]
    order = torch.argsort(heights, descending=True)[:max_peaks]
    idx, heights = idx[order], heights[order]
    floor = torch.clamp(rho, min=float(top) * 1e-6)
    off = _subvoxel(torch.log(floor), idx, n)
    frac = torch.remainder((idx.to(off.dtype) + off) / n, 1.0)
    return Peaks(frac.cpu().numpy(), heights.cpu().numpy())


def find_peaks_skimage(values, threshold: float = 0.05, max_peaks=256):
    """The CPU path: scikit-image's peak_local_max on a wrap-padded grid,
    the same sub-voxel step; returns :class:`Peaks`."""
    from skimage.feature import peak_local_max

    rho = np.array(values, dtype=float)  # a writable copy
    n = rho.shape[0]
    padded = np.pad(rho, 1, mode="wrap")
    coords = peak_local_max(
        padded,
        min_distance=1,
        threshold_abs=max(threshold * rho.max(), np.finfo(float).tiny),
        exclude_border=False,
    )
    inside = np.all((coords >= 1) & (coords <= n), axis=1)
    idx = coords[inside] - 1
    heights = rho[idx[:, 0], idx[:, 1], idx[:, 2]]
    order = np.argsort(-heights, kind="stable")[:max_peaks]
    idx, heights = idx[order], heights[order]
    logv = torch.log(torch.clamp(torch.as_tensor(rho), min=rho.max() * 1e-6))
    off = _subvoxel(logv, torch.as_tensor(idx), n).numpy()
    frac = np.mod((idx + off) / n, 1.0)
    return Peaks(frac, heights)
