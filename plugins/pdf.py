"""PDF refinement of candidate structures in diffpy.srfit.

diffpy.srfit and diffpy.pdffit2 are optional backends: this module imports
them only inside :meth:`PDFRefiner.refine`, so listing plugins stays light.
"""

from __future__ import annotations

from diffpy_mlsolve.solver import RefinementResult, Refiner

__all__ = ["PDFRefiner"]


class PDFRefiner(Refiner):
    """Real-space refinement of a structure against a PDF G(r)."""

    requires = ("diffpy.srfit", "diffpy.pdffit2")
    install_hint = "Please run pip install 'diffpy-mlsolve[pdf]'."

    def refine(self, structure, pattern, **settings) -> RefinementResult:
        """Refine ``structure`` against the PDF ``pattern``.

        Raises
        ------
        MissingBackendError
            When diffpy.srfit or diffpy.pdffit2 is not installed.
        NotImplementedError
            For now: PDF refinement arrives with issue E.
        """
        self.check_backend()
        raise NotImplementedError(
            "PDF refinement arrives with issue E; diffpy.srfit is installed "
            "but diffpy-mlsolve does not drive it yet."
        )
