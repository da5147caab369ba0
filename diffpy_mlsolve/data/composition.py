"""Composition as the network sees it, in the four modes of the reference
paper: full atom fractions, elements present only, one element dropped,
and none."""

from __future__ import annotations

import numpy as np

from diffpy_mlsolve.errors import StructureError
from diffpy_mlsolve.physics.formfactors import MAX_Z

__all__ = [
    "MODES",
    "VECTOR_SIZE",
    "composition_vector",
    "parse_composition",
]

#: composition modes, in the order of their one-hot index
MODES = ("full", "elements", "drop1", "none")
#: length of the vector, indexed by Z (index 0 unused)
VECTOR_SIZE = MAX_Z + 1


def composition_vector(numbers, occupancy, mode: str, rng=None) -> np.ndarray:
    """The composition vector (VECTOR_SIZE,) of a cell's atoms.

    Parameters
    ----------
    numbers, occupancy : array (n,)
        Atomic numbers and occupancies of the sites.
    mode : {"full", "elements", "drop1", "none"}
        "full": atom fractions summing to 1; "elements": 1/k for each of
        the k elements present; "drop1": as "elements" with one element
        (drawn with ``rng``) left out when there are two or more; "none":
        zeros.
    rng : numpy Generator, needed for "drop1"
    """
    vec = np.zeros(VECTOR_SIZE, np.float32)
    if mode == "none":
        return vec
    numbers = np.asarray(numbers, int)
    amount = np.bincount(numbers, np.asarray(occupancy, float), VECTOR_SIZE)
    if mode == "full":
        return (amount / amount.sum()).astype(np.float32)
    present = np.flatnonzero(amount > 0)
    if mode == "drop1" and len(present) > 1:
        present = np.delete(present, rng.integers(len(present)))
    elif mode not in ("elements", "drop1"):
        raise ValueError(f"unknown composition mode {mode!r}")
    vec[present] = 1.0 / len(present)
    return vec


def parse_composition(text: str) -> dict[int, float]:
    """{Z: amount} of a formula such as 'SrTiO3' or 'Fe0.5Co0.5O'.

    Raises
    ------
    StructureError
        If the formula cannot be read or holds an element with no form
        factor.
    """
    from pymatgen.core import Composition

    try:
        comp = Composition(text)
    except Exception as err:  # pymatgen raises several kinds
        raise StructureError(
            f"Cannot read the composition {text!r}: {err}. Please give a "
            "formula such as 'NaCl' or 'SrTiO3'."
        ) from None
    out = {}
    for el, amt in comp.element_composition.items():
        if el.Z > MAX_Z:
            raise StructureError(
                f"Composition {text!r} holds {el} (Z = {el.Z}), which has "
                f"no X-ray form factor (Z <= {MAX_Z})."
            )
        out[int(el.Z)] = float(amt)
    if not out:
        raise StructureError(f"The composition {text!r} has no elements.")
    return out
