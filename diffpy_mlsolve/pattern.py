"""Powder patterns: one immutable type, its readers and its checks.

A :class:`Pattern` holds one curve on its own axis (2θ in degrees, Q in
Å^-1, d in Å, or r in Å for a PDF G(r)) with the wavelength (Å) that links
the diffraction axes.  :func:`load_pattern` reads the common text formats
and diffpy.utils ``DiffractionObject`` instances.  Every problem a user can
fix raises a typed error from :mod:`diffpy_mlsolve.errors` naming the file,
the line where useful, and the fix.  A 2θ pattern without a wavelength may
load (to plot it), but nothing converts it to Q: no Cu Kα is assumed.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from diffpy_mlsolve.background import (
    chebyshev_background_fit,
    snip_background,
)
from diffpy_mlsolve.errors import (
    PatternFormatError,
    WavelengthError,
)
from diffpy_mlsolve.radiation import resolve_radiation

__all__ = ["Pattern", "load_pattern", "XTYPES", "MIN_POINTS"]

#: The x axes a Pattern can be on.
XTYPES = ("tth", "q", "d", "r")
#: The fewest points a pattern may have.
MIN_POINTS = 3
_ALIASES = {"2theta": "tth", "twotheta": "tth", "angle": "tth", "dspace": "d"}
_UNITS = {"tth": "deg", "q": "Å^-1", "d": "Å", "r": "Å"}
_HINT = "Please pass wavelength=1.5406 or wavelength='CuKa1'"
_FOUR_PI = 4.0 * math.pi
_KEEP = object()  # "keep the pattern's own value" in Pattern._derive


def _prefix(source: str) -> str:
    return f"File '{source}'" if source else "Pattern data"


def _xtype(value) -> str:
    key = str(value).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in XTYPES:
        raise PatternFormatError(
            f"Unknown xtype {value!r}. Please use one of: "
            f"{', '.join(XTYPES)} (2θ in degrees, Q in Å^-1, d in Å, "
            "r in Å for a PDF)."
        )
    return key


def _frozen(values, name: str, source: str) -> np.ndarray:
    try:
        arr = np.array(values, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as err:
        raise PatternFormatError(
            f"{_prefix(source)}: {name} cannot be read as numbers ({err})."
        ) from err
    if arr.ndim != 1:
        raise PatternFormatError(
            f"{_prefix(source)}: {name} must be a 1-D array, got shape "
            f"{arr.shape}. Please pass one value per point."
        )
    arr.setflags(write=False)
    return arr


def _check(x, y, sigma, xtype, source, rows=None):
    """Check the invariants of a pattern; reverse an all-decreasing x.

    Returns (x, y, sigma, reversed).  ``rows`` maps points to file lines.
    """
    pre = _prefix(source)

    def at(i):
        return f"{pre}, line {rows[i]}" if rows is not None else f"{pre}[{i}]"

    sizes = [len(x), len(y)] + ([] if sigma is None else [len(sigma)])
    if len(set(sizes)) > 1:
        raise PatternFormatError(
            f"{pre}: x, intensity (and sigma) have different lengths "
            f"{sizes}. Please pass arrays of equal length."
        )
    if len(x) < MIN_POINTS:
        raise PatternFormatError(
            f"{pre}: {len(x)} data point(s); a pattern needs at least "
            f"{MIN_POINTS}. Please pass the whole measured pattern."
        )
    for name, arr in (("x", x), ("intensity", y), ("sigma", sigma)):
        bad = [] if arr is None else np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            raise PatternFormatError(
                f"{at(bad[0])}: {name} is {arr[bad[0]]}, not a finite "
                f"number ({len(bad)} NaN/inf in all). Please remove or fix "
                "those points."
            )
    if sigma is not None and np.any(sigma <= 0):
        i = np.flatnonzero(sigma <= 0)[0]
        raise PatternFormatError(
            f"{at(i)}: sigma is {sigma[i]}; uncertainties must be positive. "
            "Please fix them or leave sigma out (sigma=None)."
        )
    step = np.diff(x)
    if np.any(step == 0):
        i = np.flatnonzero(step == 0)[0]
        raise PatternFormatError(
            f"{at(i + 1)}: duplicate x value {x[i]} (also at the point "
            "before). x must be strictly increasing; please remove or merge "
            "the duplicate points."
        )
    flipped = bool(np.all(step < 0))
    if flipped:
        x, y = x[::-1], y[::-1]
        sigma = None if sigma is None else sigma[::-1]
        rows = None if rows is None else rows[::-1]
    elif np.any(step < 0):
        back = step < 0 if np.mean(step < 0) <= 0.5 else step > 0
        i = np.flatnonzero(back)[0] + 1
        raise PatternFormatError(
            f"{at(i)}: x is not strictly increasing (x goes from "
            f"{x[i - 1]} to {x[i]}). Please sort the points by x."
        )
    if xtype == "tth":
        bad, rule = (x < 0) | (x > 180), "within 0–180°"
    elif xtype == "d":
        bad, rule = x <= 0, "positive"
    else:
        bad, rule = x < 0, "zero or positive"
    if np.any(bad):
        i = np.flatnonzero(bad)[0]
        what = {"tth": "2θ", "q": "Q", "d": "d-spacing", "r": "r"}[xtype]
        raise PatternFormatError(
            f"{at(i)}: {what} = {x[i]} {_UNITS[xtype]} is not allowed "
            f"({what} must be {rule}). Please check that the first column "
            f"is {what} in {_UNITS[xtype]}, or pass the right xtype "
            "('tth', 'q', 'd' or 'r')."
        )
    return x, y, sigma, flipped


def _check_content(y, xtype, source):
    """Input sanity: some signal, and positive signal for diffraction."""
    if not np.any(y):
        raise PatternFormatError(
            f"{_prefix(source)}: every intensity is zero. Please check that "
            "the intensity column holds the measurement (columns=(0, 2) "
            "picks another column)."
        )
    if xtype != "r" and np.all(y <= 0):
        raise PatternFormatError(
            f"{_prefix(source)}: no intensity is positive. A diffraction "
            "pattern needs positive counts; please check the sign and the "
            "columns, or load a PDF G(r) with xtype='r'."
        )


def _ro(arr) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Pattern:
    """One powder pattern on its own axis; immutable.

    Build one with :meth:`from_arrays` or :func:`load_pattern`.  Arrays are
    read-only float64 copies; every method returns a new Pattern.  An x
    that decreases throughout is reversed (with intensity and sigma) and
    ``metadata["reversed"]`` is set; any other disorder is an error.

    Attributes
    ----------
    x : ndarray
        The axis in its own units: 2θ (degrees), Q (Å^-1), d (Å) or r (Å),
        strictly increasing.
    intensity : ndarray
        Intensity per point (arbitrary units; G(r) in Å^-2 for xtype "r").
    xtype : str
        "tth", "q", "d" or "r".
    wavelength : float or None
        Wavelength in Å (a source name such as "CuKa1" is resolved).
    sigma : ndarray or None
        Positive standard uncertainty of each intensity.
    metadata : Mapping
        Read-only header data and provenance ("wavelength_from",
        "source_name", ...).
    source : str
        The file the pattern came from, or "".
    """

    x: np.ndarray
    intensity: np.ndarray
    xtype: str = "tth"
    wavelength: float | None = None
    sigma: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        source = str(self.source or "")
        xtype = _xtype(self.xtype)
        meta = dict(self.metadata or {})
        lam = self.wavelength
        if lam is not None:
            try:
                rad = resolve_radiation(lam)
            except WavelengthError as err:
                msg = f"{_prefix(source)}: {err}" if source else str(err)
                raise WavelengthError(msg) from err
            lam = rad.wavelength
            if rad.name:
                meta["source_name"] = rad.name
        x = _frozen(self.x, "x", source)
        y = _frozen(self.intensity, "intensity", source)
        sig = self.sigma
        sig = None if sig is None else _frozen(sig, "sigma", source)
        x, y, sig, flipped = _check(x, y, sig, xtype, source)
        if flipped:
            meta["reversed"] = True
        for name, value in (("x", x), ("intensity", y), ("sigma", sig)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "xtype", xtype)
        object.__setattr__(self, "wavelength", lam)
        object.__setattr__(self, "metadata", types.MappingProxyType(meta))
        object.__setattr__(self, "source", source)

    @classmethod
    def from_arrays(
        cls,
        x,
        y,
        xtype: str = "tth",
        wavelength=None,
        sigma=None,
        metadata: Mapping[str, Any] | None = None,
        source: str = "",
    ) -> Pattern:
        """A checked Pattern from arrays.

        Parameters
        ----------
        x : array_like
            2θ (degrees), Q (Å^-1), d (Å) or r (Å), per ``xtype``; strictly
            increasing (an all-decreasing x is reversed).
        y : array_like
            Intensities; not all zero, and some positive unless xtype "r".
        xtype : str
            "tth" (default), "q", "d" or "r".
        wavelength : float, str or Radiation, optional
            Wavelength in Å or a source name such as "CuKa1".
        sigma : array_like, optional
            Positive uncertainties of ``y``.
        metadata : Mapping, optional
            Copied into a read-only mapping.
        source : str
            The file the data came from, for messages.

        Raises
        ------
        PatternFormatError
            Bad shapes, values or xtype.
        WavelengthError
            A wavelength that is not positive or not a known source.
        """
        meta = dict(metadata or {})
        if wavelength is not None:
            meta.setdefault("wavelength_from", "argument")
        pattern = cls(x, y, xtype, wavelength, sigma, meta, str(source))
        _check_content(pattern.intensity, pattern.xtype, pattern.source)
        return pattern

    def __reduce__(self):
        args = (self.x, self.intensity, self.xtype, self.wavelength)
        rest = (self.sigma, dict(self.metadata), self.source)
        return (type(self), args + rest)

    def __repr__(self) -> str:
        lam = "None" if self.wavelength is None else f"{self.wavelength:g} Å"
        src = f", source='{self.source}'" if self.source else ""
        return (
            f"Pattern(xtype='{self.xtype}', npoints={self.npoints}, "
            f"x={self.x[0]:g}..{self.x[-1]:g} {_UNITS[self.xtype]}, "
            f"wavelength={lam}{src})"
        )

    @property
    def npoints(self) -> int:
        """The number of points."""
        return int(self.x.size)

    def _name(self) -> str:
        return f"Pattern '{self.source}'" if self.source else "This pattern"

    def _need_wavelength(self, what: str) -> float:
        if self.wavelength is None:
            raise WavelengthError(
                f"{self._name()} is on 2θ and has no wavelength, so it "
                f"cannot be put on {what}. {_HINT} to load_pattern() or "
                "Pattern.from_arrays(), or use pattern.with_wavelength(...)."
            )
        return self.wavelength

    @property
    def q(self) -> np.ndarray:
        """Q = 4π sin(θ)/λ = 2π/d (Å^-1) of each point, in x order."""
        if self.xtype == "q":
            return self.x
        if self.xtype == "d":
            return _ro(2.0 * math.pi / self.x)
        if self.xtype == "r":
            raise PatternFormatError(
                f"{self._name()} is a PDF on r (Å); a PDF has no Q axis. "
                "Please use pattern.x (r) instead."
            )
        lam = self._need_wavelength("Q")
        return _ro(_FOUR_PI * np.sin(np.radians(self.x) / 2.0) / lam)

    def _tth_of(self, q: np.ndarray, lam: float) -> np.ndarray:
        s = q * lam / _FOUR_PI
        if np.any(s > 1.0):
            raise PatternFormatError(
                f"{self._name()} reaches Q = {q.max():.4g} Å^-1, beyond "
                f"4π/λ = {_FOUR_PI / lam:.4g} Å^-1, the largest Q that "
                f"λ = {lam:g} Å reaches. Please use a shorter wavelength or "
                "resample to a smaller Q range first."
            )
        return np.degrees(2.0 * np.arcsin(s))

    @property
    def tth(self) -> np.ndarray:
        """2θ (degrees) of each point, in x order; needs a wavelength."""
        if self.xtype == "tth":
            return self.x
        q = self.q
        return _ro(self._tth_of(q, self._need_wavelength("2θ")))

    @property
    def d(self) -> np.ndarray:
        """d = 2π/Q (Å) of each point, in x order (inf at Q = 0)."""
        if self.xtype == "d":
            return self.x
        with np.errstate(divide="ignore"):
            return _ro(2.0 * math.pi / self.q)

    def _derive(self, x, y, xtype=None, sigma=_KEEP, wavelength=_KEEP, **md):
        """A new Pattern like this one; ``md`` updates the metadata."""
        meta = {**self.metadata, **md}
        if wavelength is _KEEP:
            wavelength = self.wavelength
        else:
            meta.pop("source_name", None)  # set again if a name is given
        sigma = self.sigma if sigma is _KEEP else sigma
        return Pattern(
            x, y, xtype or self.xtype, wavelength, sigma, meta, self.source
        )

    def with_wavelength(self, wavelength) -> Pattern:
        """A copy with ``wavelength`` (Å or a name) and x unchanged.

        Use :meth:`on_tth` to move a 2θ pattern to another wavelength.
        """
        return self._derive(
            self.x,
            self.intensity,
            wavelength=wavelength,
            wavelength_from="argument",
        )

    def with_metadata(self, **metadata) -> Pattern:
        """A copy whose metadata is updated with ``metadata`` (e.g.
        ``gr.with_metadata(qmax=25.0)``)."""
        return self._derive(self.x, self.intensity, **metadata)

    def on_q(self) -> Pattern:
        """The pattern on Q (Å^-1), sorted by increasing Q.

        Each point keeps its intensity value: the points are relabelled,
        not re-binned, and no Jacobian or Lorentz factor is applied.
        """
        q = self.q
        order = np.argsort(q)
        sigma = None if self.sigma is None else self.sigma[order]
        return self._derive(q[order], self.intensity[order], "q", sigma)

    def on_tth(self, wavelength=None) -> Pattern:
        """The pattern on 2θ (degrees), intensities per point unchanged.

        Parameters
        ----------
        wavelength : float, str or Radiation, optional
            Target wavelength in Å or a source name.  Default: the
            pattern's own.  A 2θ pattern with a wavelength is moved to the
            new one through Q; a 2θ pattern without one just takes it.

        Raises
        ------
        WavelengthError
            If no wavelength is known.
        PatternFormatError
            If Q goes beyond 4π/λ, or for a PDF.
        """
        if wavelength is None:
            if self.xtype == "tth":
                return self._derive(self.x, self.intensity)
            lam, wavelength = self._need_wavelength("2θ"), _KEEP
        else:
            rad = resolve_radiation(wavelength)
            if self.xtype == "tth" and self.wavelength is None:
                return self.with_wavelength(rad)
            lam, wavelength = rad.wavelength, rad
        on_q = self.on_q()
        tth = self._tth_of(on_q.x, lam)
        return on_q._derive(tth, on_q.intensity, "tth", wavelength=wavelength)

    def resample(self, new_x, fill: float | None = None) -> Pattern:
        """Linear interpolation onto ``new_x`` in the pattern's own xtype.

        Parameters
        ----------
        new_x : array_like
            Strictly increasing points in the units of ``x``.
        fill : float, optional
            Intensity for points outside the measured range; without it
            such points are an error.  Sigma is interpolated too (an
            approximation) and dropped when points are filled.
        """
        nx = _frozen(new_x, "new_x", self.source)
        outside = (nx < self.x[0]) | (nx > self.x[-1])
        if np.any(outside) and fill is None:
            raise PatternFormatError(
                f"{self._name()} covers {self.x[0]:g}..{self.x[-1]:g} "
                f"{_UNITS[self.xtype]} but new_x runs {nx.min():g}.."
                f"{nx.max():g}. Please resample inside the measured range, "
                "or pass fill=0.0 to pad outside it."
            )
        y = np.interp(nx, self.x, self.intensity, left=fill, right=fill)
        sigma = None
        if self.sigma is not None and not np.any(outside):
            sigma = np.interp(nx, self.x, self.sigma)
        return self._derive(nx, y, sigma=sigma)

    def on_grid(self, q_grid) -> tuple[np.ndarray, np.ndarray]:
        """Intensities on a Q grid with a coverage mask (the model input).

        Parameters
        ----------
        q_grid : array_like
            Q values in Å^-1.

        Returns
        -------
        values : ndarray
            Linear interpolation inside the measured Q range, 0 outside.
        mask : ndarray of bool
            True where ``q_grid`` lies inside the measured Q range.
        """
        grid = np.array(q_grid, dtype=np.float64)
        if grid.ndim != 1 or not np.all(np.isfinite(grid)):
            raise PatternFormatError(
                "q_grid must be a 1-D array of finite Q values in Å^-1."
            )
        pat = self.on_q()
        mask = (grid >= pat.x[0]) & (grid <= pat.x[-1])
        values = np.interp(grid, pat.x, pat.intensity)
        return np.where(mask, values, 0.0), mask

    def estimate_background(
        self,
        method: str = "chebyshev",
        *,
        degree: int = 6,
        clip: float = 2.0,
        max_iter: int = 100,
        width: float | None = None,
        smooth: int = 5,
    ) -> np.ndarray:
        """A smooth background under the peaks, one value per point.

        Parameters
        ----------
        method : str
            "chebyshev" (default; robust to noise, needs no peak width) or
            "snip".
        degree : int
            Chebyshev polynomial degree (capped at npoints - 1).
        clip : float
            Chebyshev: points more than ``clip`` noise σ above the fit are
            treated as peaks.
        max_iter : int
            Chebyshev: the most fit-and-clip rounds.
        width : float, optional
            SNIP: the largest clipping window in x units (degrees, Å^-1 or
            Å); default 2 % of the x range.
        smooth : int
            SNIP: moving-average half-width in points before clipping.

        Returns
        -------
        ndarray
            The background, in intensity units, at each x.

        Notes
        -----
        ``"chebyshev"``:

        1. fit a Chebyshev polynomial of ``degree`` on x to the kept points
           (all points at first) by least squares;
        2. estimate the noise σ as 1.4826 × the median absolute deviation
           of the kept residuals;
        3. keep only points less than ``clip`` σ above the fit (peaks are
           dropped); repeat until the kept set stops changing.

        ``"snip"``: the SNIP algorithm (Ryan et al., Nucl. Instrum. Meth. B
        34, 396 (1988); decreasing windows after Morháč et al., Nucl.
        Instrum. Meth. A 401, 113 (1997)):

        1. smooth the intensities with a moving average over ``smooth``
           points either side (removes the pull of the noise minima);
        2. for p = m, m-1, ..., 1 replace each value by the smaller of
           itself and the mean of its neighbours p points away, m points
           spanning ``width`` (x units; default 2 % of the x range; about
           3 peak widths works best).

        SNIP sits low where the background is strongly concave.
        """
        if self.xtype == "r":
            raise PatternFormatError(
                f"{self._name()} is a PDF G(r); it has no background to "
                "estimate."
            )
        if method == "snip":
            return snip_background(self.x, self.intensity, width, smooth)
        if method != "chebyshev":
            raise PatternFormatError(
                f"Unknown background method {method!r}. Please use "
                "'chebyshev' or 'snip'."
            )
        return chebyshev_background_fit(
            self.x, self.intensity, degree, clip, max_iter
        )

    def subtract_background(
        self, background=None, method: str = "chebyshev", **kwargs
    ) -> Pattern:
        """The pattern minus a background (given, or estimated).

        ``background`` is an array of one value per point; without it
        :meth:`estimate_background` (``method``, ``**kwargs``) is used.
        Negative values afterwards are kept (noise around zero).
        """
        if background is None:
            bg = self.estimate_background(method, **kwargs)
        else:
            bg = np.asarray(background, dtype=np.float64)
            if bg.shape != self.x.shape:
                raise PatternFormatError(
                    f"background has shape {bg.shape} but the pattern has "
                    f"{self.npoints} points. Please pass one value per point."
                )
            method = "given"
        return self._derive(self.x, self.intensity - bg, background=method)

    def normalized(self, kind: str = "max") -> Pattern:
        """The pattern scaled to maximum 1 ("max") or unit area ("area").

        The area is the trapezoid integral over x (x units); sigma is
        scaled by the same factor.
        """
        y = self.intensity
        if kind == "max":
            scale = float(y.max())
        elif kind == "area":
            scale = float(np.sum(np.diff(self.x) * (y[1:] + y[:-1]) / 2))
        else:
            raise PatternFormatError(
                f"Unknown normalization {kind!r}. Please use 'max' or 'area'."
            )
        if not scale > 0:
            raise PatternFormatError(
                f"{self._name()} has {kind} {scale:g}, so it cannot be "
                "normalized. Please subtract less background first."
            )
        sigma = None if self.sigma is None else self.sigma / scale
        return self._derive(self.x, y / scale, sigma=sigma, normalized=kind)


from diffpy_mlsolve.pattern_io import load_pattern  # noqa: E402 (re-export)
