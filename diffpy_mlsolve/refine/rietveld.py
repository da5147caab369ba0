"""Rietveld refinement in pyobjcryst (ObjCryst++): the driver.

The :class:`~diffpy_mlsolve_plugins.rietveld.RietveldRefiner` plugin is a
thin adapter over :func:`rietveld_refine`, which

1. builds an ObjCryst ``Crystal`` from a
   :class:`~diffpy_mlsolve.symmetry.SymmetrizedStructure` in spglib's
   setting (passed to ObjCryst as a Hall symbol, then checked: the orbit
   of a general point must be the same under both sets of operations, so
   origin choices and hexagonal/rhombohedral axes cannot silently differ);
2. builds a ``PowderPattern`` on 2θ (radians inside ObjCryst) from a
   :class:`~diffpy_mlsolve.pattern.Pattern`, with the Kα1/Kα2 doublet when
   the source is one (``"CuKa"``), weights 1/σ² (σ from the pattern or
   sqrt(max(y, 1))), an interpolated background and a pseudo-Voigt
   profile whose starting width is measured on the data;
3. refines in stages (scale and background, zero shift and lattice,
   profile, atom positions, B per element, then all together), a few
   least-squares cycles each, keeping the best state when a stage fails.

pyobjcryst is imported only inside functions.

Pitfalls of pyobjcryst met here (see the functions for details):

- ``Crystal(a, b, c, alpha, beta, gamma, sg)`` takes the angles in
  radians, and a space-group symbol without a setting picks ObjCryst's
  default, e.g. origin choice 2 of Fd-3m where spglib uses choice 1.
- Coordinates of atoms on special positions are free parameters in
  ObjCryst (its "dynamical occupancy correction" copes with overlapping
  copies); only the free coordinates are refined here, and coupled ones
  (x, x, z) are put back on their special position after each stage.
- ``SetReflectionProfilePar`` replaces the profile object: calling it
  after the least-squares object is built leaves dangling parameters
  (a segmentation fault); profile values are set through parameters.
- The default limits clip the Caglioti W at (1°)² and B at 0.1-5 Å²;
  they are widened here.
- ``SetPowderPatternObs`` weights points by 1/Iobs and there is no
  binding to set σ, so the pattern is handed over as a 2θ/I/σ file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from diffpy_mlsolve.errors import (
    PatternFormatError,
    PhysicsInputError,
    StructureError,
    WavelengthError,
)
from diffpy_mlsolve.radiation import (
    Radiation,
    radiation_of,
    resolve_radiation,
)

__all__ = [
    "STAGES",
    "DEFAULT_CYCLES",
    "DEFAULT_BACKGROUND_POINTS",
    "resolve_spacegroup",
    "symmetrize",
    "objcryst_spacegroup_ids",
    "objcryst_crystal",
    "site_projectors",
    "check_powder_pattern",
    "pattern_radiation",
    "pattern_on_tth",
    "survey_peaks",
    "objcryst_powder",
    "rietveld_refine",
]

#: The refinement stages, in the order they run.
STAGES = ("scale", "background", "lattice", "profile", "positions", "biso")
#: Least-squares cycles per stage.
DEFAULT_CYCLES = 5
#: Interpolation points of the background.
DEFAULT_BACKGROUND_POINTS = 12

# a general position for comparing spglib's and ObjCryst's operations
_GENERAL_POINT = (0.1234, 0.2871, 0.3719)
# fewest points a refinement needs
_MIN_POINTS = 20
# a peak must stand this many noise sigmas above the background
_PEAK_SIGMAS = 8.0
# widest starting peak the width estimate trusts (degrees 2θ)
_MAX_FWHM = 5.0
# the lattice stage first fits with peaks broadened up to this FWHM (deg)
# so that peaks a few tenths of a degree off still overlap their data
_BROAD_FWHM = 1.0
_MAX_BROADENING_STEPS = 4
# widened parameter limits (ObjCryst's own clip W at (1 deg)^2)
_MAX_FWHM_LIMIT = 3.0  # degrees
_BISO_LIMITS = (0.0, 10.0)  # Å^2
_PROFILE = ("U", "V", "W", "Eta0")
_ZERO_LIMITS = (-1.0, 1.0)  # degrees
# the lattice stage first scans the cell's size over this relative range
_CELL_SCAN = 0.015
_CELL_SCAN_POINTS = 100  # at most, each side


# ----------------------------------------------------------- helpers
@contextlib.contextmanager
def _quiet():
    """Silence what the C++ library prints on stdout (file descriptor 1)."""
    import ctypes
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library handle (Windows)
        libc = None
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        if libc is not None:
            libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _norm_symbol(text: str) -> str:
    return "".join(str(text).split()).replace("_", "").lower()


def resolve_spacegroup(spacegroup) -> int:
    """The space-group number (1-230) of a number or a symbol.

    Parameters
    ----------
    spacegroup : int or str
        A number, or a Hermann-Mauguin symbol such as ``"Fm-3m"``,
        ``"P4_2/mnm"`` or ``"P 42/m n m"`` (spaces, underscores, case and
        a setting suffix such as ``":2"`` are ignored).

    Raises
    ------
    StructureError
        For an unknown symbol or a number outside 1-230.
    """
    import spglib

    text = str(spacegroup).strip()
    if isinstance(spacegroup, (int, np.integer)) or text.isdigit():
        number = int(text)
        if 1 <= number <= 230:
            return number
        raise StructureError(
            f"Space group number {number} does not exist. Please give "
            "1-230 or a symbol such as 'Fm-3m'."
        )
    key = _norm_symbol(text.split(":")[0])
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        names = (t.international_short, t.international_full, t.international)
        if key in {_norm_symbol(n.split(":")[0]) for n in names}:
            return int(t.number)
    raise StructureError(
        f"Unknown space group {spacegroup!r}. Please give its number "
        "(1-230) or a Hermann-Mauguin symbol such as 'Fm-3m' or "
        "'P4_2/mnm'."
    )


def _p1(structure):
    """The structure as a SymmetrizedStructure in P1 (every site)."""
    from diffpy_mlsolve.structures import _z_to_symbol, as_crystal
    from diffpy_mlsolve.symmetry import SymmetrizedStructure

    crystal = as_crystal(structure, standardize=False)
    n = crystal.natoms
    return SymmetrizedStructure(
        number=1,
        symbol="P1",
        hall_number=1,
        lattice=tuple(float(v) for v in crystal.lattice),
        elements=tuple(_z_to_symbol(int(z)) for z in crystal.numbers),
        frac=np.mod(np.asarray(crystal.frac, float), 1.0),
        biso=np.asarray(crystal.biso, float),
        occupancy=np.asarray(crystal.occupancy, float),
        wyckoff=("1a",) * n,
        rotations=np.eye(3, dtype=int)[None],
        translations=np.zeros((1, 3)),
        symprec=0.0,
    )


def symmetrize(structure, *, symprec=0.01, spacegroup=None):
    """The space group and asymmetric unit to refine ``structure`` in.

    Parameters
    ----------
    structure : SymmetrizedStructure, CrystalArrays, diffpy or pymatgen
        Structure, or CIF path
    symprec : float or sequence of float
        spglib tolerance(s) in Å for :func:`~diffpy_mlsolve.symmetry.
        find_symmetry`.
    spacegroup : int or str, optional
        Refine in this space group: the tolerances of ``symprec`` and then
        :data:`~diffpy_mlsolve.symmetry.SYMPREC_LADDER` are tried until
        spglib finds it.  ``1`` or ``"P1"`` refines every site freely.

    Raises
    ------
    StructureError
        For an empty or unreadable structure, or when the structure does
        not have the requested space group at any tolerance.
    """
    from diffpy_mlsolve.symmetry import (
        SYMPREC_LADDER,
        SymmetrizedStructure,
        find_symmetry,
    )

    given = isinstance(structure, SymmetrizedStructure)
    if spacegroup is None:
        return (
            structure
            if given
            else find_symmetry(structure, symprec, keep_cell=False)
        )
    number = resolve_spacegroup(spacegroup)
    if given and structure.number == number:
        return structure
    if given:
        structure = structure.to_crystal()
    if number == 1:
        return _p1(structure)
    tols = [symprec] if np.isscalar(symprec) else list(symprec)
    found = []
    for tol in dict.fromkeys(tols + list(SYMPREC_LADDER)):
        try:
            sym = find_symmetry(structure, float(tol), keep_cell=False)
        except StructureError:
            continue
        if sym.number == number:
            return sym
        found.append(f"{sym.symbol} ({sym.number}) at {tol} Å")
    raise StructureError(
        f"The structure does not have space group {spacegroup!r} "
        f"(number {number}) at any tolerance; spglib found "
        f"{', '.join(found) or 'nothing'}. Please leave spacegroup out, "
        "or give 1 ('P1') to refine every site freely."
    )


def objcryst_spacegroup_ids(sym) -> list[str]:
    """Space-group identifiers for ObjCryst in ``sym``'s own setting.

    The Hall symbol first (it names the setting exactly), then the
    Hermann-Mauguin symbol with spglib's setting choice (``":1"``,
    ``":2"``, ``":H"``, ``":R"``).
    """
    import spglib

    t = spglib.get_spacegroup_type(int(sym.hall_number))
    hm = t.international_short
    ids = [f"Hall: {t.hall_symbol}"]
    ids.append(f"{hm}:{t.choice}" if t.choice else hm)
    return ids


def _same_operations(sg, sym, tol: float = 1e-6) -> bool:
    """Whether ObjCryst's space group ``sg`` maps a general point onto the
    same orbit as spglib's operations of ``sym``."""
    x = np.array(_GENERAL_POINT)
    ours = np.mod(
        np.einsum("sij,j->si", sym.rotations, x) + sym.translations, 1.0
    )
    theirs = np.mod(np.asarray(sg.GetAllSymmetrics(*x), float), 1.0)

    def unique(points):
        keep = []
        for p in points:
            if not any(
                np.all(np.abs((p - q + 0.5) % 1.0 - 0.5) < tol) for q in keep
            ):
                keep.append(p)
        return np.array(keep)

    ours, theirs = unique(ours), unique(theirs)
    if len(ours) != len(theirs):
        return False
    diff = np.abs((ours[:, None, :] - theirs[None, :, :] + 0.5) % 1.0 - 0.5)
    return bool(np.all(np.any(np.all(diff < tol, axis=2), axis=1)))


def objcryst_crystal(sym, name: str = "mlsolve"):
    """An ObjCryst ``Crystal`` of a SymmetrizedStructure.

    One ``ScatteringPowerAtom`` per element (with its B), one ``Atom`` per
    asymmetric-unit site (with its occupancy).  The space group is given
    in ``sym``'s setting and checked against spglib's operations.

    Parameters
    ----------
    sym : SymmetrizedStructure
    name : str
        The crystal's name in ObjCryst.

    Raises
    ------
    StructureError
        When ObjCryst cannot build the space group in spglib's setting.
    """
    from pyobjcryst.atom import Atom
    from pyobjcryst.crystal import Crystal
    from pyobjcryst.scatteringpower import ScatteringPowerAtom

    a, b, c, al, be, ga = (float(v) for v in sym.lattice)
    angles = [math.radians(v) for v in (al, be, ga)]
    tried = []
    cryst = None
    for sg_id in objcryst_spacegroup_ids(sym):
        try:
            with _quiet():
                candidate = Crystal(a, b, c, *angles, sg_id)
        except Exception as err:  # ObjCrystException and friends
            tried.append(f"{sg_id!r}: {err}")
            continue
        if _same_operations(candidate.GetSpaceGroup(), sym):
            cryst = candidate
            break
        tried.append(
            f"{sg_id!r} gives ObjCryst's "
            f"{candidate.GetSpaceGroup().GetName()!r}, whose operations "
            "differ from spglib's"
        )
    if cryst is None:
        raise StructureError(
            f"ObjCryst cannot build space group {sym.symbol} "
            f"({sym.number}) in spglib's setting (Hall number "
            f"{sym.hall_number}): {'; '.join(tried)}. Please refine in "
            "another space group (spacegroup=1 refines in P1)."
        )
    cryst.SetName(name)
    powers = {}
    for el, biso in zip(sym.elements, sym.biso):
        if el in powers:
            continue
        power = ScatteringPowerAtom(el, el, float(biso))
        power.GetPar("Biso").SetLimitsAbsolute(*_BISO_LIMITS)
        cryst.AddScatteringPower(power)
        powers[el] = power
    for i, (el, x, occ) in enumerate(
        zip(sym.elements, sym.frac, sym.occupancy)
    ):
        x = np.mod(np.asarray(x, float), 1.0)
        cryst.AddScatterer(
            Atom(*(float(v) for v in x), f"{el}{i + 1}", powers[el], occ)
        )
    return cryst


def site_projectors(sym, tol: float = 1e-4) -> list[np.ndarray]:
    """Per asymmetric-unit site, the projector onto its free directions.

    The site-symmetry group of x is the set of operations (R, t) with
    R x + t = x modulo a lattice vector; the mean of its R is the
    projection of a displacement onto the directions that keep the site
    symmetry.  Fractional axis k of a site is free when column k of its
    projector is not zero; an off-diagonal entry couples two axes (x, x, z).

    Returns
    -------
    list of ndarray (3, 3)
    """
    out = []
    for x in np.asarray(sym.frac, float):
        stab = []
        for rot, tr in zip(sym.rotations, sym.translations):
            d = rot @ x + tr - x
            if np.all(np.abs(d - np.rint(d)) < tol):
                stab.append(rot)
        out.append(np.mean(np.asarray(stab, float), axis=0))
    return out


def _origin_anchor(sym, projectors) -> tuple[int | None, tuple]:
    """The site that pins a floating origin, and the floating axes.

    In a polar group (P4mm, P1, ...) the mean of the rotations is not
    zero: moving every atom along its invariant directions changes no
    intensity, so least squares would be singular.  The first site of the
    heaviest element with a free coordinate along them keeps it fixed.
    """
    from diffpy_mlsolve.structures import _symbol_to_z

    polar = np.mean(np.asarray(sym.rotations, float), axis=0)
    floating = tuple(k for k in range(3) if np.any(np.abs(polar[:, k]) > 1e-8))
    if not floating:
        return None, ()
    order = sorted(
        range(len(sym.elements)),
        key=lambda i: (-_symbol_to_z(sym.elements[i], ""), i),
    )
    for i in order:
        if any(np.any(np.abs(projectors[i][:, k]) > 1e-8) for k in floating):
            return i, floating
    return None, floating


# ----------------------------------------------------------- patterns
def check_powder_pattern(pattern) -> None:
    """Refuse a PDF (xtype "r"): Rietveld needs a diffraction pattern.

    Raises
    ------
    PatternFormatError
        For a PDF G(r), naming the "pdf" refiner.
    """
    if pattern.xtype == "r":
        raise PatternFormatError(
            "This pattern is a PDF G(r) (xtype 'r'); Rietveld refinement "
            "needs a powder diffraction pattern on 2θ, Q or d. Please use "
            "the 'pdf' refiner for a PDF, e.g. candidate.refine('pdf', "
            "pattern) or get_refiner('pdf')."
        )


def pattern_radiation(pattern, wavelength=None, radiation=None) -> Radiation:
    """The X-ray lines to refine ``pattern`` with.

    ``radiation`` (a name such as ``"CuKa"`` for the Kα1/Kα2 doublet,
    ``"CuKa1"`` for one line, a wavelength in Å or a Radiation) wins, then
    ``wavelength`` (the same forms), then the pattern's own wavelength,
    as a doublet when its metadata name one (``source_name`` ``"CuKa"``,
    as :func:`~diffpy_mlsolve.simulate.simulate_pxrd` writes).

    Raises
    ------
    WavelengthError
        When no wavelength is known, or ``wavelength`` and ``radiation``
        disagree.
    """
    if radiation is not None:
        rad = resolve_radiation(radiation, what="radiation")
        if wavelength is not None:
            lam = resolve_radiation(wavelength).wavelength
            if abs(lam - rad.wavelength) > 1e-4 * rad.wavelength:
                raise WavelengthError(
                    f"wavelength={lam:g} Å and radiation={radiation!r} "
                    f"({rad.wavelength:g} Å) disagree. Please give one of "
                    "them."
                )
        return rad
    if wavelength is not None:
        return resolve_radiation(wavelength)
    lam = getattr(pattern, "wavelength", None)
    if lam is None:
        axis = {"tth": "2θ", "q": "Q", "d": "d"}.get(pattern.xtype, "")
        raise WavelengthError(
            f"This pattern is on {axis} and has no wavelength, and Rietveld "
            "refinement needs the wavelength of the measurement (it is "
            "never assumed). Please pass wavelength= in Å or as a source "
            "name (e.g. wavelength=1.5406 or 'CuKa1'), or radiation='CuKa' "
            "for the Kα1/Kα2 doublet."
        )
    return radiation_of(pattern)


def pattern_on_tth(pattern, rad: Radiation, tth_range=None):
    """2θ (degrees), intensities and sigma (or None) to refine against.

    A pattern on Q or d is put on 2θ at ``rad``'s (Kα1) wavelength; a 2θ
    pattern keeps its axis.  ``tth_range`` (degrees) crops it.

    Raises
    ------
    PatternFormatError
        For a PDF (xtype "r") or too few points in ``tth_range``.
    WavelengthError
        For a 2θ pattern measured at another wavelength than ``rad``'s.
    """
    check_powder_pattern(pattern)
    if pattern.xtype == "tth":
        own = pattern.wavelength
        if own is not None and abs(own - rad.wavelength) > 1e-4 * own:
            raise WavelengthError(
                f"The pattern's 2θ axis is for λ = {own:g} Å, but the "
                f"refinement was asked to use {rad.wavelength:g} Å. Please "
                "leave wavelength=/radiation= out, or move the pattern "
                "first with pattern.on_tth(new_wavelength)."
            )
        x, y, sigma = pattern.x, pattern.intensity, pattern.sigma
    else:
        moved = pattern.on_tth(rad.wavelength)
        x, y, sigma = moved.x, moved.intensity, moved.sigma
    x, y = np.asarray(x, float), np.asarray(y, float)
    sigma = None if sigma is None else np.asarray(sigma, float)
    keep = (x > 0) & (x < 180)
    if tth_range is not None:
        try:
            lo, hi = (float(v) for v in tth_range)
        except (TypeError, ValueError):
            raise PhysicsInputError(
                f"tth_range must be two angles in degrees, got "
                f"{tth_range!r}."
            ) from None
        keep &= (x >= lo) & (x <= hi)
    if int(keep.sum()) < _MIN_POINTS:
        raise PatternFormatError(
            f"Only {int(keep.sum())} points of the pattern lie in 2θ "
            f"{tth_range or (x[0], x[-1])}; a refinement needs at least "
            f"{_MIN_POINTS}. Please widen tth_range."
        )
    return x[keep], y[keep], None if sigma is None else sigma[keep]


def survey_peaks(x, y) -> tuple[np.ndarray, float]:
    """A smooth background and the FWHM (degrees) of the strongest peak.

    The background is the clipped Chebyshev fit of
    :meth:`Pattern.estimate_background`; the noise σ comes from the
    median absolute first difference; the strongest point of
    y - background must stand 8 σ above it.  The FWHM is read at half
    that height on either side (linear interpolation).

    Raises
    ------
    PatternFormatError
        When no peak stands out of the noise (a flat pattern).
    """
    from diffpy_mlsolve.background import chebyshev_background_fit

    x, y = np.asarray(x, float), np.asarray(y, float)
    bg = chebyshev_background_fit(x, y, 6, 2.0, 100)
    net = y - bg
    noise = 1.4826 * float(np.median(np.abs(np.diff(y)))) / math.sqrt(2)
    scale = float(np.max(np.abs(y))) or 1.0
    i0 = int(np.argmax(net))
    height = float(net[i0])
    if not height > max(_PEAK_SIGMAS * noise, 1e-6 * scale):
        raise PatternFormatError(
            "The pattern has no diffraction peak above the noise (the "
            f"strongest point stands {height:.3g} above the background, "
            f"the noise is {noise:.3g}). Please check that this is the "
            "measured diffraction pattern and its intensity column."
        )
    half = height / 2
    step = float(np.median(np.diff(x)))

    def crossing(indices):
        prev = i0
        for i in indices:
            if net[i] < half:
                f = (net[prev] - half) / (net[prev] - net[i])
                return float(x[prev] + f * (x[i] - x[prev]))
            prev = i
        return None

    left = crossing(range(i0 - 1, -1, -1))
    right = crossing(range(i0 + 1, len(x)))
    if left is None and right is None:
        fwhm = _MAX_FWHM
    elif left is None:
        fwhm = 2 * (right - x[i0])
    elif right is None:
        fwhm = 2 * (x[i0] - left)
    else:
        fwhm = right - left
    return bg, float(np.clip(fwhm, step, _MAX_FWHM))


def objcryst_powder(x, y, sigma, rad: Radiation):
    """An ObjCryst ``PowderPattern`` (X-ray) with observed data.

    Parameters
    ----------
    x : ndarray
        2θ in degrees, increasing.
    y, sigma : ndarray
        Intensities and their σ (weights 1/σ²).
    rad : Radiation
        One line, or a Kα1/Kα2 doublet (ObjCryst's Wavelength parameter
        is then the ratio-weighted mean and XRayTubeDeltaLambda the
        splitting).
    """
    from pyobjcryst.powderpattern import PowderPattern
    from pyobjcryst.radiation import RadiationType, WavelengthType

    powder = PowderPattern()
    powder.SetRadiationType(RadiationType.RAD_XRAY)
    powder.SetWavelength(float(rad.wavelength))
    lines = rad.lines
    if len(lines) == 2:
        (l1, _), (l2, ratio) = lines
        radiation = powder.GetRadiation()
        radiation.SetWavelengthType(WavelengthType.WAVELENGTH_ALPHA12)
        radiation.GetPar("Wavelength").SetValue(
            (l1 + ratio * l2) / (1 + ratio)
        )
        radiation.GetPar("XRayTubeDeltaLambda").SetValue(l2 - l1)
        radiation.GetPar("XRayTubeAlpha2Alpha1Ratio").SetValue(ratio)
    fd, path = tempfile.mkstemp(suffix=".xye", prefix="mlsolve_")
    try:
        with os.fdopen(fd, "w") as fh:
            np.savetxt(fh, np.column_stack([x, y, sigma]), fmt="%.12g")
        with _quiet():
            powder.ImportPowderPattern2ThetaObsSigma(path, 0)
    finally:
        Path(path).unlink(missing_ok=True)
    top = math.radians(min(float(x[-1]) + 2.0, 179.0)) / 2
    shortest = min(lam for lam, _ in lines)
    powder.SetMaxSinThetaOvLambda(math.sin(top) / shortest)
    return powder


def set_pseudo_voigt(diffraction, fwhm: float, eta: float = 0.5):
    """Start a ``PowderPatternDiffraction`` on a pseudo-Voigt profile.

    The width is constant in 2θ (Caglioti W = FWHM², U = V = 0, in
    radians) with mixing η, the starting point of every ObjCryst fit
    here.

    Parameters
    ----------
    diffraction : pyobjcryst.powderpattern.PowderPatternDiffraction
    fwhm : float
        Full width at half maximum in degrees 2θ.
    eta : float
        Lorentzian fraction, 0 (Gaussian) to 1 (Lorentzian).
    """
    from pyobjcryst.reflectionprofile import ReflectionProfileType

    diffraction.SetReflectionProfilePar(
        ReflectionProfileType.PROFILE_PSEUDO_VOIGT,
        math.radians(fwhm) ** 2,
        0.0,
        0.0,
        float(eta),
        0.0,
    )


# ----------------------------------------------------------- the fit
class _Fit:
    """The ObjCryst objects of one refinement and its least squares."""

    def __init__(self, sym, x, y, sigma, rad, bg, fwhm, nbg, cycles):
        from pyobjcryst.lsq import LSQ

        self.sym = sym
        self.cycles = cycles
        self.crystal = objcryst_crystal(sym)
        self.powder = objcryst_powder(x, y, sigma, rad)
        self.diffraction = self.powder.AddPowderPatternDiffraction(
            self.crystal
        )
        self.fwhm0 = fwhm
        set_pseudo_voigt(self.diffraction, fwhm)
        profile = self.diffraction.GetProfile()
        self.profile = {n: profile.GetPar(n) for n in _PROFILE}
        wmax = math.radians(_MAX_FWHM_LIMIT) ** 2
        self.profile["W"].SetLimitsAbsolute(0.0, wmax)
        self.profile["U"].SetLimitsAbsolute(-wmax, wmax)
        self.profile["V"].SetLimitsAbsolute(-wmax, wmax)
        self.background = self.powder.AddPowderPatternBackground()
        bx = np.linspace(x[0], x[-1], nbg)
        self.background.SetInterpPoints(np.radians(bx), np.interp(bx, x, bg))
        if nbg < 4:  # too few points for a spline
            self.background.GetOption(0).SetChoice(0)
        self.bg_model = self.background.GetOption(0).GetChoiceName(
            self.background.GetOption(0).GetChoice()
        )
        # parameters are taken by name before the least-squares object
        # exists: compiling it renames duplicates ("x~", "Biso~")
        self.zero = self.powder.GetPar("Zero")
        self.zero.SetLimitsAbsolute(*(math.radians(v) for v in _ZERO_LIMITS))
        self.cell = [
            self.crystal.GetPar(n)
            for n in "abc"
            if self.crystal.GetPar(n).IsUsed()
        ]
        self.cell_scale = 1.0
        self.projectors = site_projectors(sym)
        self.coupled = []
        self.coords = []
        anchor, floating = _origin_anchor(sym, self.projectors)
        for i, proj in enumerate(self.projectors):
            atom = self.crystal.GetScatterer(i)
            free = [
                k
                for k in range(3)
                if np.any(np.abs(proj[:, k]) > 1e-8)
                and not (i == anchor and k in floating)
            ]
            self.coords += [atom.GetPar("xyz"[k]) for k in free]
            if not np.allclose(proj, np.diag(np.diag(proj))):
                self.coupled.append(i)
        self.anchor = None if anchor is None else (anchor, floating)
        self.bisos = [
            self.crystal.GetScatteringPower(el).GetPar("Biso")
            for el in dict.fromkeys(sym.elements)
        ]
        self.yobs = np.asarray(self.powder.GetPowderPatternObs(), float)
        self.x = np.degrees(np.asarray(self.powder.GetPowderPatternX()))
        self.powder.FitScaleFactorForRw()
        self.weight = np.asarray(self.powder.GetLSQWeight(0), float)
        self.lsq = LSQ()
        self.lsq.SetRefinedObj(self.powder, 0, True, True)
        self.lsq.PrepareRefParList(False)
        self.obj = self.lsq.GetCompiledRefinedObj()
        self.obj.FixAllPar()
        self.best_set = self.obj.CreateParamSet("mlsolve best")
        self.obj.SaveParamSet(self.best_set)
        self.best_chi2 = self.chi2()
        self.stages: list[dict] = []
        self.refined: set = set()
        self.n_cycles = 0

    # figures of merit, computed here with ObjCryst's own weights
    def ycalc(self) -> np.ndarray:
        return np.asarray(self.powder.GetPowderPatternCalc(), float)

    def chi2(self) -> float:
        return float(np.sum(self.weight * (self.yobs - self.ycalc()) ** 2))

    def rwp(self) -> float:
        return math.sqrt(
            self.chi2() / float(np.sum(self.weight * self.yobs**2))
        )

    def params(self, group: str) -> list:
        from pyobjcryst import refinableobj as ro

        return {
            "scale": [ro.refpartype_scattdata_scale],
            "background": [ro.refpartype_scattdata_background],
            "lattice": [ro.refpartype_unitcell, self.zero],
            "profile": [self.profile[n] for n in _PROFILE],
            "positions": list(self.coords),
            "biso": list(self.bisos),
        }[group]

    def symmetrize_positions(self) -> None:
        """Put coupled coordinates back on their special positions."""
        for i in self.coupled:
            atom = self.crystal.GetScatterer(i)
            x0 = np.asarray(self.sym.frac[i], float)
            x = np.array([atom.GetX(), atom.GetY(), atom.GetZ()])
            d = x - x0
            d -= np.rint(d)
            new = x0 + self.projectors[i] @ d
            atom.SetX(float(new[0]))
            atom.SetY(float(new[1]))
            atom.SetZ(float(new[2]))

    def _free(self, groups, extra=()) -> int:
        """Free the parameters of ``groups`` (and ``extra``) only; their
        number (ObjCryst's own count is updated lazily)."""
        self.obj.FixAllPar()
        for group in groups:
            for par in self.params(group):
                self.lsq.SetParIsFixed(par, False)
        for par in extra:
            self.lsq.SetParIsFixed(par, False)
        return sum(
            1
            for i in range(self.obj.GetNbPar())
            if not self.obj.GetPar(i).IsFixed() and self.obj.GetPar(i).IsUsed()
        )

    def _cycles(self, cycles) -> str:
        """Least-squares cycles; "" when they ran, else why not."""
        try:
            with _quiet():
                ok = self.lsq.SafeRefine(1.01, int(cycles), True, True)
        except Exception as err:  # ObjCrystException, singular matrix...
            return f"least squares failed: {err}"
        finally:
            self.n_cycles += int(cycles)
        self.symmetrize_positions()
        return "" if ok else "ObjCryst reverted the cycles (chi2 rose)"

    def _accept(self, name, groups, nfree, problem, cycles, rwp0) -> None:
        chi2 = self.chi2()
        status = "ok"
        if problem:
            status = problem
        if not (math.isfinite(chi2) and chi2 <= self.best_chi2 * 1.000001):
            self.obj.RestoreParamSet(self.best_set)
            status = (problem + "; " if problem else "") + (
                "kept the previous state (chi2 rose)"
            )
        else:
            self.obj.SaveParamSet(self.best_set)
            self.best_chi2 = chi2
            self.refined.update(groups)
        self.stages.append(
            {
                "stage": name,
                "parameters": nfree,
                "cycles": cycles,
                "rwp_before": rwp0,
                "rwp": self.rwp(),
                "status": status,
            }
        )

    def stage(self, name: str, groups, extra=()) -> None:
        """Refine the parameter ``groups`` (with the scale) a few cycles."""
        groups = ["scale"] + [g for g in groups if g != "scale"]
        rwp0 = self.rwp()
        nfree = self._free(groups, extra)
        problem = self._cycles(self.cycles) if nfree else "nothing free"
        self._accept(name, groups, nfree, problem, self.cycles, rwp0)

    def scan_cell(self) -> None:
        """Scale the cell (all lengths alike) to the best of a grid.

        The grid spans ±1.5 % in steps that move the last peak by a
        quarter of its width; the scale factor is fitted at each point.
        Cheap (one pattern per point), and it catches a cell that is just
        too large or small, where least squares may lock on the wrong
        peaks (pseudo-cubic cells).
        """
        start = [par.GetValue() for par in self.cell]
        theta = math.radians(float(self.x[-1])) / 2
        step = max(math.radians(self.fwhm0) / (4 * math.tan(theta)), 1e-5)
        n = min(int(_CELL_SCAN / step), _CELL_SCAN_POINTS)
        best = (self.chi2(), 1.0)
        for factor in 1.0 + step * np.arange(-n, n + 1):
            for par, value in zip(self.cell, start):
                par.SetValue(value * factor)
            self.powder.FitScaleFactorForRw()
            chi2 = self.chi2()
            if chi2 < best[0]:
                best = (chi2, float(factor))
        for par, value in zip(self.cell, start):
            par.SetValue(value * best[1])
        self.powder.FitScaleFactorForRw()
        self.cell_scale *= best[1]

    def lattice_stage(self, groups) -> None:
        """Zero shift and cell, first against broadened peaks.

        Peaks of a cell 0.5 % off miss their data by several widths at
        high angle, where least squares sees no gradient; fitting with
        the FWHM doubled up to ~1° first and halved back step by step
        (U = V = 0 meanwhile) pulls the cell in, then a fit at the data's
        width follows.  When that ends worse than the start (split peaks
        of a pseudo-symmetric cell can merge while broadened), the fit at
        the data's width alone is tried from the start instead.
        """
        rwp0 = self.rwp()
        self.scan_cell()
        if self.chi2() < self.best_chi2:
            self.obj.SaveParamSet(self.best_set)
            self.best_chi2 = self.chi2()
        prof = self.profile
        keep = {n: prof[n].GetValue() for n in ("U", "V", "W")}
        steps = int(math.ceil(math.log2(_BROAD_FWHM / self.fwhm0)))
        steps = max(0, min(_MAX_BROADENING_STEPS, steps))
        broad = max(2, self.cycles // 2)
        cycles, problems = 0, []
        if steps:
            prof["U"].SetValue(0.0)
            prof["V"].SetValue(0.0)
            self._free(["scale", "lattice"])
            for k in range(steps, 0, -1):
                prof["W"].SetValue(math.radians(self.fwhm0 * 2**k) ** 2)
                problem = self._cycles(broad)
                cycles += broad
                if problem.startswith("least squares failed"):
                    problems.append(problem)
                    break
            for n, v in keep.items():
                prof[n].SetValue(v)
        nfree = self._free(["scale"] + list(groups))
        problem = self._cycles(self.cycles) if nfree else "nothing free"
        cycles += self.cycles
        problems += [problem] if problem else []
        if steps and nfree and not self.chi2() <= self.best_chi2:
            self.obj.RestoreParamSet(self.best_set)
            self.symmetrize_positions()
            problem = self._cycles(self.cycles)
            cycles += self.cycles
            problems = ["broadened fit rejected"] + (
                [problem] if problem else []
            )
        self._accept(
            "lattice", groups, nfree, "; ".join(problems), cycles, rwp0
        )

    def profile_stage(self, groups) -> None:
        """W and eta first, then U, V, W and eta."""
        self.stage(
            "profile (W, eta)",
            [g for g in groups if g != "profile"],
            [self.profile["W"], self.profile["Eta0"]],
        )
        self.stage("profile", groups)

    def restore_best(self) -> None:
        self.obj.RestoreParamSet(self.best_set)
        self.symmetrize_positions()

    def refined_structure(self):
        """``sym`` with the refined lattice, coordinates and B."""
        par = np.asarray(self.crystal.GetLatticePar(), float)
        lattice = tuple(float(v) for v in par[:3]) + tuple(
            math.degrees(float(v)) for v in par[3:]
        )
        frac = []
        for i in range(len(self.sym.elements)):
            atom = self.crystal.GetScatterer(i)
            frac.append([atom.GetX(), atom.GetY(), atom.GetZ()])
        biso = {
            el: float(self.crystal.GetScatteringPower(el).GetBiso())
            for el in dict.fromkeys(self.sym.elements)
        }
        return dataclasses.replace(
            self.sym,
            lattice=lattice,
            frac=np.mod(np.array(frac, float), 1.0),
            biso=np.array([biso[el] for el in self.sym.elements]),
        )


def _check_stages(stages) -> tuple[str, ...]:
    if isinstance(stages, str):
        stages = (stages,)
    stages = tuple(stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise PhysicsInputError(
            f"Unknown refinement stage(s) {unknown}. Please choose from "
            f"{', '.join(STAGES)}."
        )
    return tuple(s for s in STAGES if s in stages)


def _check_count(value, name, low) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != value or number < low:
        raise PhysicsInputError(
            f"{name} must be a whole number >= {low}, got {value!r}."
        )
    return number


def rietveld_refine(
    sym,
    pattern,
    *,
    wavelength=None,
    radiation=None,
    stages=STAGES,
    cycles: int = DEFAULT_CYCLES,
    background_points: int = DEFAULT_BACKGROUND_POINTS,
    tth_range=None,
):
    """Rietveld refinement of a symmetrized structure against a pattern.

    Parameters
    ----------
    sym : SymmetrizedStructure
        The starting structure in its space group (see :func:`symmetrize`).
    pattern : Pattern
        A powder X-ray pattern on 2θ, Q or d (Q and d are put on 2θ).
    wavelength, radiation : float, str or Radiation, optional
        See :func:`pattern_radiation`; ``radiation="CuKa"`` adds Kα2,
        ``"CuKa1"`` forces one line.
    stages : sequence of str
        Which of :data:`STAGES` to refine; they always run in that order,
        then everything refined is refined together ("all").  The scale
        is refined in every stage.
    cycles : int
        Least-squares cycles per stage.
    background_points : int
        Interpolation points of the background (spline; linear below 4).
    tth_range : (float, float), optional
        The 2θ range (degrees) to fit.

    Returns
    -------
    RefinementResult
        ``structure`` is the refined full cell (diffpy), ``rwp`` a
        fraction, ``gof`` chi² per degree of freedom, ``x`` 2θ in degrees,
        ``ycalc`` ObjCryst's pattern with background; ``settings`` hold
        the space group, radiation, refined lattice, zero shift (ObjCryst
        convention, degrees), Caglioti U, V, W (deg²), eta, scale,
        per-element B, the stages with their Rwp and status, the sigma
        model and the pyobjcryst version.

    Raises
    ------
    PatternFormatError
        For a PDF, too few points or a pattern without peaks.
    WavelengthError
        When no wavelength is known.
    PhysicsInputError
        For unknown stages or bad counts.
    StructureError
        When ObjCryst cannot build the space group in spglib's setting.
    """
    import pyobjcryst

    from diffpy_mlsolve.solver import RefinementResult

    stages = _check_stages(stages)
    cycles = _check_count(cycles, "cycles", 1)
    nbg = _check_count(background_points, "background_points", 2)
    check_powder_pattern(pattern)
    rad = pattern_radiation(pattern, wavelength, radiation)
    x, y, sigma = pattern_on_tth(pattern, rad, tth_range)
    bg, fwhm = survey_peaks(x, y)
    if sigma is None:
        sigma = np.sqrt(np.maximum(y, 1.0))
        sigma_model = "sqrt(max(y, 1)) (Poisson-like)"
    else:
        sigma_model = "pattern sigma"
    fit = _Fit(sym, x, y, sigma, rad, bg, fwhm, nbg, cycles)
    rwp_start = fit.rwp()
    done = []
    if "background" in stages:
        fit.stage("background", ["background"])
        done.append("background")
    elif "scale" in stages:
        fit.stage("scale", ["scale"])
    if "lattice" in stages:
        fit.lattice_stage(done + ["lattice"])
        done.append("lattice")
    if "profile" in stages:
        fit.profile_stage(done + ["profile"])
        done.append("profile")
    for name in ("positions", "biso"):
        if name in stages and fit.params(name):
            fit.stage(name, [name])
            done.append(name)
    all_groups = ["scale"] + sorted(fit.refined - {"scale"}, key=STAGES.index)
    if len(all_groups) > 1:
        fit.stage("all", all_groups)
    fit.restore_best()
    ycalc = fit.ycalc()
    rwp = fit.rwp()
    npar = fit._free(all_groups)
    fit.obj.FixAllPar()
    dof = len(fit.yobs) - npar
    gof = fit.chi2() / dof if dof > 0 else None
    refined = fit.refined_structure()
    prof = {n: fit.profile[n].GetValue() for n in _PROFILE}
    deg2 = math.degrees(1.0) ** 2
    settings = {
        "refiner": "rietveld",
        "backend": "pyobjcryst",
        "pyobjcryst_version": getattr(pyobjcryst, "__version__", "unknown"),
        "spacegroup": refined.symbol,
        "spacegroup_number": refined.number,
        "hall_number": refined.hall_number,
        "objcryst_spacegroup": fit.crystal.GetSpaceGroup().GetName(),
        "radiation": rad.name or f"{rad.wavelength:g} Å",
        "wavelength": rad.wavelength,
        "wavelength2": rad.wavelength2,
        "kalpha2_ratio": rad.ratio,
        "tth_range": (float(fit.x[0]), float(fit.x[-1])),
        "npoints": int(len(fit.x)),
        "sigma_model": sigma_model,
        "lattice_start": tuple(float(v) for v in sym.lattice),
        "lattice": refined.lattice,
        "zero_shift_deg": math.degrees(fit.zero.GetValue()),
        "cell_scan_factor": fit.cell_scale,
        "fwhm_start_deg": fwhm,
        "caglioti_u_deg2": prof["U"] * deg2,
        "caglioti_v_deg2": prof["V"] * deg2,
        "caglioti_w_deg2": prof["W"] * deg2,
        "eta": prof["Eta0"],
        "scale": float(fit.powder.GetScaleFactor(fit.diffraction)),
        "origin_fixed_by": (
            None
            if fit.anchor is None
            else f"{sym.elements[fit.anchor[0]]}{fit.anchor[0] + 1} "
            + "".join("xyz"[k] for k in fit.anchor[1])
        ),
        "background_points": nbg,
        "background_model": fit.bg_model,
        "biso": {
            el: float(b) for el, b in zip(refined.elements, refined.biso)
        },
        "asymmetric_unit": [
            {
                "element": el,
                "wyckoff": wy,
                "frac": [float(v) for v in xyz],
                "biso": float(b),
                "occupancy": float(o),
            }
            for el, wy, xyz, b, o in zip(
                refined.elements,
                refined.wyckoff,
                refined.frac,
                refined.biso,
                refined.occupancy,
            )
        ],
        "stages": [s["stage"] for s in fit.stages],
        "stage_log": fit.stages,
        "cycles_per_stage": cycles,
        "n_cycles": fit.n_cycles,
        "n_parameters": npar,
        "rwp_start": rwp_start,
        "chi2": fit.chi2(),
    }
    return RefinementResult(
        structure=refined.to_diffpy(),
        rwp=rwp,
        x=fit.x,
        yobs=fit.yobs,
        ycalc=ycalc,
        gof=gof,
        settings=settings,
    )
