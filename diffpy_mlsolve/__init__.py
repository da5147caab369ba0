"""diffpy-mlsolve: structure solution from powder data with a variational
coordinate-based density network, handed to diffpy refinements.

``import diffpy_mlsolve`` stays light: torch, pymatgen and the refinement
backends load on first use of the names that need them.
"""

from __future__ import annotations

import importlib

from diffpy_mlsolve.errors import (  # noqa: F401 (re-exported)
    MissingBackendError,
    MLSolveError,
    ModelNotAvailableError,
    PatternFileError,
    PatternFormatError,
    PhysicsInputError,
    PluginError,
    StructureError,
    WavelengthError,
)
from diffpy_mlsolve.version import __version__  # noqa: F401

# public name -> module that defines it (imported on first access)
_LAZY = {
    "Pattern": "diffpy_mlsolve.pattern",
    "load_pattern": "diffpy_mlsolve.pattern",
    "Radiation": "diffpy_mlsolve.radiation",
    "simulate_pxrd": "diffpy_mlsolve.simulate",
    "electron_density": "diffpy_mlsolve.simulate",
    "simulate_pdf": "diffpy_mlsolve.simulate",
    "pattern_from_density": "diffpy_mlsolve.simulate",
    "Density": "diffpy_mlsolve.density",
    "CrystalArrays": "diffpy_mlsolve.structures",
    "as_crystal": "diffpy_mlsolve.structures",
    "get_solver": "diffpy_mlsolve.plugins",
    "get_refiner": "diffpy_mlsolve.plugins",
    "available_plugins": "diffpy_mlsolve.plugins",
    "DensitySolver": "diffpy_mlsolve.solver",
    "SolveResult": "diffpy_mlsolve.solver",
    "Candidate": "diffpy_mlsolve.solver",
    "RefinementResult": "diffpy_mlsolve.solver",
    "make_pdf_recipe": "diffpy_mlsolve.refine.pdf",
    "find_symmetry": "diffpy_mlsolve.symmetry",
    "structure_from_density": "diffpy_mlsolve.atoms",
}

__all__ = sorted(
    list(_LAZY)
    + [
        "__version__",
        "MLSolveError",
        "MissingBackendError",
        "ModelNotAvailableError",
        "PatternFileError",
        "PatternFormatError",
        "PhysicsInputError",
        "PluginError",
        "StructureError",
        "WavelengthError",
    ]
)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(
            f"module 'diffpy_mlsolve' has no attribute {name!r}"
        )
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
