"""Structures to powder patterns, electron densities and PDFs.

The user layer over :mod:`diffpy_mlsolve.physics`: takes diffpy or
pymatgen structures or CIF paths (one, or a list), picks the device once,
batches, and returns numpy-backed :class:`Pattern` and :class:`Density`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffpy_mlsolve.device import resolve_device
from diffpy_mlsolve.errors import PhysicsInputError
from diffpy_mlsolve.physics.density import (
    density_from_structure_factors,
    dstar_cutoff,
    structure_factors_from_density,
)
from diffpy_mlsolve.physics.formfactors import form_factor_coefficients
from diffpy_mlsolve.physics.lattice import cell_volume, reciprocal_metric
from diffpy_mlsolve.physics.powder import powder_pattern
from diffpy_mlsolve.physics.profile import (
    chebyshev_background,
    march_dollase,
    poisson_noise,
)
from diffpy_mlsolve.physics.reflections import (
    reflections_within,
    structure_factors,
)
from diffpy_mlsolve.radiation import resolve_radiation
from diffpy_mlsolve.structures import CrystalArrays, as_crystals

__all__ = [
    "simulate_pxrd",
    "electron_density",
    "simulate_pdf",
    "pattern_from_density",
    "crystal_tensors",
    "crystal_structure_factors",
]

# structures per batch in the user layer (bounds memory, keeps padding low)
_BATCH = 64
# |exp(-B s^2)| left at the band limit by smoothing="auto"
_AUTO_DAMPING = 0.05


# --------------------------------------------------------------- batching
def crystal_tensors(crystals: list[CrystalArrays], device, dtype):
    """Pad a list of crystals into batch tensors.

    Returns a dict with cell (B, 6), frac (B, n, 3), weight (B, n)
    (occupancy, 0 for padding), the scattering types of each structure
    (one element with one B): type_coeffs (B, T, 11), type_biso (B, T),
    type_index (B, n), and electrons (B,).
    """
    n = max(c.natoms for c in crystals)
    bsz = len(crystals)
    frac = np.zeros((bsz, n, 3))
    weight = np.zeros((bsz, n))
    type_index = np.zeros((bsz, n), int)
    kinds = []
    for i, c in enumerate(crystals):
        frac[i, : c.natoms] = c.frac
        weight[i, : c.natoms] = c.occupancy
        pairs = np.stack([c.numbers, c.biso], 1)
        uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
        type_index[i, : c.natoms] = inv.ravel()
        kinds.append(uniq)
    ntypes = max(len(k) for k in kinds)
    type_z = np.ones((bsz, ntypes), int)
    type_b = np.zeros((bsz, ntypes))
    for i, k in enumerate(kinds):
        type_z[i, : len(k)] = k[:, 0].astype(int)
        type_b[i, : len(k)] = k[:, 1]
    t = dict(dtype=dtype, device=device)
    return {
        "cell": torch.as_tensor(np.stack([c.lattice for c in crystals]), **t),
        "frac": torch.as_tensor(frac, **t),
        "weight": torch.as_tensor(weight, **t),
        "type_coeffs": form_factor_coefficients(type_z, dtype, device),
        "type_biso": torch.as_tensor(type_b, **t),
        "type_index": torch.as_tensor(type_index, device=device),
        "electrons": torch.as_tensor([c.electrons for c in crystals], **t),
    }


def crystal_structure_factors(batch: dict, dstar_max: float, extra_biso=None):
    """hkl (H, 3), dstar (B, H), mask (B, H) and F (B, H) of a batch.

    ``extra_biso`` (B,) adds to every atom's B (density smoothing).
    """
    hkl, dstar, mask = reflections_within(batch["cell"], dstar_max)
    biso = batch["type_biso"]
    if extra_biso is not None:
        biso = biso + extra_biso[:, None]
    fh = structure_factors(
        hkl,
        dstar,
        batch["frac"],
        batch["type_coeffs"],
        biso,
        batch["type_index"],
        batch["weight"],
    )
    return hkl, dstar, mask, fh


def _batches(crystals, size=_BATCH):
    """Index batches of similar cell size (less padding, smaller boxes)."""
    order = sorted(
        range(len(crystals)),
        key=lambda i: (max(crystals[i].lattice[:3]), crystals[i].natoms),
    )
    for start in range(0, len(order), size):
        yield order[start : start + size]


# ------------------------------------------------------------------ PXRD
def simulate_pxrd(
    structure,
    wavelength,
    tth_range=(5.0, 90.0),
    npoints: int = 4000,
    fwhm: float = 0.1,
    eta: float = 0.0,
    *,
    caglioti=None,
    crystallite_size: float | None = None,
    strain: float | None = None,
    zero_shift: float = 0.0,
    preferred_orientation=None,
    background=None,
    counts: float | None = None,
    monochromator_tth: float = 0.0,
    biso: float | None = None,
    seed: int | None = None,
    device=None,
    dtype=torch.float32,
):
    """Simulated powder X-ray pattern of one structure or a list.

    Parameters
    ----------
    structure : structure, CIF path, or a list of them
        diffpy.structure or pymatgen Structure, or a CIF path.
    wavelength : float or str
        Wavelength in Å, or a source name: ``"CuKa1"`` (one line),
        ``"CuKa"`` (Kα1 + Kα2 with ratio 0.5), ``"MoKa"``, ... There is
        no default: pass the one your instrument uses.
    tth_range : (float, float)
        First and last 2θ of the grid (degrees).
    npoints : int
        Points of the uniform 2θ grid.
    fwhm, eta : float
        Instrument peak width (degrees 2θ) and Lorentzian fraction of the
        pseudo-Voigt.
    caglioti : (U, V, W), optional
        Gaussian width from FWHM^2 = U tan^2θ + V tanθ + W (deg^2);
        replaces ``fwhm``.
    crystallite_size : float, optional
        Crystallite size in Å (Scherrer broadening, K = 0.9).
    strain : float, optional
        Microstrain ε (dimensionless; broadening 4 ε tan θ).
    zero_shift : float
        Zero-point error added to every peak (degrees).
    preferred_orientation : ((h, k, l), r), optional
        March-Dollase direction and coefficient (r = 1: none).
    background : sequence of float, optional
        Chebyshev coefficients of a background, in units of the
        strongest peak (which is 1 before noise).
    counts : float, optional
        Poisson noise with this many counts at the strongest point; the
        pattern is then in counts.  Without it the noiseless pattern is
        scaled so that its strongest peak point is 1.
    monochromator_tth : float
        Monochromator 2θ (deg) in the polarisation factor.
    biso : float, optional
        B (Å^2) for every atom; by default each site's own (or
        ``structures.DEFAULT_BISO`` = 1 Å^2 where a structure has none).
    seed : int, optional
        Seed of the noise.
    device : str or torch.device, optional
        None: CUDA when present, else CPU.
    dtype : torch dtype

    Returns
    -------
    Pattern or list of Pattern
        xtype "tth", with the wavelength (Kα1 for a doublet) and the
        settings in ``metadata``.
    """
    from diffpy_mlsolve.pattern import Pattern

    rad = resolve_radiation(wavelength)
    lo, hi = _check_tth(tth_range, npoints)
    crystals, single = as_crystals(structure, standardize=False, biso=biso)
    dev = resolve_device(device)
    step = (hi - lo) / (npoints - 1)
    x = lo + step * np.arange(npoints)
    lam_max = max(lam for lam, _ in rad.lines)
    dstar_max = (
        2
        * math.sin(math.radians(min(hi + abs(zero_shift) + 5, 179.9)) / 2)
        / lam_max
    )
    dstar_max = min(dstar_max, 2 / min(lam for lam, _ in rad.lines))
    gen = None
    if seed is not None:
        gen = torch.Generator(device=dev).manual_seed(int(seed))
    out = [None] * len(crystals)
    for idx in _batches(crystals):
        batch = crystal_tensors([crystals[i] for i in idx], dev, dtype)
        bsz = len(idx)
        hkl, dstar, mask, fh = crystal_structure_factors(batch, dstar_max)
        f2 = fh.real**2 + fh.imag**2
        ones = torch.ones(bsz, dtype=dtype, device=dev)
        lines = [(lam * ones, w) for lam, w in rad.lines]
        orient = None
        if preferred_orientation is not None:
            direction, r = preferred_orientation
            orient = march_dollase(
                hkl, reciprocal_metric(batch["cell"]), direction, r * ones
            )
        y = powder_pattern(
            f2,
            dstar,
            mask,
            (lo, step, npoints),
            lines,
            fwhm=fwhm * ones,
            eta=eta * ones,
            caglioti=caglioti,
            crystallite_size=(
                None if crystallite_size is None else crystallite_size * ones
            ),
            strain=None if strain is None else strain * ones,
            zero_shift=zero_shift * ones if zero_shift else None,
            orientation=orient,
            monochromator_tth=monochromator_tth,
        )
        y = y / torch.clamp(y.amax(-1, keepdim=True), min=1e-30)
        if background is not None:
            xt = torch.as_tensor(x, dtype=dtype, device=dev)
            y = y + chebyshev_background(xt, background)
            if bool((y < 0).any()):
                raise PhysicsInputError(
                    "The background coefficients make the pattern negative. "
                    "Please give a background that stays >= 0 on the grid."
                )
        if counts is not None:
            y = poisson_noise(y, float(counts) * ones, generator=gen)
        y = y.detach().cpu().numpy()
        for j, i in enumerate(idx):
            meta = {
                "simulated_from": crystals[i].label,
                "source_name": rad.name,
                "wavelength2": rad.wavelength2,
                "kalpha2_ratio": rad.ratio,
                "fwhm": fwhm,
                "eta": eta,
            }
            out[i] = Pattern.from_arrays(
                x, y[j], xtype="tth", wavelength=rad.wavelength, metadata=meta
            )
    return out[0] if single else out


def _check_tth(tth_range, npoints):
    try:
        lo, hi = (float(v) for v in tth_range)
    except (TypeError, ValueError):
        raise PhysicsInputError(
            f"tth_range must be two angles in degrees, got {tth_range!r}."
        ) from None
    if not (0 <= lo < hi <= 180):
        raise PhysicsInputError(
            f"tth_range {tth_range} must satisfy 0 <= start < end <= 180 "
            "degrees."
        )
    if int(npoints) < 2:
        raise PhysicsInputError(f"npoints must be >= 2, got {npoints}.")
    return lo, hi


# --------------------------------------------------------------- density
def electron_density(
    structure,
    grid: int = 50,
    *,
    smoothing="auto",
    resolution: float | None = None,
    biso: float | None = None,
    standardize: bool = True,
    device=None,
    dtype=torch.float32,
):
    """All-electron (procrystal) density of the conventional cell.

    Built in reciprocal space from Waasmaier-Kirfel form factors with each
    site's Debye-Waller factor and occupancy, band-limited to the sphere
    the grid resolves (|d*| <= (grid-1)//2 / max(a, b, c)), then FFT.
    It integrates to the cell's electron count.

    Parameters
    ----------
    structure : structure, CIF path, or a list of them
    grid : int
        Points per cell edge.
    smoothing : "auto", float
        Extra B (Å^2) for every atom, against truncation ripples.
        "auto" chooses the smallest that damps the sharpest atom's
        Gaussian factor to 5 % at the band limit; 0 for none.
    resolution : float, optional
        Required d_min (Å): an error if the grid cannot resolve it.
    biso : float, optional
        B (Å^2) for every atom instead of the sites' own.
    standardize : bool
        Use the conventional standard cell (spglib); False keeps the
        cell as given.
    device, dtype
        As in :func:`simulate_pxrd`.

    Returns
    -------
    Density or list of Density
    """
    from diffpy_mlsolve.density import Density

    grid = int(grid)
    if grid < 4:
        raise PhysicsInputError(f"grid must be >= 4 points, got {grid}.")
    crystals, single = as_crystals(
        structure, standardize=standardize, biso=biso
    )
    dev = resolve_device(device)
    out = [None] * len(crystals)
    for idx in _batches(crystals, 8):
        sub = [crystals[i] for i in idx]
        cut = dstar_cutoff(np.stack([c.lattice for c in sub]), grid)
        if resolution is not None:
            _check_resolution(sub, cut, grid, resolution)
        extra = _smoothing(sub, cut, smoothing)
        batch = crystal_tensors(sub, dev, dtype)
        ext = torch.as_tensor(extra, dtype=dtype, device=dev)
        hkl, dstar, _, fh = crystal_structure_factors(
            batch, float(cut.max()), extra_biso=ext
        )
        cut_t = torch.as_tensor(cut, dtype=dtype, device=dev)
        fh = torch.where(dstar <= cut_t[:, None], fh, torch.zeros_like(fh))
        volume = cell_volume(batch["cell"])
        rho = density_from_structure_factors(
            hkl, fh, batch["electrons"], volume, grid
        )
        rho = rho.detach().cpu().numpy()
        for j, i in enumerate(idx):
            c = crystals[i]
            out[i] = Density(
                rho[j],
                c.lattice,
                resolution=float(1 / cut[j]),
                smoothing=float(extra[j]),
                label=c.label,
                metadata={"spacegroup": c.spacegroup},
            )
    return out[0] if single else out


def _check_resolution(crystals, cut, grid, resolution):
    for c, dc in zip(crystals, cut):
        if 1 / dc > resolution:
            need = int(math.ceil(2 * max(c.lattice[:3]) / resolution)) + 2
            raise PhysicsInputError(
                f"A {grid}^3 grid resolves d_min = {1 / dc:.3f} Å for "
                f"{c.label!r}, coarser than resolution={resolution} Å. "
                f"Please use grid >= {need}."
            )


def _smoothing(crystals, cut, smoothing) -> np.ndarray:
    if isinstance(smoothing, str):
        if smoothing != "auto":
            raise PhysicsInputError(
                f"smoothing must be 'auto' or a B in Å^2, got {smoothing!r}."
            )
        s2 = (cut / 2) ** 2  # (sin θ/λ)^2 at the band limit
        need = math.log(1 / _AUTO_DAMPING) / s2
        bmin = np.array([c.biso.min() for c in crystals])
        return np.maximum(need - bmin, 0.0)
    value = float(smoothing)
    if not math.isfinite(value) or value < 0:
        raise PhysicsInputError(
            f"smoothing must be >= 0 Å^2, got {smoothing!r}."
        )
    return np.full(len(crystals), value)


def pattern_from_density(
    density,
    wavelength,
    tth_range=(5.0, 90.0),
    npoints: int = 4000,
    fwhm: float = 0.1,
    eta: float = 0.0,
    *,
    device=None,
    dtype=torch.float32,
):
    """Powder pattern of a :class:`Density` through FFT -> F(h) -> pattern.

    Uses every reflection the density's grid resolves (|d*| <= its band
    limit), the same profile code as :func:`simulate_pxrd`, and is
    scaled so that the strongest point is 1.
    """
    from diffpy_mlsolve.pattern import Pattern

    rad = resolve_radiation(wavelength)
    lo, hi = _check_tth(tth_range, npoints)
    dev = resolve_device(device)
    step = (hi - lo) / (npoints - 1)
    grid = density.values.shape[0]
    cell = torch.tensor(np.array(density.lattice), dtype=dtype, device=dev)[
        None
    ]
    cut = float(dstar_cutoff(density.lattice, grid)[0])
    hkl, dstar, mask = reflections_within(cell, cut)
    rho = torch.tensor(np.array(density.values), dtype=dtype, device=dev)[None]
    fh = structure_factors_from_density(rho, cell_volume(cell), hkl)
    f2 = (fh.real**2 + fh.imag**2).to(dtype)
    ones = torch.ones(1, dtype=dtype, device=dev)
    y = powder_pattern(
        f2,
        dstar,
        mask,
        (lo, step, npoints),
        [(lam * ones, w) for lam, w in rad.lines],
        fwhm=fwhm * ones,
        eta=eta * ones,
    )
    y = (y / torch.clamp(y.amax(), min=1e-30))[0].detach().cpu().numpy()
    x = lo + step * np.arange(npoints)
    return Pattern.from_arrays(
        x,
        y,
        xtype="tth",
        wavelength=rad.wavelength,
        metadata={"simulated_from": f"density of {density.label}"},
    )


# ------------------------------------------------------------------- PDF
def simulate_pdf(
    structure,
    rmax: float = 30.0,
    qmax: float = 25.0,
    qdamp: float = 0.0,
    qbroad: float = 0.0,
    *,
    diameter: float | None = None,
    rmin: float = 0.0,
    rstep: float = 0.01,
    biso: float | None = None,
    device=None,
    dtype=torch.float32,
):
    """X-ray PDF G(r) (Å^-2) of a crystal, or of a spherical nanoparticle.

    Parameters
    ----------
    structure : structure, CIF path, or a list of them
    rmax, rmin, rstep : float
        The r grid (Å).
    qmax : float
        Largest Q of the measurement (Å^-1): sets the termination ripples.
    qdamp, qbroad : float
        Instrument resolution damping and peak broadening (Å^-1), as in
        PDFgui / pdffit2.
    diameter : float, optional
        Particle diameter (Å): G(r) is multiplied by the characteristic
        function of a sphere and vanishes beyond it.
    biso : float, optional
        B (Å^2) for every atom instead of the sites' own.

    Returns
    -------
    Pattern or list of Pattern, xtype "r"
    """
    from diffpy_mlsolve.pattern import Pattern
    from diffpy_mlsolve.physics.pdf import pdf_of_crystal

    if not (rstep > 0 and rmax > rmin >= 0):
        raise PhysicsInputError(
            f"Need 0 <= rmin < rmax and rstep > 0 (Å), got rmin={rmin}, "
            f"rmax={rmax}, rstep={rstep}."
        )
    crystals, single = as_crystals(structure, standardize=False, biso=biso)
    dev = resolve_device(device)
    r = np.arange(rmin, rmax + 0.5 * rstep, rstep)
    r_t = torch.as_tensor(r, dtype=dtype, device=dev)
    out = []
    for c in crystals:
        t = dict(dtype=dtype, device=dev)
        g = pdf_of_crystal(
            torch.as_tensor(c.lattice, **t),
            torch.as_tensor(c.frac, **t),
            torch.as_tensor(c.numbers, device=dev),
            torch.as_tensor(c.occupancy, **t),
            torch.as_tensor(c.biso, **t),
            r_t,
            qmax=qmax,
            qdamp=qdamp,
            qbroad=qbroad,
            diameter=diameter,
        )
        meta = {
            "simulated_from": c.label,
            "qmax": qmax,
            "qdamp": qdamp,
            "qbroad": qbroad,
            "diameter": diameter,
        }
        out.append(
            Pattern.from_arrays(
                r, g.detach().cpu().numpy(), xtype="r", metadata=meta
            )
        )
    return out[0] if single else out
