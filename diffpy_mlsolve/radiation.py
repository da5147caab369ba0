"""Named X-ray sources and wavelength checks.

Wavelengths (Å) of the characteristic lines are those of the International
Tables for Crystallography, Vol. C, Table 4.2.2.1 (Hölzer et al. 1997 for
Cu, Co, Cr, Fe; Deslattes et al. 2003 for Mo, Ag), rounded to 1e-6 Å.  A
name without ``1``/``2`` ("CuKa") is the Kα1/Kα2 doublet with the usual
intensity ratio 0.5; its single-line wavelength is Kα1, the value a 2θ axis
refers to in Rietveld programs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from diffpy_mlsolve.errors import WavelengthError

__all__ = [
    "Radiation",
    "SOURCES",
    "resolve_radiation",
    "resolve_wavelength",
    "radiation_of",
]


@dataclass(frozen=True)
class Radiation:
    """An X-ray source: one line, or a Kα1/Kα2 doublet.

    Attributes
    ----------
    wavelength : float
        The main (Kα1) wavelength in Å.
    wavelength2 : float or None
        The Kα2 wavelength in Å, or None for a single line.
    ratio : float
        Intensity of Kα2 relative to Kα1 (0 for a single line).
    name : str
        The source name, or "" for a number given directly.
    """

    wavelength: float
    wavelength2: float | None = None
    ratio: float = 0.0
    name: str = ""

    @property
    def lines(self) -> list[tuple[float, float]]:
        """(wavelength in Å, relative weight) of each line."""
        if self.wavelength2 is None or self.ratio == 0:
            return [(self.wavelength, 1.0)]
        return [(self.wavelength, 1.0), (self.wavelength2, self.ratio)]


_DOUBLETS = {
    "Cu": (1.540593, 1.544427),
    "Co": (1.789010, 1.792900),
    "Cr": (2.289760, 2.293663),
    "Fe": (1.936042, 1.939980),
    "Mo": (0.709317, 0.713607),
    "Ag": (0.559421, 0.563813),
}


def _build_sources() -> dict[str, Radiation]:
    sources = {}
    for el, (l1, l2) in _DOUBLETS.items():
        sources[f"{el}Ka1"] = Radiation(l1, name=f"{el}Ka1")
        sources[f"{el}Ka2"] = Radiation(l2, name=f"{el}Ka2")
        sources[f"{el}Ka"] = Radiation(l1, l2, 0.5, name=f"{el}Ka")
    return sources


SOURCES: dict[str, Radiation] = _build_sources()
_LOWER = {k.lower(): v for k, v in SOURCES.items()}


def resolve_radiation(value, *, what: str = "wavelength") -> Radiation:
    """Turn a number (Å), a source name or a :class:`Radiation` into one.

    Parameters
    ----------
    value : float, str or Radiation
        A wavelength in Å, a name such as ``"CuKa1"``, ``"MoKa"`` (case and
        a Greek alpha are ignored), or a Radiation.
    what : str
        The argument name used in error messages.

    Raises
    ------
    WavelengthError
        If the name is unknown or the number is not a positive finite
        wavelength.
    """
    if isinstance(value, Radiation):
        return value
    if value is None:
        raise WavelengthError(
            f"No {what} given: a powder pattern needs its wavelength (it is "
            "never assumed). Please pass it in Å or as a source name, e.g. "
            "1.5406 or 'CuKa1' (--wavelength on the command line)."
        )
    if isinstance(value, str):
        key = value.strip().replace("α", "a").replace("-", "").lower()
        key = key.replace("alpha", "a")
        if key in _LOWER:
            return _LOWER[key]
        try:
            value = float(value)
        except ValueError:
            names = ", ".join(sorted(SOURCES))
            raise WavelengthError(
                f"Unknown X-ray source {value!r} for {what}. Please give a "
                f"wavelength in Å or one of: {names}."
            ) from None
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise WavelengthError(
            f"{what} must be a number in Å or a source name such as "
            f"'CuKa1', not {value!r}."
        ) from None
    if not math.isfinite(lam) or lam <= 0:
        raise WavelengthError(
            f"{what} must be a positive wavelength in Å, got {lam}. "
            "Please pass e.g. wavelength=1.5406 or wavelength='CuKa1'."
        )
    if lam > 20:
        raise WavelengthError(
            f"{what} = {lam} Å is not an X-ray wavelength. Please give the "
            "wavelength in Å (e.g. 1.5406 for Cu Kα1), not in nm or keV."
        )
    return Radiation(lam)


def resolve_wavelength(value, *, what: str = "wavelength") -> float:
    """The main wavelength (Å) of a number, name or Radiation."""
    return resolve_radiation(value, what=what).wavelength


def radiation_of(pattern) -> Radiation:
    """The X-ray lines a pattern was measured with.

    The named source in ``pattern.metadata["source_name"]`` (a doublet
    such as "CuKa" brings its Kα2) when its main line is the pattern's
    wavelength; otherwise the pattern's wavelength as one line.

    Raises
    ------
    WavelengthError
        When the pattern has no wavelength.
    """
    lam = getattr(pattern, "wavelength", None)
    if lam is None:
        raise WavelengthError(
            "The pattern has no wavelength. Please give it, e.g. "
            "load_pattern(path, wavelength='CuKa1') or "
            "pattern.with_wavelength(1.5406)."
        )
    named = SOURCES.get(str(pattern.metadata.get("source_name") or ""))
    if named is not None and abs(named.wavelength - lam) < 1e-5:
        return named
    return Radiation(float(lam))
