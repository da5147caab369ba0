"""PDF refinement of candidate structures in diffpy.srfit.

A thin adapter over :mod:`diffpy_mlsolve.refine.pdf`; diffpy.srfit is an
optional backend imported only inside :meth:`PDFRefiner.refine`, so
listing plugins stays light.  G(r) comes from diffpy.srreal when it is
installed, otherwise from diffpy-mlsolve's own kernel.
"""

from __future__ import annotations

from diffpy_mlsolve.solver import RefinementResult, Refiner

__all__ = ["PDFRefiner"]


class PDFRefiner(Refiner):
    """Real-space refinement of a structure against a PDF G(r)."""

    requires = ("diffpy.srfit",)
    install_hint = "Please run pip install 'diffpy-mlsolve[pdf]'."

    def refine(self, structure, pattern, **settings) -> RefinementResult:
        """Refine ``structure`` against the PDF ``pattern``.

        Parameters
        ----------
        structure : diffpy or pymatgen Structure, or CIF path
            The starting structure; refined in the standardized cell of
            its space group.
        pattern : Pattern or path
            The measured G(r) (xtype ``"r"``).
        **settings
            Passed to :func:`diffpy_mlsolve.refine.pdf.refine_pdf`:
            ``qmax`` (default from the pattern's metadata), ``qdamp``,
            ``qbroad``, ``diameter`` (starting particle diameter in Å; None
            for a bulk crystal), ``rmin``, ``rmax``, ``spacegroup``,
            ``symprec``, ``adp``, ``refine_qdamp``, ``calculator``,
            ``stages``, ``max_nfev``.

        Returns
        -------
        RefinementResult
            ``rwp`` holds Rw (a fraction), ``x`` is r (Å); ``settings``
            hold the space group, refined lattice, scale, qdamp, Biso per
            site, the refined diameter and the calculator used.

        Raises
        ------
        MissingBackendError
            When diffpy.srfit is not installed.
        PatternFormatError
            For a powder pattern (use the 'rietveld' refiner).
        PhysicsInputError
            Without qmax, for a fit range beyond the data, or a diameter
            smaller than the longest cell edge.
        StructureError
            For a missing or empty structure.
        """
        self.check_backend()
        from diffpy_mlsolve.refine.pdf import refine_pdf

        return refine_pdf(structure, pattern, **settings)
