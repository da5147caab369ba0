"""Rietveld refinement of candidate structures in pyobjcryst (ObjCryst++).

pyobjcryst is an optional backend: this module imports it only inside
:meth:`RietveldRefiner.refine` (through
:mod:`diffpy_mlsolve.refine.rietveld`, the driver), so listing plugins
stays light.
"""

from __future__ import annotations

from diffpy_mlsolve.refine.rietveld import (
    DEFAULT_BACKGROUND_POINTS,
    DEFAULT_CYCLES,
    STAGES,
)
from diffpy_mlsolve.solver import RefinementResult, Refiner

__all__ = ["RietveldRefiner"]


class RietveldRefiner(Refiner):
    """Rietveld refinement of a structure against a powder pattern.

    Needs pyobjcryst, which builds against the ObjCryst++ library.  The
    structure is refined in its space group (found with spglib), with an
    interpolated background, a pseudo-Voigt profile (Caglioti U, V, W and
    eta), zero shift, the lattice, the free atom coordinates and one B per
    element; see :func:`diffpy_mlsolve.refine.rietveld.rietveld_refine`.
    """

    requires = ("pyobjcryst",)
    install_hint = (
        "Please install the system libraries (on Debian/Ubuntu: apt-get "
        "install libobjcryst-dev libboost-python-dev) and then run "
        "pip install 'diffpy-mlsolve[rietveld]'; see the README."
    )

    def refine(
        self,
        structure,
        pattern,
        *,
        wavelength=None,
        radiation=None,
        spacegroup=None,
        symprec=0.01,
        stages=STAGES,
        cycles: int = DEFAULT_CYCLES,
        background_points: int = DEFAULT_BACKGROUND_POINTS,
        tth_range=None,
    ) -> RefinementResult:
        """Refine ``structure`` against the powder ``pattern``.

        Parameters
        ----------
        structure : diffpy or pymatgen Structure, CIF path, CrystalArrays
            or SymmetrizedStructure
            The starting structure (any cell: it is symmetrized and put in
            its standard setting first).
        pattern : Pattern, str or Path
            The powder X-ray pattern (2θ, Q or d), or a file to load.
        wavelength : float or str, optional
            Wavelength in Å or a source name; needed when the pattern has
            none.  ``"CuKa"`` means the Kα1/Kα2 doublet.
        radiation : float, str or Radiation, optional
            The lines to use, overriding the pattern's: ``"CuKa"`` adds
            Kα2, ``"CuKa1"`` forces a single line.  By default a pattern
            whose source is a doublet (metadata ``source_name`` such as
            ``"CuKa"``) is refined with Kα2.
        spacegroup : int or str, optional
            Refine in this space group (number or symbol); ``1``/``"P1"``
            refines every site freely.  By default the group spglib finds
            at ``symprec``.
        symprec : float or sequence of float
            spglib tolerance(s) in Å.
        stages : sequence of str
            Which of "scale", "background", "lattice" (with zero shift),
            "profile", "positions", "biso" to refine; they run in that
            order, a few cycles each, then all together.
        cycles : int
            Least-squares cycles per stage.
        background_points : int
            Interpolation points of the refined background.
        tth_range : (float, float), optional
            2θ range (degrees) to fit.

        Returns
        -------
        RefinementResult
            The refined full cell (diffpy Structure), Rwp (a fraction),
            GoF (chi² per degree of freedom), 2θ (degrees), observed and
            calculated curves, and the refined settings.

        Raises
        ------
        MissingBackendError
            When pyobjcryst is not installed (the message says how).
        PatternFormatError
            For a PDF (xtype "r": use the "pdf" refiner), a pattern with
            no peaks, or something that is not a pattern.
        WavelengthError
            When the pattern has no wavelength and none is passed.
        StructureError
            For an empty or unreadable structure, or a space group the
            structure does not have.
        PhysicsInputError
            For unknown stages or bad counts.
        """
        self.check_backend()
        from diffpy_mlsolve.refine.rietveld import (
            check_powder_pattern,
            pattern_radiation,
            rietveld_refine,
            symmetrize,
        )

        sym = symmetrize(structure, symprec=symprec, spacegroup=spacegroup)
        pattern = _as_pattern(pattern, wavelength)
        check_powder_pattern(pattern)
        pattern_radiation(pattern, wavelength, radiation)
        return rietveld_refine(
            sym,
            pattern,
            wavelength=wavelength,
            radiation=radiation,
            stages=stages,
            cycles=cycles,
            background_points=background_points,
            tth_range=tth_range,
        )


def _as_pattern(pattern, wavelength):
    """A Pattern, or one loaded from a path."""
    from pathlib import Path

    from diffpy_mlsolve.errors import PatternFormatError
    from diffpy_mlsolve.pattern import Pattern, load_pattern

    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, (str, Path)):
        return load_pattern(pattern, wavelength=wavelength)
    raise PatternFormatError(
        f"Cannot refine against a {type(pattern).__name__}. Please pass a "
        "Pattern (Pattern.from_arrays, load_pattern or simulate_pxrd) or "
        "the path of a pattern file."
    )
