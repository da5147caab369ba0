"""Powder peak profiles and instrument effects, in torch.

Widths are full widths at half maximum in degrees 2θ.  The instrument
gives a Gaussian (Caglioti U, V, W, or a constant width) and a Lorentzian
part; crystallite size adds Lorentzian (Scherrer) and microstrain
Gaussian broadening; the parts are combined into one pseudo-Voigt with
the Thompson-Cox-Hastings rule (J. Appl. Cryst. 20, 79 (1987)).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

__all__ = [
    "pseudo_voigt",
    "tch_combine",
    "split_pseudo_voigt",
    "caglioti_fwhm",
    "scherrer_fwhm",
    "strain_fwhm",
    "render_peaks",
    "chebyshev_background",
    "march_dollase",
    "poisson_noise",
]

_LN2 = math.log(2.0)


def pseudo_voigt(dx, fwhm, eta):
    """Area-normalised pseudo-Voigt at offsets ``dx`` (same units as fwhm).

    pV = eta L + (1 - eta) G with unit-area Lorentzian L and Gaussian G of
    the same FWHM.
    """
    sig2 = (fwhm * fwhm) / (8 * _LN2)
    gau = torch.exp(-dx * dx / (2 * sig2)) / torch.sqrt(2 * math.pi * sig2)
    pure = not bool((eta != 0).any()) if torch.is_tensor(eta) else eta == 0
    if pure:
        return gau  # skip the Lorentzian
    hw = fwhm / 2
    lor = (hw / math.pi) / (dx * dx + hw * hw)
    return eta * lor + (1 - eta) * gau


def _tch_fwhm5(g, lo):
    """FWHM^5 of the TCH pseudo-Voigt (tensors or floats)."""
    return (
        g**5
        + 2.69269 * g**4 * lo
        + 2.42843 * g**3 * lo**2
        + 4.47163 * g**2 * lo**3
        + 0.07842 * g * lo**4
        + lo**5
    )


def tch_combine(gauss_fwhm, lorentz_fwhm):
    """Thompson-Cox-Hastings FWHM and mixing eta of a Voigt.

    Parameters are tensors of Gaussian and Lorentzian FWHM (any units).
    """
    g, lo = gauss_fwhm, lorentz_fwhm
    fwhm = torch.clamp(_tch_fwhm5(g, lo), min=1e-30) ** 0.2
    q = lo / fwhm
    eta = 1.36603 * q - 0.47719 * q**2 + 0.11116 * q**3
    return fwhm, torch.clamp(eta, 0.0, 1.0)


@lru_cache(maxsize=4096)
def split_pseudo_voigt(fwhm: float, eta: float) -> tuple[float, float]:
    """Gaussian and Lorentzian FWHM whose TCH combination is (fwhm, eta).

    The inverse of :func:`tch_combine` for scalars, by bisection (in
    plain floats, cached: a batch usually shares one instrument); used
    to add size and strain broadening to an instrument given as
    (fwhm, eta).
    """
    fwhm, eta = float(fwhm), float(eta)
    if eta <= 0:
        return float(fwhm), 0.0
    if eta >= 1:
        return 0.0, float(fwhm)
    # eta(q) is increasing on [0, 1]: solve for q = L / fwhm
    lo_q, hi_q = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo_q + hi_q)
        e = 1.36603 * mid - 0.47719 * mid**2 + 0.11116 * mid**3
        lo_q, hi_q = (mid, hi_q) if e < eta else (lo_q, mid)
    lor = 0.5 * (lo_q + hi_q) * fwhm
    lo_g, hi_g = 0.0, float(fwhm)
    for _ in range(60):
        mid = 0.5 * (lo_g + hi_g)
        f = max(_tch_fwhm5(mid, lor), 1e-30) ** 0.2
        lo_g, hi_g = (mid, hi_g) if f < fwhm else (lo_g, mid)
    return 0.5 * (lo_g + hi_g), float(lor)


def caglioti_fwhm(tth_deg, u: float, v: float, w: float):
    """Gaussian FWHM (deg) = sqrt(U tan^2 θ + V tan θ + W); U, V, W deg^2."""
    t = torch.tan(torch.deg2rad(tth_deg) / 2)
    return torch.sqrt(torch.clamp(u * t * t + v * t + w, min=1e-12))


def scherrer_fwhm(tth_deg, wavelength: float, size: float, k: float = 0.9):
    """Lorentzian FWHM (deg 2θ) of crystallites of size ``size`` (Å).

    β = K λ / (L cos θ) in radians (Scherrer), K the shape constant.
    """
    th = torch.deg2rad(tth_deg) / 2
    return torch.rad2deg(k * wavelength / (size * torch.cos(th)))


def strain_fwhm(tth_deg, strain: float):
    """Gaussian FWHM (deg 2θ) of microstrain ε: β = 4 ε tan θ (radians)."""
    th = torch.deg2rad(tth_deg) / 2
    return torch.rad2deg(4 * strain * torch.tan(th))


def render_peaks(
    x0: float,
    step: float,
    npoints: int,
    centers: torch.Tensor,
    fwhm: torch.Tensor,
    eta: torch.Tensor,
    area: torch.Tensor,
    *,
    reach: float | None = None,
) -> torch.Tensor:
    """Sum pseudo-Voigt peaks on a uniform grid, each only near its centre.

    Each peak is evaluated within ±``reach``·FWHM of its centre (default
    3 for Gaussian peaks, 12 when any eta > 0, which keeps 97.4 % of a
    Lorentzian's area; the far tails merge into the background) and
    scattered onto the grid, so the cost is
    peaks × window, not peaks × grid points.

    Parameters
    ----------
    x0, step, npoints
        The grid x0 + step * arange(npoints) (any unit, e.g. deg 2θ).
    centers, fwhm, eta, area : Tensor (B, K)
        Peak centres, widths, mixing and integrated intensity (area in
        units of intensity × x; a zero area switches a peak off).

    Returns
    -------
    Tensor (B, npoints)
    """
    bsz = centers.shape[0]
    if centers.numel() == 0:
        return centers.new_zeros(bsz, npoints)
    if reach is None:
        reach = 12.0 if bool((eta > 0).any()) else 3.0
    active = area != 0
    wmax = float(fwhm[active].max()) if bool(active.any()) else 0.0
    half = int(math.ceil(reach * wmax / step)) + 1
    offsets = torch.arange(-half, half + 1, device=centers.device)
    # peaks far off the grid are pinned just outside it: their window
    # lands in the padding on either side, which is cut away at the end
    centre_idx = torch.round((centers.detach() - x0) / step).long()
    centre_idx = centre_idx.clamp(-half - 1, npoints + half)
    idx = centre_idx[..., None] + offsets  # (B, K, W)
    dx = (x0 + idx.to(centers.dtype) * step) - centers[..., None]
    vals = area[..., None] * pseudo_voigt(dx, fwhm[..., None], eta[..., None])
    pad = 2 * half + 1
    out = centers.new_zeros(bsz, npoints + 2 * pad)
    out = out.scatter_add(
        1, (idx + pad).reshape(bsz, -1), vals.reshape(bsz, -1)
    )
    return out[:, pad : pad + npoints]


def chebyshev_background(x: torch.Tensor, coeffs) -> torch.Tensor:
    """Σ_k c_k T_k(t) with t the grid mapped onto [-1, 1].

    Parameters
    ----------
    x : Tensor (P,)
        The grid.
    coeffs : Tensor (B, K) or sequence
        Chebyshev coefficients per pattern.
    """
    c = torch.as_tensor(coeffs, dtype=x.dtype, device=x.device)
    c = c.reshape(-1, c.shape[-1]) if c.dim() else c.reshape(1, 1)
    t = 2 * (x - x[0]) / (x[-1] - x[0]) - 1
    terms = [torch.ones_like(t), t]
    for _ in range(2, c.shape[-1]):
        terms.append(2 * t * terms[-1] - terms[-2])
    basis = torch.stack(terms[: c.shape[-1]], 0)  # (K, P)
    return c @ basis


def march_dollase(
    hkl: torch.Tensor, gstar: torch.Tensor, direction, r: torch.Tensor
) -> torch.Tensor:
    """March-Dollase preferred-orientation factor of each reflection.

    P(α) = (r^2 cos^2 α + sin^2 α / r)^(-3/2), α the angle between the
    scattering vector and the preferred reciprocal direction (hkl).
    r = 1 is random; r < 1 plates along the direction, r > 1 needles.

    Parameters
    ----------
    hkl : Tensor (H, 3)
    gstar : Tensor (B, 3, 3)
        Reciprocal metrics.
    direction : sequence of 3 numbers
        The preferred reciprocal-lattice direction, e.g. (0, 0, 1).
    r : Tensor (B,)
        March coefficient per pattern.
    """
    p = torch.as_tensor(direction, dtype=gstar.dtype, device=gstar.device)
    h = hkl.to(gstar.dtype)
    hp = torch.einsum("hi,bij,j->bh", h, gstar, p)
    hh = torch.einsum("hi,bij,hj->bh", h, gstar, h)
    pp = torch.einsum("i,bij,j->b", p, gstar, p)
    cos2 = hp**2 / torch.clamp(hh * pp[:, None], min=1e-30)
    cos2 = torch.clamp(cos2, 0.0, 1.0)
    rr = r[:, None]
    return (rr * rr * cos2 + (1 - cos2) / rr) ** -1.5


def poisson_noise(
    y: torch.Tensor, counts: torch.Tensor, generator=None
) -> torch.Tensor:
    """Counting noise: scale each pattern so its maximum is ``counts``,
    draw Poisson counts, and return them (in counts).

    Parameters
    ----------
    y : Tensor (B, P)
        Non-negative noiseless patterns.
    counts : Tensor (B,)
        Counts at the strongest point of each pattern.
    """
    peak = torch.clamp(y.amax(-1, keepdim=True), min=1e-30)
    lam = torch.clamp(y / peak * counts[:, None], min=0)
    return torch.poisson(lam, generator=generator)
