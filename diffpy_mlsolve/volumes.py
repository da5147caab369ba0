"""Formula units per cell from the cell volume: atomic volume increments.

Crystallographers estimate Z, the formula units in a cell, from the cell
volume and a table of volumes per atom (Biltz's and Hofmann's volume
increments): V_cell ≈ Z Σ_e n_e v_e.  An atom's volume depends on its
partners (Al takes 16 Å^3 in intermetallics, far less in corundum), so
the table shipped here, ``data/atomic_volumes.json``, holds one volume
per element and, where the training data have enough of them, one per
(element, anion): the anion being the formula's most electronegative
element ("-" for an element on its own).  :func:`fit_atomic_volumes`
fitted it on the training split of the structure tables, by
non-negative least squares on the relative error of each structure's
volume per atom; ``tools/fit_atomic_volumes.py`` rebuilds it and prints
how often the rounded estimate is the true Z on the validation and test
splits (README, *Structure solution*).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "TABLE",
    "Z_TABLE",
    "anion",
    "atomic_volumes",
    "fit_atomic_volumes",
    "formula_units_from_volume",
    "formula_unit_prior",
    "write_atomic_volumes",
]

#: the shipped table of volumes per atom (Å^3)
TABLE = Path(__file__).with_name("data") / "atomic_volumes.json"
#: Formula units per conventional cell counted on the training split, by
#: crystal system (tools/count_formula_units.py)
Z_TABLE = Path(__file__).with_name("data") / "formula_units.json"
#: key of the volumes that hold for any partner
ANY = "*"
#: the fewest structures with an (element, anion) pair that get it a volume
MIN_COUNT = 20


def _amounts(formula) -> dict[str, float]:
    from pymatgen.core import Composition

    return {str(el): float(n) for el, n in Composition(formula).items()}


def anion(elements) -> str:
    """The most electronegative of ``elements`` (Pauling; the heavier on a
    tie), or "-" for a single element."""
    from pymatgen.core import Element

    elements = list(elements)
    if len(elements) == 1:
        return "-"

    def key(symbol):
        el = Element(symbol)
        with warnings.catch_warnings():  # noble gases have no Pauling X
            warnings.simplefilter("ignore")
            x = el.X
        return (x if np.isfinite(x) else 0.0, el.Z)

    return max(elements, key=key)


def _nnls(rows, target, columns):
    """Non-negative v with Σ_c rows[i][c] v_c ≈ target_i, relative error."""
    from scipy.optimize import nnls

    col = {c: i for i, c in enumerate(columns)}
    design = np.zeros((len(rows), len(columns)))
    for i, row in enumerate(rows):
        for c, x in row.items():
            design[i, col[c]] = x
    weight = 1.0 / np.asarray(target, float)
    fitted, _ = nnls(design * weight[:, None], np.asarray(target) * weight)
    return dict(zip(columns, fitted.tolist()))


def fit_atomic_volumes(
    formulas, volumes_per_atom, min_count: int = MIN_COUNT
) -> dict[str, dict[str, float]]:
    """Volumes per atom (Å^3) fitted to structures' volumes.

    One volume per (element, anion) pair that at least ``min_count``
    structures have, and one per element (key :data:`ANY`) for its rarer
    pairs, fitted together; an element with no rare pair gets the volume
    of a fit with one volume per element.

    Parameters
    ----------
    formulas : sequence of str or Composition
    volumes_per_atom : sequence of float
        The cell volume divided by the atoms in the cell (Å^3).
    min_count : int

    Returns
    -------
    dict
        anion (or :data:`ANY`) -> element -> Å^3 per atom.

    Raises
    ------
    ValueError
        When the lengths differ, a volume is not positive, or there are
        fewer structures than elements.
    """
    volumes = np.asarray(volumes_per_atom, float)
    amounts = [_amounts(f) for f in formulas]
    if len(amounts) != len(volumes):
        raise ValueError(
            f"{len(amounts)} formulas but {len(volumes)} volumes; give one "
            "volume per atom for each formula."
        )
    if not np.all(np.isfinite(volumes) & (volumes > 0)):
        raise ValueError("Every volume per atom must be positive.")
    fractions = [
        {e: n / sum(a.values()) for e, n in a.items()} for a in amounts
    ]
    elements = sorted({e for f in fractions for e in f})
    if len(fractions) < len(elements):
        raise ValueError(
            f"{len(fractions)} structures cannot fix the volumes of "
            f"{len(elements)} elements; give more structures."
        )
    anions = [anion(f) for f in fractions]
    counts = Counter((e, a) for f, a in zip(fractions, anions) for e in f)
    rows = [
        {(e, a if counts[e, a] >= min_count else ANY): x for e, x in f.items()}
        for f, a in zip(fractions, anions)
    ]
    pairs = sorted({p for row in rows for p in row})
    table = {}
    for (e, a), v in _nnls(rows, volumes, pairs).items():
        table.setdefault(a, {})[e] = v  # a 0 too: the fit's partners need it
    # elements seen only beside their frequent anions get their volume
    # for any partner from a fit of one volume per element
    overall = _nnls(fractions, volumes, elements)
    for e in elements:
        if e not in table.get(ANY, {}):
            table.setdefault(ANY, {})[e] = overall[e]
    return table


def write_atomic_volumes(table, path, source: str):
    """Write a table as :data:`TABLE` holds it (with where it came from)."""
    rounded = {
        a: {e: round(v, 3) for e, v in sorted(vols.items())}
        for a, vols in table.items()
    }
    Path(path).write_text(
        json.dumps(
            {"source": source, "units": "A^3 per atom", "volumes": rounded},
            indent=0,
        )
        + "\n"
    )


@lru_cache(maxsize=1)
def atomic_volumes() -> dict[str, dict[str, float]]:
    """The shipped table: anion (or "*") -> element -> Å^3 per atom."""
    return json.loads(TABLE.read_text())["volumes"]


@lru_cache(maxsize=None)
def _z_counts() -> dict[str, dict[int, int]]:
    counts = json.loads(Z_TABLE.read_text())["counts"]
    return {s: {int(z): n for z, n in c.items()} for s, c in counts.items()}


def formula_unit_prior(systems, z: int) -> float:
    """How often a conventional cell of the crystal ``systems`` (one name
    or several: "trigonal" and "hexagonal" share a lattice) holds ``z``
    formula units in the training split, with one count added to every
    Z up to 200 (cubic: Z = 4 for 67 %, 8 for 8 %, 10 never)."""
    if isinstance(systems, str):
        systems = (systems,)
    counts = _z_counts()
    seen = sum(counts.get(s, {}).get(int(z), 0) for s in systems)
    total = sum(sum(counts.get(s, {}).values()) for s in systems)
    return (seen + 1) / (total + 200)


def formula_units_from_volume(
    composition, volume: float, table=None
) -> float | None:
    """Z ≈ V_cell / Σ_e n_e v_e for the reduced formula (not rounded),
    each v_e the element's volume beside the formula's anion where the
    ``table`` (default: the shipped one) has it, else its volume for any
    partner.

    None when an element has no volume in the table (or the formula's
    volumes sum to 0), so callers fall back on another estimate.
    """
    from diffpy_mlsolve.atoms import _reduced, parse_composition

    table = atomic_volumes() if table is None else table
    reduced = _reduced(parse_composition(composition))
    beside = table.get(anion(reduced), {})
    overall = table.get(ANY, {})
    if any(e not in beside and e not in overall for e in reduced):
        return None
    per_formula = sum(
        beside[e] * n if e in beside else overall[e] * n
        for e, n in reduced.items()
    )
    return float(volume) / per_formula if per_formula > 0 else None
