"""Crystal structures for training: real tables, CIF folders, synthetic.

See :mod:`diffpy_mlsolve.data.sources` for the record type and sources and
:mod:`diffpy_mlsolve.data.synthetic` for random crystals from pyxtal.
"""

from diffpy_mlsolve.data.sources import (
    CRYSTAL_SYSTEMS,
    CifFolder,
    SkippedStructureWarning,
    StructureRecord,
    StructureSource,
    StructureTable,
    crystal_system_of,
    open_source,
)
from diffpy_mlsolve.data.synthetic import SyntheticSource

__all__ = [
    "CRYSTAL_SYSTEMS",
    "CifFolder",
    "SkippedStructureWarning",
    "StructureRecord",
    "StructureSource",
    "StructureTable",
    "SyntheticSource",
    "crystal_system_of",
    "open_source",
]
