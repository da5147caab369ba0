"""The exceptions diffpy-mlsolve raises for problems a user can fix.

Every class subclasses :class:`MLSolveError` and the matching built-in
exception, so ``except ValueError`` keeps working for callers that do not
know this package.  Messages name the problem and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "MLSolveError",
    "PatternFormatError",
    "PatternFileError",
    "WavelengthError",
    "StructureError",
    "PhysicsInputError",
    "PluginError",
    "PluginValidationError",
    "MissingBackendError",
    "ModelNotAvailableError",
    "OutputExistsError",
    "DataSourceError",
]


class MLSolveError(Exception):
    """Base class of every error diffpy-mlsolve raises on purpose."""


class PatternFormatError(MLSolveError, ValueError):
    """A pattern file or array that cannot be read as a pattern."""


class PatternFileError(MLSolveError, OSError):
    """A pattern file that does not exist or cannot be opened."""


class WavelengthError(MLSolveError, ValueError):
    """A wavelength that is missing where needed, unknown or not positive."""


class StructureError(MLSolveError, ValueError):
    """A crystal structure that cannot be used (bad cell, atoms, CIF)."""


class PhysicsInputError(MLSolveError, ValueError):
    """Simulation settings that cannot give a meaningful result."""


class PluginError(MLSolveError, LookupError):
    """A solver or refiner that is not known or cannot be loaded."""


class PluginValidationError(PluginError):
    """A plugin declared twice or with a wrong shape."""


class MissingBackendError(MLSolveError, ImportError):
    """An optional backend (pyobjcryst, diffpy.srfit, ...) is not installed."""


class ModelNotAvailableError(MLSolveError, RuntimeError):
    """A solver has no trained model to predict with."""


class OutputExistsError(MLSolveError, FileExistsError):
    """An output folder exists and overwriting was not asked for."""


class DataSourceError(MLSolveError, ValueError):
    """A structure table, CIF folder or generator that yields no data."""
