"""Rietveld refinement of candidate structures in pyobjcryst (ObjCryst++).

pyobjcryst is an optional backend: this module imports it only inside
:meth:`RietveldRefiner.refine`, so listing plugins stays light.
"""

from __future__ import annotations

from diffpy_mlsolve.solver import RefinementResult, Refiner

__all__ = ["RietveldRefiner"]


class RietveldRefiner(Refiner):
    """Rietveld refinement of a structure against a powder pattern.

    Needs pyobjcryst, which builds against the ObjCryst++ library.
    """

    requires = ("pyobjcryst",)
    install_hint = (
        "Please install the system libraries (on Debian/Ubuntu: apt-get "
        "install libobjcryst-dev libboost-python-dev) and then run "
        "pip install 'diffpy-mlsolve[rietveld]'; see the README."
    )

    def refine(self, structure, pattern, **settings) -> RefinementResult:
        """Refine ``structure`` against the powder ``pattern``.

        Raises
        ------
        MissingBackendError
            When pyobjcryst is not installed (the message says how).
        NotImplementedError
            For now: Rietveld refinement arrives with issue E.
        """
        self.check_backend()
        raise NotImplementedError(
            "Rietveld refinement arrives with issue E; pyobjcryst is "
            "installed but diffpy-mlsolve does not drive it yet."
        )
