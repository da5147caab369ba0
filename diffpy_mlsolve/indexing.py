"""Index a powder pattern when the unit cell is not known.

Two steps:

1. :func:`find_pattern_peaks` finds the peak positions of a measured
   pattern (numpy/scipy only): background subtraction, Kα2 stripping
   (Rachinger) when the source is a doublet, Savitzky-Golay smoothing
   matched to the peak width, local maxima above a prominence threshold
   in noise units, and a sub-point position from a parabola through the
   top of each peak.  Positions come back as d-spacings (Å) with their
   uncertainty and height.
2. :func:`index_pattern` hands the first (largest-d) peaks to ObjCryst++'s
   dichotomy indexing (``pyobjcryst.indexing.CellExplorer.DicVol``), one
   search per crystal system and lattice centring, so that centred
   lattices come back as their conventional cell (NaCl: F cubic a =
   5.64 Å, not the 3.99 Å primitive rhombohedron).  Every solution is then
   re-scored here: the centring is taken from the systematic absences of
   the indexed peaks (this is how R lattices are found, on hexagonal axes,
   obverse setting: ObjCryst's own rhombohedral search rarely finds
   them), the cell is refined by least squares on the indexed peaks and
   put in its standard setting, de Wolff's figure of merit M(N) is
   computed over the distinct lines the centring allows, descriptions of
   one lattice are merged, and the best cells come back as
   :class:`CellCandidate`, best first.  Optionally the space groups of
   the best cells are ranked with ObjCryst's ``SpaceGroupExplorer`` (Le
   Bail fits, :func:`score_spacegroups`, 2-6 s per cell); by default only
   the lattice centring, from the absences, is reported.

Indexing works on d-spacings, so a pattern on Q or d needs no wavelength;
a 2θ pattern needs one.  Typical times on one CPU core, 20 peaks: cubic
to trigonal cells 0.1 s, orthorhombic about 1 s, monoclinic 1-10 s,
triclinic (searched only when asked for) 1-3 min.  pyobjcryst is imported
only inside the functions that use it.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from diffpy_mlsolve.data.sources import CRYSTAL_SYSTEMS
from diffpy_mlsolve.errors import (
    MissingBackendError,
    MLSolveError,
    PatternFormatError,
    WavelengthError,
)

__all__ = [
    "PatternPeaks",
    "CellCandidate",
    "IndexingError",
    "TooFewPeaksError",
    "find_pattern_peaks",
    "index_pattern",
    "score_spacegroups",
    "SYSTEMS",
    "MIN_PEAKS",
]

#: Crystal systems :func:`index_pattern` can search, highest symmetry first.
SYSTEMS = CRYSTAL_SYSTEMS
#: The fewest peaks :func:`index_pattern` accepts.
MIN_PEAKS = 5
_DEFAULT_SYSTEMS = SYSTEMS[:-1]  # triclinic is slow: only when asked
# ObjCryst searches per system (its names) and centring; A/B/I settings of
# orthorhombic C and monoclinic C are the same lattices with axes swapped.
_SEARCH = {
    "cubic": [("CUBIC", "P"), ("CUBIC", "I"), ("CUBIC", "F")],
    "hexagonal": [("HEXAGONAL", "P")],
    "trigonal": [("RHOMBOEDRAL", "P"), ("HEXAGONAL", "P")],
    "tetragonal": [("TETRAGONAL", "P"), ("TETRAGONAL", "I")],
    "orthorhombic": [
        ("ORTHOROMBIC", "P"),
        ("ORTHOROMBIC", "C"),
        ("ORTHOROMBIC", "I"),
        ("ORTHOROMBIC", "F"),
    ],
    "monoclinic": [("MONOCLINIC", "P"), ("MONOCLINIC", "C")],
    "triclinic": [("TRICLINIC", "P")],
}
_SYSTEM_NAME = {
    "CUBIC": "cubic",
    "HEXAGONAL": "hexagonal",
    "RHOMBOEDRAL": "trigonal",
    "TETRAGONAL": "tetragonal",
    "ORTHOROMBIC": "orthorhombic",
    "MONOCLINIC": "monoclinic",
    "TRICLINIC": "triclinic",
}
# space groups with an R lattice
_R_NUMBERS = (146, 148, 155, 160, 161, 166, 167)
# relative σ(d) taken for peaks given as bare d-spacings
_BARE_SIGMA = 2e-4
# longest-edge factors of the DicVol grids tried per search
_GRIDS = (1.0, 1.25)
_CHEAP = ("CUBIC", "TETRAGONAL", "HEXAGONAL", "RHOMBOEDRAL")
# run time of a wide P search (see _search) over the plain P search
_WIDE_COST = 35.0
# symmetry rank for ties between descriptions of one lattice
_RANK = {
    "cubic": 6,
    "hexagonal": 5,
    "trigonal": 4,
    "tetragonal": 3,
    "orthorhombic": 2,
    "monoclinic": 1,
    "triclinic": 0,
}
# centrings each system may be relabelled to from its absences
_CENTRINGS = {
    "cubic": ("P", "I", "F"),
    "hexagonal": ("P", "R"),
    "trigonal": ("R",),
    "tetragonal": ("P", "I"),
    "orthorhombic": ("P", "A", "B", "C", "I", "F"),
    "monoclinic": ("P", "A", "C", "I"),
    "triclinic": ("P",),
}
# rows: primitive basis vectors in units of the conventional ones
_TO_PRIMITIVE = {
    "P": np.eye(3),
    "I": np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]]),
    "F": np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]),
    "C": np.array([[0.5, 0.5, 0], [-0.5, 0.5, 0], [0, 0, 1.0]]),
    "A": np.array([[1.0, 0, 0], [0, 0.5, 0.5], [0, -0.5, 0.5]]),
    "B": np.array([[0.5, 0, 0.5], [0, 1.0, 0], [-0.5, 0, 0.5]]),
    "R": np.array(
        [[2, 1, 1], [-1, 1, 1], [-1, -2, 1]],
        dtype=float,
    )
    / 3.0,
}


# ------------------------------------------------------------------ errors
class IndexingError(MLSolveError, ValueError):
    """A pattern that cannot be indexed (no cell indexes its peaks), or an
    indexing setting that makes no sense."""


class TooFewPeaksError(IndexingError):
    """Fewer peaks than indexing needs."""


# ------------------------------------------------------------------- peaks
@dataclass(frozen=True, eq=False)
class PatternPeaks:
    """Peak positions found in a pattern, largest d (lowest angle) first.

    Attributes
    ----------
    d : ndarray
        d-spacings (Å), decreasing.
    d_sigma : ndarray
        Standard uncertainty of each d (Å).
    intensity : ndarray
        Peak height above the background (the pattern's units).
    position : ndarray
        Peak positions on the pattern's own axis (``xtype`` units).
    xtype : str
        "tth", "q" or "d": the axis ``position`` is on.
    fwhm : float
        Typical full width at half maximum of the strongest peaks, in
        ``xtype`` units (for "d": at the strongest peak).
    noise : float
        Point noise σ of the pattern (intensity units) used for the
        thresholds.
    """

    d: np.ndarray
    d_sigma: np.ndarray
    intensity: np.ndarray
    position: np.ndarray
    xtype: str = "tth"
    fwhm: float = math.nan
    noise: float = math.nan

    def __len__(self) -> int:
        return int(self.d.size)

    def first(self, n: int) -> PatternPeaks:
        """The ``n`` peaks of largest d."""
        n = int(n)
        return PatternPeaks(
            self.d[:n],
            self.d_sigma[:n],
            self.intensity[:n],
            self.position[:n],
            self.xtype,
            self.fwhm,
            self.noise,
        )


def _ro(values) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _odd(n: float, least: int = 3) -> int:
    n = max(int(round(n)), least)
    return n if n % 2 else n + 1


def _point_noise(y: np.ndarray) -> float:
    """Robust point noise σ from second differences (var 6σ²)."""
    d2 = y[:-2] - 2.0 * y[1:-1] + y[2:]
    mad = np.median(np.abs(d2 - np.median(d2)))
    return float(1.4826 * mad / math.sqrt(6.0))


def _width_points(y: np.ndarray, noise: float) -> float:
    """Median FWHM (points) of the strongest peaks of ``y``."""
    from scipy.signal import find_peaks, peak_widths

    ys = np.convolve(y, np.ones(3) / 3.0, mode="same")
    idx, prop = find_peaks(ys, prominence=max(20.0 * noise, 1e-12))
    if idx.size == 0:
        return 3.0
    top = idx[np.argsort(prop["prominences"])[::-1][:7]]
    widths = peak_widths(ys, top, rel_height=0.5)[0]
    return float(max(np.median(widths), 1.0))


def _tth_wavelength(pattern, wavelength):
    lam = wavelength if wavelength is not None else pattern.wavelength
    if lam is None:
        raise WavelengthError(
            f"{_name(pattern)} is on 2θ and has no wavelength, so its peak "
            "positions cannot be turned into d-spacings. Please pass "
            "wavelength=1.5406 (Å) or wavelength='CuKa1', or load the "
            "pattern with its wavelength."
        )
    from diffpy_mlsolve.radiation import resolve_radiation

    return resolve_radiation(lam).wavelength


def _working_axis(pattern):
    """x, y and axis ("tth" or "q") to find peaks on, nearly uniform.

    A d pattern is put on Q (d steps grow as d², which would squeeze the
    low-angle peaks into a few points); a Q pattern whose steps vary more
    than twofold is interpolated onto a uniform Q grid.
    """
    x = np.asarray(pattern.x, dtype=float)
    y = np.asarray(pattern.intensity, dtype=float)
    if pattern.xtype == "tth":
        return x, y, "tth"
    if pattern.xtype == "d":
        x, y = (2 * math.pi / x)[::-1], y[::-1]
    step = np.diff(x)
    lo, hi = np.percentile(step, [10, 90])
    if hi > 2.0 * lo:
        n = int(min((x[-1] - x[0]) / np.median(step), 20000)) + 1
        grid = np.linspace(x[0], x[-1], max(n, x.size))
        x, y = grid, np.interp(grid, x, y)
    return x, y, "q"


def _background(x, y, method):
    from diffpy_mlsolve.background import (
        chebyshev_background_fit,
        snip_background,
    )

    if method == "chebyshev":
        return chebyshev_background_fit(x, y)
    if method == "snip":
        return snip_background(x, y)
    raise PatternFormatError(
        f"Unknown background method {method!r}. Please use 'chebyshev', "
        "'snip' or None."
    )


def _doublet(pattern, wavelength, kalpha2):
    """(λ2, I2/I1) of a Kα doublet to strip, or None."""
    if kalpha2 is False or kalpha2 is None:
        return None
    if kalpha2 != "auto":
        lam2, ratio = kalpha2
        return float(lam2), float(ratio)
    from diffpy_mlsolve.radiation import resolve_radiation

    meta = getattr(pattern, "metadata", {}) or {}
    for source in (wavelength, meta.get("source_name")):
        if source is None or isinstance(source, (int, float)):
            continue
        try:
            rad = resolve_radiation(source)
        except WavelengthError:
            continue
        if rad.wavelength2 is not None and rad.ratio > 0:
            return rad.wavelength2, rad.ratio
    if meta.get("wavelength2") and meta.get("kalpha2_ratio"):
        return float(meta["wavelength2"]), float(meta["kalpha2_ratio"])
    return None


def _strip_kalpha2(x, y, lam1, lam2, ratio):
    """Remove the Kα2 share of a 2θ profile (Rachinger 1948).

    Kα2 repeats the Kα1 profile, scaled by ``ratio``, at the angle where
    sin θ2 = (λ2/λ1) sin θ1 (δ ≈ 2 tan θ (λ2 - λ1)/λ1 higher), so from
    low to high angle I1(2θ) = I(2θ) - ratio · I1(2θ - δ).
    """
    s = np.clip(np.sin(np.radians(x) / 2.0) * lam1 / lam2, -1.0, 1.0)
    src = np.degrees(2.0 * np.arcsin(s))  # Kα1 angle whose Kα2 lies at x
    j = np.searchsorted(x, src) - 1  # x[j] <= src < x[j + 1]
    out = np.array(y, dtype=float)
    for i in range(x.size):
        k = j[i]
        if k < 0:
            continue
        t = (src[i] - x[k]) / (x[k + 1] - x[k])
        out[i] -= ratio * ((1.0 - t) * out[k] + t * out[k + 1])
    return out


def _kalpha2_ghosts(pos, height, lam1, lam2, fwhm, share=0.04):
    """Peaks that are ripples of an imperfect Kα2 stripping.

    A Kα2 line slightly off in ratio or shape leaves ripples up to a few
    δ (the Kα1-Kα2 spacing) above a strong peak; a peak there weaker than
    ``share`` of it is dropped.
    """
    s = np.clip(np.sin(np.radians(pos) / 2.0) * lam2 / lam1, -1.0, 1.0)
    delta = np.degrees(2.0 * np.arcsin(s)) - pos
    above = pos[None, :] - pos[:, None]  # [i, j]: j above i
    near = (above > 0) & (above <= 4.0 * delta[:, None] + fwhm)
    weak = height[None, :] < share * height[:, None]
    return np.any(near & weak, axis=0)


def _name(pattern) -> str:
    src = getattr(pattern, "source", "")
    return f"Pattern '{src}'" if src else "The pattern"


def _to_d(pos, sig, xtype, lam):
    """d (Å) and σ_d of positions on a tth, q or d axis."""
    if xtype == "d":
        return pos, sig
    if xtype == "q":
        q = np.maximum(pos, 1e-12)
        return 2 * math.pi / q, 2 * math.pi * sig / q**2
    theta = np.radians(pos) / 2.0
    d = lam / (2.0 * np.sin(theta))
    return d, d / np.tan(theta) * np.radians(sig) / 2.0


def find_pattern_peaks(
    pattern,
    *,
    wavelength=None,
    background: str | None = "chebyshev",
    min_snr: float = 6.0,
    min_relative: float = 0.003,
    smooth: int | None = None,
    max_peaks: int | None = None,
    blend: float = 0.1,
    kalpha2="auto",
) -> PatternPeaks:
    """Peak positions of a measured powder pattern, as d-spacings.

    Parameters
    ----------
    pattern : Pattern
        A diffraction pattern on 2θ, Q or d (not a PDF).
    wavelength : float or str, optional
        Wavelength (Å or a source name) for a 2θ pattern that has none.
    background : "chebyshev", "snip" or None
        How to estimate the background that is subtracted first
        (:meth:`Pattern.estimate_background`); None for a pattern that has
        none.
    min_snr : float
        Least peak prominence, in units of the noise σ of the smoothed
        curve.
    min_relative : float
        Least peak height as a fraction of the strongest peak.
    smooth : int, optional
        Savitzky-Golay window (points); by default about 0.7 × the FWHM
        of the strongest peaks (no smoothing for peaks under 4 points).
    max_peaks : int, optional
        Keep only this many peaks of largest d.
    blend : float
        Least position uncertainty as a fraction of each peak's own FWHM:
        unresolved neighbours shift a maximum by a fair part of a width,
        and they also make the peak wider.
    kalpha2 : "auto", (float, float) or None
        A Kα2 line to strip from a 2θ profile first (Rachinger): its
        wavelength (Å) and intensity relative to Kα1.  "auto" takes it
        from a doublet source name ("CuKa" as ``wavelength`` or in the
        pattern's metadata, or ``metadata["wavelength2"]`` of a simulated
        pattern); None: no stripping.

    Returns
    -------
    PatternPeaks
        Largest d first.

    Raises
    ------
    PatternFormatError
        A PDF, or a pattern too short to hold peaks.
    WavelengthError
        A 2θ pattern without a wavelength.

    Notes
    -----
    1. Subtract the background and, for a Kα doublet on 2θ, the Kα2
       share of the profile; estimate the point noise σ from the median
       absolute second difference (robust to the peaks).
    2. Measure the FWHM (points) of the strongest peaks and smooth with a
       quadratic Savitzky-Golay filter of about 0.7 FWHM.
    3. Keep local maxima whose prominence exceeds ``min_snr`` times the
       smoothed noise and whose height exceeds ``min_relative`` of the
       strongest; drop maxima within one FWHM of the ends.
    4. Place each peak at the vertex of a parabola fitted to the smoothed
       curve over its top (±FWHM/4, at least ±1 point).  The position
       uncertainty is FWHM·σ/height, at least ``blend`` times the peak's
       own FWHM (overlap, shape); d and σ_d follow from Bragg's law
       (2θ), d = 2π/Q (Q) or directly (d).
    """
    from scipy.signal import find_peaks, peak_widths, savgol_filter

    xtype = getattr(pattern, "xtype", None)
    if xtype not in ("tth", "q", "d"):
        raise PatternFormatError(
            f"{_name(pattern)} has xtype {xtype!r}; peaks can be found only "
            "in a diffraction pattern on 2θ, Q or d."
        )
    lam = _tth_wavelength(pattern, wavelength) if xtype == "tth" else None
    if pattern.npoints < 20:
        raise PatternFormatError(
            f"{_name(pattern)} has {pattern.npoints} points; finding peaks "
            "needs a measured profile of at least 20 points."
        )
    x, y, axis = _working_axis(pattern)
    if background is not None:
        y = y - _background(x, y, background)
    doublet = _doublet(pattern, wavelength, kalpha2) if lam else None
    if doublet is not None:
        y = _strip_kalpha2(x, y, lam, *doublet)
    noise = _point_noise(y)
    width = _width_points(y, noise)
    window = _odd(0.7 * width, 5) if smooth is None else _odd(smooth, 1)
    if smooth is None and width < 4:
        window = 1
    if window >= 5 and window < y.size:
        ys = savgol_filter(y, window, 2)
        gain = math.sqrt(
            np.sum(savgol_filter(np.eye(window)[window // 2], window, 2) ** 2)
        )
    else:
        ys, gain = y, 1.0
    noise_s = max(noise * gain, 1e-12 * max(np.abs(y).max(), 1e-300))
    top = float(ys.max())
    idx, _ = find_peaks(
        ys,
        prominence=min_snr * noise_s,
        height=max(min_relative * top, min_snr * noise_s),
    )
    edge = max(int(math.ceil(width)), 2)
    idx = idx[(idx >= edge) & (idx < y.size - edge)]
    own = peak_widths(ys, idx, rel_height=0.5)[0] if idx.size else idx
    half = max(int(round(width / 4)), 1)
    pos, sig, height = [], [], []
    for i, w_i in zip(idx, own):
        lo, hi = max(i - half, 0), min(i + half + 1, y.size)
        t = np.arange(lo, hi) - i
        c2, c1, c0 = np.polyfit(t, ys[lo:hi], 2)
        off = -c1 / (2 * c2) if c2 < 0 else 0.0
        off = float(np.clip(off, -1.0, 1.0))
        j = int(np.clip(i + math.floor(off), 0, x.size - 2))
        frac = i + off - j
        pos.append(x[j] + frac * (x[j + 1] - x[j]))
        step = x[min(i + 1, x.size - 1)] - x[max(i - 1, 0)]
        step = step / 2.0
        h = max(float(ys[i]), noise_s)
        sig.append(
            max(width * step * noise / h, blend * max(w_i, width) * step)
        )
        height.append(float(ys[i]))
    pos, sig, height = np.array(pos), np.array(sig), np.array(height)
    if doublet is not None and pos.size:
        fwhm_x = width * float(np.median(np.diff(x)))
        keep = ~_kalpha2_ghosts(pos, height, lam, doublet[0], fwhm_x)
        pos, sig, height = pos[keep], sig[keep], height[keep]
    d, d_sig = _to_d(pos, sig, axis, lam)
    if xtype == "d":
        pos = d
    order = np.argsort(d)[::-1]
    if max_peaks is not None:
        order = order[: int(max_peaks)]
    fwhm = width * float(np.median(np.diff(x)))
    if xtype == "d":  # in Å at the strongest peak
        fwhm = 2 * math.pi * fwhm / float(x[int(np.argmax(ys))]) ** 2
    return PatternPeaks(
        _ro(d[order]),
        _ro(d_sig[order]),
        _ro(height[order]),
        _ro(pos[order]),
        xtype,
        float(fwhm),
        float(noise),
    )


# ------------------------------------------------------------- candidates
@dataclass(frozen=True)
class CellCandidate:
    """One unit cell that indexes the peaks.

    Attributes
    ----------
    lattice : tuple of 6 float
        a, b, c (Å) and α, β, γ (degrees) of the conventional cell
        (rhombohedral lattices on hexagonal axes, obverse setting).
    crystal_system : str
        The lattice's system: "cubic", "hexagonal", "trigonal" (an R
        lattice; a trigonal P crystal has a "hexagonal" lattice),
        "tetragonal", "orthorhombic", "monoclinic" or "triclinic".
    centring : str
        "P", "I", "F", "A", "B", "C" or "R", from the systematic absences
        of the indexed peaks.
    score : float
        ObjCryst's figure of merit of its solution (its own scale; higher
        is better).
    figure_of_merit : float
        de Wolff's M(N) = Q_N / (2 <|ΔQ|> N_calc) (Q = 1/d²) over the
        N peaks used, N_calc counting distinct calculated lines the
        centring allows; peaks left unindexed count with the largest
        allowed |ΔQ|.  Candidates are ranked by it.  Above about 10 a cell
        is usually right, above 20 almost certainly.
    n_indexed : int
        Peaks (of ``n_peaks``) within tolerance of a calculated line.
    n_peaks : int
        Peaks used for indexing.
    volume : float
        Volume of the conventional cell (Å^3).
    spacegroups : tuple of (str, float)
        When space groups were scored (:func:`score_spacegroups`):
        Hermann-Mauguin symbols with ObjCryst's normalised goodness of fit
        of a Le Bail fit (lower is better), best first.  Empty otherwise.
    """

    lattice: tuple
    crystal_system: str
    centring: str
    score: float
    figure_of_merit: float
    n_indexed: int
    n_peaks: int
    volume: float
    spacegroups: tuple = field(default=(), compare=False)

    @property
    def bravais(self) -> str:
        """Pearson-style Bravais symbol, e.g. "cF", "hR", "oC"."""
        letter = {
            "cubic": "c",
            "hexagonal": "h",
            "trigonal": "h",
            "tetragonal": "t",
            "orthorhombic": "o",
            "monoclinic": "m",
            "triclinic": "a",
        }[self.crystal_system]
        return letter + self.centring

    def __str__(self) -> str:
        a, b, c, al, be, ga = self.lattice
        return (
            f"{self.crystal_system} {self.centring}: a={a:.4f} b={b:.4f} "
            f"c={c:.4f} α={al:.2f} β={be:.2f} γ={ga:.2f} "
            f"V={self.volume:.2f} M={self.figure_of_merit:.1f} "
            f"({self.n_indexed}/{self.n_peaks} indexed)"
        )


def _matrix(lattice) -> np.ndarray:
    """Rows a, b, c (Å) of a cell given as (a, b, c, α, β, γ)."""
    a, b, c = lattice[:3]
    al, be, ga = np.radians(lattice[3:6])
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cz = math.sqrt(max(c * c - cx * cx - cy * cy, 1e-12))
    return np.array(
        [
            [a, 0.0, 0.0],
            [b * math.cos(ga), b * math.sin(ga), 0.0],
            [cx, cy, cz],
        ]
    )


def _params(m: np.ndarray) -> tuple:
    lengths = np.linalg.norm(m, axis=1)
    a, b, c = lengths

    def ang(u, v, lu, lv):
        return math.degrees(math.acos(np.clip(u @ v / (lu * lv), -1, 1)))

    return (
        float(a),
        float(b),
        float(c),
        ang(m[1], m[2], b, c),
        ang(m[0], m[2], a, c),
        ang(m[0], m[1], a, b),
    )


def _volume(lattice) -> float:
    return float(abs(np.linalg.det(_matrix(lattice))))


def _allowed(hkl: np.ndarray, centring: str) -> np.ndarray:
    h, k, l_ = hkl.T
    if centring == "P":
        return np.ones(len(hkl), dtype=bool)
    if centring == "I":
        return (h + k + l_) % 2 == 0
    if centring == "F":
        return ((h + k) % 2 == 0) & ((k + l_) % 2 == 0)
    if centring == "C":
        return (h + k) % 2 == 0
    if centring == "A":
        return (k + l_) % 2 == 0
    if centring == "B":
        return (h + l_) % 2 == 0
    if centring == "R":
        return (-h + k + l_) % 3 == 0
    raise ValueError(f"unknown centring {centring!r}")


def _lines(lattice, centring: str, qmax: float):
    """Sorted Q = 1/d² of the reflections ≤ qmax and their hkl."""
    m = _matrix(lattice)
    gstar = np.linalg.inv(m @ m.T)
    lengths = np.linalg.norm(m, axis=1)
    top = np.floor(lengths * math.sqrt(qmax) + 1e-9).astype(int)
    hh, kk, ll = np.meshgrid(
        np.arange(-top[0], top[0] + 1),
        np.arange(-top[1], top[1] + 1),
        np.arange(-top[2], top[2] + 1),
        indexing="ij",
    )
    hkl = np.stack([hh.ravel(), kk.ravel(), ll.ravel()], 1)
    hkl = hkl[np.any(hkl != 0, axis=1) & _allowed(hkl, centring)]
    q = np.einsum("ij,jk,ik->i", hkl, gstar, hkl)
    keep = q <= qmax
    q, hkl = q[keep], hkl[keep]
    order = np.argsort(q)
    return q[order], hkl[order]


def _distinct(q: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    if q.size == 0:
        return q
    gap = np.diff(q) > rel * q[1:]
    return q[np.concatenate([[True], gap])]


def _nearest(lattice, centring, q_obs, q_tol):
    """Nearest allowed line of each peak: (q_calc, hkl, all lines ≤ Q_N)."""
    qn = float(q_obs.max())
    q_all, hkl = _lines(lattice, centring, qn + float(q_tol.max()))
    if q_all.size == 0:
        return None
    j = np.clip(np.searchsorted(q_all, q_obs), 1, max(q_all.size - 1, 1))
    if q_all.size == 1:
        j = np.zeros_like(j)
    else:
        lower = np.abs(q_all[j - 1] - q_obs) <= np.abs(q_all[j] - q_obs)
        j = np.where(lower, j - 1, j)
    return q_all[j], hkl[j], q_all[q_all <= qn]


def _fom(lattice, centring, q_obs, q_tol):
    """de Wolff M(N) and the number of peaks indexed.

    Each |ΔQ| counts at least one σ (q_tol / 3 for the default
    tolerance), so that M(N) ranks by how few lines a cell needs rather
    than by noise in ΔQ; an unindexed peak counts as q_tol.
    """
    near = _nearest(lattice, centring, q_obs, q_tol)
    if near is None:
        return 0.0, 0
    q_calc, _, q_all = near
    qn = float(q_obs.max())
    diff = np.abs(q_calc - q_obs)
    ok = diff <= q_tol
    eps = np.where(ok, np.maximum(diff, q_tol / 3.0), q_tol)
    n_calc = max(_distinct(q_all).size, 1)
    mean = max(float(eps.mean()), 1e-12 * qn)
    return qn / (2.0 * mean * n_calc), int(ok.sum())


def _design(hkl: np.ndarray, system: str) -> np.ndarray:
    """Columns whose coefficients make Q = 1/d² (reciprocal metric)."""
    h, k, l_ = hkl.T.astype(float)
    if system == "cubic":
        return np.stack([h * h + k * k + l_ * l_], 1)
    if system == "tetragonal":
        return np.stack([h * h + k * k, l_ * l_], 1)
    if system in ("hexagonal", "trigonal"):
        return np.stack([h * h + k * k + h * k, l_ * l_], 1)
    if system == "orthorhombic":
        return np.stack([h * h, k * k, l_ * l_], 1)
    if system == "monoclinic":
        return np.stack([h * h, k * k, l_ * l_, h * l_], 1)
    return np.stack([h * h, k * k, l_ * l_, k * l_, h * l_, h * k], 1)


def _gstar(coef: np.ndarray, system: str) -> np.ndarray:
    if system == "cubic":
        return coef[0] * np.eye(3)
    if system == "tetragonal":
        return np.diag([coef[0], coef[0], coef[1]])
    if system in ("hexagonal", "trigonal"):
        a = coef[0]
        return np.array([[a, a / 2, 0], [a / 2, a, 0], [0, 0, coef[1]]])
    if system == "orthorhombic":
        return np.diag(coef)
    if system == "monoclinic":
        a, b, c, d = coef
        return np.array([[a, 0, d / 2], [0, b, 0], [d / 2, 0, c]])
    a, b, c, d, e, f = coef
    return np.array([[a, f / 2, e / 2], [f / 2, b, d / 2], [e / 2, d / 2, c]])


def _cell_of_gstar(gstar: np.ndarray):
    g = np.linalg.inv(gstar)
    if np.any(np.diag(g) <= 0):
        return None
    a, b, c = np.sqrt(np.diag(g))

    def ang(x):
        return math.degrees(math.acos(float(np.clip(x, -1, 1))))

    return (
        float(a),
        float(b),
        float(c),
        ang(g[1, 2] / (b * c)),
        ang(g[0, 2] / (a * c)),
        ang(g[0, 1] / (a * b)),
    )


def _refine(lattice, centring, system, q_obs, q_tol, widen=(4, 2, 1, 1)):
    """Least-squares cell from the indexed peaks (weights 1/q_tol).

    The first cycles accept peaks ``widen`` times further away, so that a
    rough cell from the search still pulls in all its peaks.
    """
    best = lattice
    for factor in widen:
        near = _nearest(best, centring, q_obs, factor * q_tol)
        if near is None:
            break
        q_calc, hkl, _ = near
        ok = np.abs(q_calc - q_obs) <= factor * q_tol
        a = _design(hkl[ok], system)
        if ok.sum() <= a.shape[1]:
            break
        w = 1.0 / q_tol[ok]
        coef, _, rank, _ = np.linalg.lstsq(
            a * w[:, None], q_obs[ok] * w, rcond=None
        )
        if rank < a.shape[1]:
            break
        try:
            cell = _cell_of_gstar(_gstar(coef, system))
        except (np.linalg.LinAlgError, ValueError):
            break
        if cell is None:
            break
        best = cell
    return best


# ------------------------------------------------------------ conversions
def _rhombohedral_to_hexagonal(lattice) -> tuple:
    a, alpha = lattice[0], math.radians(lattice[3])
    ah = 2.0 * a * math.sin(alpha / 2.0)
    ch = a * math.sqrt(3.0 * (1.0 + 2.0 * math.cos(alpha)))
    return (ah, ah, ch, 90.0, 90.0, 120.0)


# bases (rows, in old axes) that turn an A, B or I cell into a C cell
_TO_C = {
    ("orthorhombic", "A"): [np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])],
    ("orthorhombic", "B"): [np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]])],
    ("monoclinic", "A"): [np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]])],
    ("monoclinic", "I"): [
        np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1]]),
        np.array([[1, 0, 1], [0, 1, 0], [-1, 0, 0]]),
        np.array([[1, 0, -1], [0, 1, 0], [0, 0, 1]]),
        np.array([[1, 0, -1], [0, 1, 0], [1, 0, 0]]),
    ],
}


def _standard_setting(cell, system, centring):
    """C rather than A/B/I settings, reduced monoclinic cells with β >= 90°
    and Niggli-reduced triclinic cells."""
    options = _TO_C.get((system, centring))
    if options:
        m = _matrix(cell)
        cells = [_params(t.astype(float) @ m) for t in options]
        cell = min(cells, key=lambda p: abs(p[4] - 90.0))
        centring = "C"
    if system == "monoclinic":
        cell = _reduce_monoclinic(cell, centring)
        if cell[4] < 90.0:
            cell = (*cell[:4], 180.0 - cell[4], cell[5])
    if system == "triclinic":  # the Niggli-reduced cell
        from pymatgen.core import Lattice

        red = Lattice(_matrix(cell)).get_niggli_reduced_lattice()
        cell = (*red.abc, *red.angles)
    return tuple(float(v) for v in cell), centring


def _reduce_monoclinic(cell, centring):
    """Shortest a and c in the a-c plane (b unique) for a P or C cell.

    c may take any multiple of a; a only even multiples of c in a C cell
    (odd ones would move the centring to I).
    """
    m = _matrix(cell)
    a, b, c = m[0], m[1], m[2]
    step_a = 2 if centring == "C" else 1
    for _ in range(50):
        n = round(float(a @ c) / float(a @ a))
        if n:
            c = c - n * a
        k = step_a * round(float(a @ c) / (step_a * float(c @ c)))
        if k:
            a = a - k * c
        if not n and not k:
            break
    return _params(np.array([a, b, c]))


def _primitive(lattice, centring) -> np.ndarray:
    return _TO_PRIMITIVE[centring] @ _matrix(lattice)


def _same_lattice(m1, m2, ltol=0.005, atol=0.5) -> bool:
    """Whether two primitive bases span the same lattice (within tol)."""
    from pymatgen.core import Lattice

    v1, v2 = abs(np.linalg.det(m1)), abs(np.linalg.det(m2))
    if abs(v1 - v2) > 3 * ltol * max(v1, v2):
        return False
    l1 = Lattice(m1).get_niggli_reduced_lattice()
    l2 = Lattice(m2).get_niggli_reduced_lattice()
    return l1.find_mapping(l2, ltol=ltol, atol=atol) is not None


# --------------------------------------------------------------- indexing
def _peaks_of(pattern, peaks, wavelength, n_peaks):
    if peaks is None:
        if pattern is None:
            raise PatternFormatError(
                "index_pattern needs a pattern or a peak list (peaks=...)."
            )
        peaks = find_pattern_peaks(pattern, wavelength=wavelength)
    if isinstance(peaks, PatternPeaks):
        d, sig, inten = peaks.d, peaks.d_sigma, peaks.intensity
    else:
        d = np.sort(np.asarray(peaks, dtype=float).ravel())[::-1]
        if d.size and not np.all(np.isfinite(d) & (d > 0)):
            raise PatternFormatError(
                "peaks must be d-spacings in Å: finite and positive."
            )
        sig, inten = _BARE_SIGMA * d, np.ones(d.size)
    n = min(int(n_peaks), d.size)
    return d[:n], sig[:n], inten[:n], d.size


def _check_count(n_found, n_used, pattern):
    need = MIN_PEAKS
    if n_used < need:
        where = _name(pattern) if pattern is not None else "The peak list"
        raise TooFewPeaksError(
            f"{where} has {n_found} peak(s) that stand out of the noise; "
            f"indexing needs at least {need} (20 is usual). Please measure "
            "a wider 2θ range or longer, or lower min_snr in "
            "find_pattern_peaks()."
        )


def _objcryst_solutions(
    d, d_tol, inten, csys, cent, nb_spurious, opts, scale=1.0, volume_from=()
):
    """Run ObjCryst's DicVol for one system and centring.

    ``scale`` stretches the longest cell edge searched: DicVol's boxes
    start from the length limits, and a cell missed (or found only
    roughly) on one grid may be found on another.  The volume range is
    ObjCryst's estimate for the centring, or the widest of those for the
    centrings ``volume_from``.
    """
    import pyobjcryst.indexing as ix

    lines = "".join(
        f"{di:.7f} {si:.7f} {ii:.6g}\n" for di, si, ii in zip(d, d_tol, inten)
    )
    pl = ix.PeakList()
    pl.ImportDhklDSigmaIntensity(io.BytesIO(lines.encode()))
    system = getattr(ix.CrystalSystem, csys)
    centring = getattr(ix.CrystalCentering, f"LATTICE_{cent}")
    pks = pl.GetPeakList()
    dstar_max, dstar_min = pks[-1].dobs, pks[0].dobs / 10.0
    n = len(pks)
    vmin, vmax = math.inf, 0.0
    for c in volume_from or (cent,):
        cc = getattr(ix.CrystalCentering, f"LATTICE_{c}")
        lo, hi = (  # ObjCryst's bounds, as in its quick_index()
            ix.EstimateCellVolume(dstar_max, dstar_min, n, system, cc, k)
            for k in (1.5, 0.3)
        )
        vmin, vmax = min(vmin, lo), max(vmax, hi)
    if opts["max_volume"] is not None:
        vmax = min(vmax, float(opts["max_volume"]))
        vmin = min(vmin, vmax / 2.0)
    lmax = opts["max_length"] or max(
        25.0, 3.0 * vmax ** (1 / 3.0), 4.0 / pks[0].dobs
    )
    ex = ix.CellExplorer(pl, system, int(nb_spurious))
    ex.SetCrystalCentering(centring)
    ex.SetVolumeMinMax(vmin, vmax)
    ex.SetLengthMinMax(opts["min_length"], scale * lmax)
    ex.SetAngleMinMax(math.radians(90), math.radians(opts["max_angle"]))
    ex.SetD2Error(0)
    ex.DicVol(10, 4, opts["stop_score"], 6, verbose=False)
    out = []
    for ruc, score in ex.GetSolutions():
        cell = ruc.DirectUnitCell(False, True)
        out.append((tuple(float(v) for v in cell[:6]), float(score)))
    return out


def _candidate(cell, score, csys, cent, q_obs, q_tol, n):
    """A CellCandidate from one ObjCryst solution.

    The centring that indexes most peaks with the best M(N) wins (P cells
    may become I, F, C, R ...; a centred solution may fall back to P), the
    cell is refined on its indexed peaks and put in standard setting.
    """
    system = _SYSTEM_NAME[csys]
    if csys == "RHOMBOEDRAL":
        cell, cent = _rhombohedral_to_hexagonal(cell), "R"
    best = None
    for c in _CENTRINGS[system]:
        if c != cent and c != "P" and cent != "P":
            continue  # relabel only P cells (or keep ObjCryst's centring)
        fom, n_ok = _fom(cell, c, q_obs, q_tol)
        key = (n_ok, fom)
        if best is None or key > best[0]:
            best = (key, c, fom, n_ok)
    _, c, fom, n_ok = best
    if system == "hexagonal" and c == "R":
        system = "trigonal"
    if system == "trigonal" and c == "P":
        system = "hexagonal"
    refined = _refine(cell, c, system, q_obs, q_tol)
    fom_r, n_r = _fom(refined, c, q_obs, q_tol)
    if (n_r, fom_r) >= (n_ok, fom):
        cell, fom, n_ok = refined, fom_r, n_r
    cell, c = _standard_setting(cell, system, c)
    return CellCandidate(
        lattice=tuple(round(v, 6) for v in cell),
        crystal_system=system,
        centring=c,
        score=score,
        figure_of_merit=float(fom),
        n_indexed=n_ok,
        n_peaks=n,
        volume=_volume(cell),
    )


def _merge(cands):
    """Keep the best description of each lattice (ranked input)."""
    kept, prims = [], []
    for cand in cands:
        prim = _primitive(cand.lattice, cand.centring)
        same = [i for i, p in enumerate(prims) if _same_lattice(p, prim)]
        if not same:
            kept.append(cand)
            prims.append(prim)
            continue
        i = same[0]
        old = kept[i]
        better = cand.figure_of_merit > 1.05 * old.figure_of_merit or (
            cand.figure_of_merit > 0.95 * old.figure_of_merit
            and _RANK[cand.crystal_system] > _RANK[old.crystal_system]
        )
        if better:
            kept[i], prims[i] = cand, prim
    return kept


def _search(name, peaks, spurious, opts, done, wide=False):
    """Candidates from ObjCryst's searches for one crystal system.

    The cheap (1-2 parameter) searches run on two length grids, the
    others once per centring.  ``wide``: instead, one P search of a
    3-6 parameter system on the second grid over the volume range of its
    P and C centrings (a P search finds centred cells too; they are
    relabelled from their absences); it takes some 30 times the plain P
    search, so it is left out when that would overrun the time limit.
    No search starts after the time limit.
    """
    d, d_tol, inten, q_obs, q_tol = peaks
    out = []
    clock = opts["clock"]

    def run(csys, cent, scale, volume_from=()):
        t = time.perf_counter()
        sols = _objcryst_solutions(
            d, d_tol, inten, csys, cent, spurious, opts, scale, volume_from
        )
        clock[(csys, cent, spurious)] = time.perf_counter() - t
        out.extend(
            _candidate(cell, sc, csys, cent, q_obs, q_tol, d.size)
            for cell, sc in sols
        )

    def left():
        if opts["time_limit"] is None:
            return math.inf
        return opts["time_limit"] - (time.perf_counter() - opts["t0"])

    if wide:
        csys = _SEARCH[name][0][0]
        key = ("wide", csys, spurious)
        cost = _WIDE_COST * clock.get((csys, "P", spurious), math.inf)
        if csys not in _CHEAP and key not in done and cost < left():
            done.add(key)
            cents = [c for _, c in _SEARCH[name] if c in ("P", "C")]
            run(csys, "P", _GRIDS[-1], cents)
        return out
    for csys, cent in _SEARCH[name]:
        if (csys, cent, spurious) in done:
            continue
        done.add((csys, cent, spurious))
        for scale in _GRIDS if csys in _CHEAP else _GRIDS[:1]:
            if left() > 0:
                run(csys, cent, scale)
    return out


def _stop(cands, n, stop_fom, t0, time_limit) -> bool:
    if time_limit is not None and time.perf_counter() - t0 > time_limit:
        return True
    return stop_fom is not None and any(
        c.n_indexed == n and c.figure_of_merit >= stop_fom for c in cands
    )


def _rank_key(cand):
    return (-cand.n_indexed, -cand.figure_of_merit)


def index_pattern(
    pattern=None,
    *,
    wavelength=None,
    systems=None,
    max_volume: float | None = None,
    n_best: int = 5,
    n_peaks: int = 20,
    peaks=None,
    max_spurious: int = 1,
    tolerance: float = 3.0,
    min_error: float = 1e-4,
    min_length: float = 2.0,
    max_length: float | None = None,
    max_angle: float = 140.0,
    stop_score: float | None = None,
    stop_fom: float | None = 50.0,
    spacegroups: int = 0,
    time_limit: float | None = 60.0,
) -> list[CellCandidate]:
    """Unit cells that index a powder pattern, best first.

    Parameters
    ----------
    pattern : Pattern, optional
        The measured pattern (2θ, Q or d).  Peaks are found with
        :func:`find_pattern_peaks` unless ``peaks`` is given.
    wavelength : float or str, optional
        Wavelength (Å or a source name) for a 2θ pattern that has none.
        Patterns on Q or d need none.
    systems : iterable of str, optional
        Crystal systems to search (see :data:`SYSTEMS`); default all but
        triclinic (slow).  "trigonal" searches rhombohedral and hexagonal
        P lattices; R lattices are also found from hexagonal cells.
    max_volume : float, optional
        Largest conventional cell volume to search (Å^3); default from
        the peak density (ObjCryst's ``EstimateCellVolume``).
    n_best : int
        How many candidates to return at most.
    n_peaks : int
        Peaks of largest d used (20 is the classical choice).
    peaks : PatternPeaks or array of d (Å), optional
        A peak list to index instead of finding peaks in ``pattern``;
        bare d-spacings are taken to ±0.02 % (1σ).
    max_spurious : int
        When no cell indexes every peak, try again allowing up to this
        many unindexed (spurious) peaks.
    tolerance : float
        Half-width of the window a calculated line must fall into, in σ of
        the peak positions.
    min_error : float
        Least relative d error (Δd/d) assumed for any peak (zero-point and
        shape errors that the noise σ misses).
    min_length, max_length : float
        Cell edge limits for the search (Å); ``max_length`` defaults to
        max(25, 3 V_max^(1/3), 4 d_1), d_1 the largest d observed.
    max_angle : float
        Largest monoclinic/triclinic angle searched (degrees).
    stop_score : float, optional
        Let ObjCryst stop a search once a solution scores this much (its
        scale).  Default None: search the whole volume and angle range;
        a stop can miss the true cell, e.g. a monoclinic cell with a
        large β after a β ≈ 90° supercell scored well.
    stop_fom : float or None
        Search no system of lower symmetry once a cell indexes every peak
        with M(N) at least this (None: search all ``systems``).
    spacegroups : int
        Rank the space groups of this many best cells with
        :func:`score_spacegroups` (Le Bail fits, a few s per cell; needs
        the profile, so ``pattern``).  0 (default): centring only.
    time_limit : float or None
        Seconds after which no further ObjCryst search starts (one that
        runs is not stopped).  Searches that add little but can take
        minutes (the wide monoclinic/orthorhombic search on messy data)
        are skipped when they would not fit.  None: no limit.

    Returns
    -------
    list of CellCandidate
        At most ``n_best``, ranked by peaks indexed and then de Wolff's
        M(N); one entry per distinct lattice, described in its highest
        symmetry that fits as well.

    Raises
    ------
    TooFewPeaksError
        Fewer than :data:`MIN_PEAKS` peaks.
    WavelengthError
        A 2θ pattern without a wavelength.
    IndexingError
        No cell indexes the peaks, or an unknown crystal system.
    MissingBackendError
        pyobjcryst is not installed.

    Notes
    -----
    ObjCryst's own score grows with the free parameters (a monoclinic
    description of a cubic lattice scores higher), so the ranking uses
    de Wolff's M(N), which counts only distinct lines, and a lattice found
    in several systems is reported once, in the most symmetric system
    whose M(N) is within 5 % of the best.  Space groups come only from
    ``spacegroups > 0``; otherwise only the lattice centring, from the
    absences, is reported.
    """
    try:
        import pyobjcryst.indexing  # noqa: F401
    except ImportError as err:
        raise MissingBackendError(
            "Indexing needs pyobjcryst (ObjCryst++). Please install it: "
            "conda install -c conda-forge pyobjcryst, or pip install "
            "pyobjcryst."
        ) from err
    t0 = time.perf_counter()
    d, sig, inten, n_found = _peaks_of(pattern, peaks, wavelength, n_peaks)
    _check_count(n_found, d.size, pattern)
    d_err = np.maximum(tolerance * sig, min_error * d)
    q_obs = 1.0 / d**2
    q_tol = 2.0 * d_err / d**3
    names = _systems(systems)
    opts = {
        "max_volume": max_volume,
        "min_length": float(min_length),
        "max_length": max_length,
        "max_angle": float(max_angle),
        "stop_score": 1e30 if stop_score is None else float(stop_score),
        "time_limit": time_limit,
        "t0": t0,
        "clock": {},
    }
    cands, done = [], set()
    peaks_ = (d, 2.0 * d_err, inten, q_obs, q_tol)
    for spurious in range(0, max(int(max_spurious), 0) + 1):
        for wide in (False, True):
            for name in names:
                if _stop(cands, d.size, stop_fom, t0, time_limit) or (
                    wide and any(c.n_indexed == d.size for c in cands)
                ):
                    break
                cands.extend(_search(name, peaks_, spurious, opts, done, wide))
        if any(c.n_indexed == d.size for c in cands):
            break
    if not cands:
        raise IndexingError(
            f"No cell in {', '.join(names)} indexes the {d.size} peaks "
            f"(d = {d[0]:.4g}..{d[-1]:.4g} Å). Please check for impurity "
            "peaks, a zero shift or a Kα2 doublet, allow more spurious "
            "peaks (max_spurious), a larger max_volume, or add 'triclinic' "
            "to systems."
        )
    cands.sort(key=_rank_key)
    best = _merge(cands)
    best.sort(key=_rank_key)
    best = best[: max(int(n_best), 1)]
    if spacegroups and pattern is not None:
        best = [
            (
                replace(
                    c,
                    spacegroups=score_spacegroups(
                        pattern, c, wavelength=wavelength
                    ),
                )
                if i < int(spacegroups)
                else c
            )
            for i, c in enumerate(best)
        ]
    return best


def _systems(systems) -> list[str]:
    if systems is None:
        return list(_DEFAULT_SYSTEMS)
    if isinstance(systems, str):
        systems = [systems]
    out = []
    for s in systems:
        key = str(s).strip().lower()
        key = {"rhombohedral": "trigonal", "orthorombic": "orthorhombic"}.get(
            key, key
        )
        if key not in SYSTEMS:
            raise IndexingError(
                f"Unknown crystal system {s!r}. Please use some of: "
                f"{', '.join(SYSTEMS)}."
            )
        if key not in out:
            out.append(key)
    return out


# ------------------------------------------------------------ space groups
def score_spacegroups(
    pattern,
    cell,
    *,
    wavelength=None,
    n_groups: int = 10,
    match_cell: bool = True,
) -> tuple:
    """Space groups of a cell ranked by Le Bail fits (ObjCryst++).

    The pattern is fitted in P1 with the cell (ObjCryst's
    ``quick_fit_profile``: background, zero, cell, widths), then
    ``SpaceGroupExplorer.RunAll`` refits the extracted intensities for
    every space group the cell's metric allows and scores each by its
    normalised goodness of fit (nGoF, lower is better; it rewards groups
    that explain absent reflections).  Groups with the same absences tie.
    About 2-6 s per cell for cubic to orthorhombic metrics.  A Kα2 line
    (see :func:`find_pattern_peaks`) is stripped first.

    Treat the ranking as a hint: it rests on a quick profile fit, groups
    that differ only by weak reflections tie or swap (for NaCl, Fm-3c can
    edge out Fm-3m because 111 is weak), and nGoF differences of a few %
    mean nothing.

    Parameters
    ----------
    pattern : Pattern
        The measured pattern (2θ, Q or d; the full profile is fitted).
        A Q or d pattern without a wavelength is put on 2θ with a
        stand-in wavelength (Le Bail intensities are free, so the
        ranking does not depend on it).
    cell : CellCandidate or sequence of 6 float
        The conventional cell (a, b, c in Å; α, β, γ in degrees).
    wavelength : float or str, optional
        For a 2θ pattern that has none.
    n_groups : int
        How many of the best groups to return.
    match_cell : bool
        For a :class:`CellCandidate`, keep only groups of its lattice
        system and centring: a tP cell also admits orthorhombic subgroups
        and I groups, which the Le Bail fit may not tell apart, but which
        the indexing (metric, absences) has ruled out.

    Returns
    -------
    tuple of (str, float)
        Hermann-Mauguin symbols (ObjCryst's spelling, e.g. "R -3 c :H")
        and nGoF, best first.
    """
    try:
        from pyobjcryst.crystal import Crystal
        from pyobjcryst.powderpattern import (
            PowderPattern,
            SpaceGroupExplorer,
        )
    except ImportError as err:
        raise MissingBackendError(
            "Scoring space groups needs pyobjcryst (ObjCryst++). Please "
            "install it: conda install -c conda-forge pyobjcryst."
        ) from err
    from diffpy_mlsolve.refine.rietveld import set_pseudo_voigt

    lattice = cell.lattice if isinstance(cell, CellCandidate) else cell
    lattice = tuple(float(v) for v in lattice)
    if pattern.xtype == "tth":
        tth = pattern
        if tth.wavelength is None:
            tth = tth.with_wavelength(_tth_wavelength(pattern, wavelength))
    elif pattern.xtype in ("q", "d"):
        lam = wavelength if wavelength is not None else pattern.wavelength
        if lam is None:  # stand-in: the largest Q lands at 2θ = 120°
            lam = 4 * math.pi * math.sin(math.radians(60)) / pattern.q.max()
        tth = pattern.on_tth(lam)
    else:
        raise PatternFormatError(
            f"{_name(pattern)} has xtype {pattern.xtype!r}; space groups "
            "are scored on a diffraction pattern (2θ, Q or d)."
        )
    lam = float(tth.wavelength)
    x = np.asarray(tth.x, dtype=float)
    y = np.asarray(tth.intensity, dtype=float)
    doublet = _doublet(tth, wavelength, "auto")
    if doublet is not None:  # fit Kα1 only
        y = _strip_kalpha2(x, y, lam, *doublet)
        y = np.maximum(y, 1e-3 * y.max())
    fwhm = find_pattern_peaks(tth, wavelength=wavelength).fwhm
    if not math.isfinite(fwhm) or fwhm <= 0:
        fwhm = 0.1
    pp = PowderPattern()
    pp.SetWavelength(lam)
    pp.SetPowderPatternX(np.radians(x))
    pp.SetPowderPatternObs(y)
    pp.SetMaxSinThetaOvLambda(float(math.sin(math.radians(x[-1]) / 2) / lam))
    a, b, c, al, be, ga = lattice
    crystal = Crystal(
        a, b, c, math.radians(al), math.radians(be), math.radians(ga), "P1"
    )
    diff = pp.AddPowderPatternDiffraction(crystal)
    set_pseudo_voigt(diff, fwhm)
    pp.quick_fit_profile(plot=False, verbose=False, init_profile=False)
    explorer = SpaceGroupExplorer(diff)
    explorer.RunAll(False, False, True, False, True)
    scores = [(s.hermann_mauguin, float(s.nGoF)) for s in explorer.GetScores()]
    if match_cell and isinstance(cell, CellCandidate):
        scores = [
            t
            for t in scores
            if t[0].strip()[:1] == cell.centring
            and _in_system(t[0], cell.crystal_system)
        ]
    scores.sort(key=lambda t: t[1])
    return tuple(scores[: max(int(n_groups), 1)])


_SG_NUMBERS = {  # space-group numbers of each lattice system
    "triclinic": range(1, 3),
    "monoclinic": range(3, 16),
    "orthorhombic": range(16, 75),
    "tetragonal": range(75, 143),
    "trigonal": _R_NUMBERS,
    "hexagonal": [n for n in range(143, 195) if n not in _R_NUMBERS],
    "cubic": range(195, 231),
}


def _in_system(hm: str, system: str) -> bool:
    from pyobjcryst.spacegroup import SpaceGroup

    try:
        number = SpaceGroup(hm).GetSpaceGroupNumber()
    except Exception:  # pragma: no cover - a symbol ObjCryst gave us
        return True
    return number in _SG_NUMBERS[system]
