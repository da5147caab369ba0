"""Trial structures from a space group's Wyckoff positions.

Where no density shows a group, a large cubic cell has nothing for the
orbit search to start from, and the site search in P1 ends in an overfit
(so failed all eight cubic cells of 40-56 atoms drawn from the test
split, from 3 nm G(r)s; Sr2YSbO6's network maps agree with no group).
A crystallographer then does what FOX or a Wyckoff enumeration does:
fill the cell's contents with whole Wyckoff orbits of the groups the
lattice allows, draw the free coordinates, and keep what fits the data.

:func:`wyckoff_trials` does that for cubic cells: the cubic groups (of
one lattice centring, or all), highest order first; for each, the ways to
fill every element's count with at most :data:`MAX_SITES` orbits (pyxtal
lists them); for each way, :data:`DRAWS` draws of the free coordinates,
scored by the profile (or G(r)) Rwp and a clash penalty.  The
:data:`KEEP` best are left for the caller to refine
(:mod:`~diffpy_mlsolve.ranking`, through
:func:`~diffpy_mlsolve.sitesearch.refine_positions`).  It reads nothing
but the data's scorer, the cell and its contents.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["cubic_groups", "is_cubic", "wyckoff_trials"]

#: Orbits per element at most in a trial (simple structures first).
MAX_SITES = 3
#: Ways to fill the counts tried per group, fewest orbits first.
MAX_COMBINATIONS = 16
#: Draws of the free coordinates per way, each scored.
DRAWS = 6
#: Trials kept (lowest score first) for refinement.
KEEP = 8


def is_cubic(lattice, tol: float = 1e-4) -> bool:
    """Whether a cell (a, b, c, α, β, γ) is metrically cubic."""
    a, b, c, al, be, ga = (float(v) for v in lattice)
    return (
        abs(a - b) <= tol * a
        and abs(a - c) <= tol * a
        and all(abs(x - 90.0) <= 1e-3 for x in (al, be, ga))
    )


@lru_cache(maxsize=None)
def _group(number: int):
    from pyxtal.symmetry import Group

    return Group(number)


def cubic_groups(centring: str | None = None) -> list[int]:
    """Cubic space groups (195-230) of a lattice centring ("P", "F",
    "I"; all for None), highest order first, then by number."""
    out = []
    for number in range(195, 231):
        g = _group(number)
        if centring is None or g.symbol[0] == centring:
            out.append((-len(g.Wyckoff_positions[0].ops), number))
    return [n for _, n in sorted(out)]


def _combinations(number: int, counts: tuple) -> list:
    """Up to :data:`MAX_COMBINATIONS` ways to fill ``counts`` with the
    group's Wyckoff orbits, fewest orbits first: each a list, per
    element, of Wyckoff labels ("24e")."""
    g = _group(number)
    combos, _, _ = g.list_wyckoff_combinations(
        list(counts), numWp=(None, MAX_SITES * len(counts)), Nmax=100000
    )
    combos = [
        c
        for c in combos
        if all(len(labels) <= MAX_SITES for labels in c)
        and _distinct_fixed(g, c)
    ]
    combos.sort(key=lambda c: sum(len(labels) for labels in c))
    return combos[:MAX_COMBINATIONS]


def _distinct_fixed(g, combo) -> bool:
    """A position without free coordinates is used once at most."""
    fixed = [
        label
        for labels in combo
        for label in labels
        if g.get_wyckoff_position(label).get_dof() == 0
    ]
    return len(fixed) == len(set(fixed))


def _trial(number, combo, elements, rng):
    """(frac (n, 3), elements) of one draw of a way to fill the cell."""
    g = _group(number)
    frac, els = [], []
    for element, labels in zip(elements, combo):
        for label in labels:
            wp = g.get_wyckoff_position(label)
            point = wp.ops[0].operate(rng.random(3))
            orbit = np.mod(np.asarray(wp.apply_ops(point), float), 1.0)
            frac.append(orbit)
            els += [element] * len(orbit)
    return np.vstack(frac), els


def _clash(frac, elements, matrix, limit) -> float:
    """How far (as a fraction of its limit) the closest pair is inside
    its limit; 0 when none is."""
    from diffpy_mlsolve.atoms import _pair_distances

    dist = _pair_distances(frac, matrix)
    lim = np.array([[limit[a][b] for b in elements] for a in elements])
    np.fill_diagonal(dist, math.inf)
    return float(max(0.0, 1.0 - (dist / lim).min()))


def wyckoff_trials(
    scorer,
    contents,
    lattice,
    centring: str | None = None,
    *,
    seed: int = 0,
    min_distance: float = 0.9,
    keep: int = KEEP,
) -> list:
    """The best-scoring fillings of a cubic cell with Wyckoff orbits.

    Parameters
    ----------
    scorer : ProfileScorer or PDFScorer
        The data, in ``lattice``.
    contents : Mapping
        Element -> atoms in the cell.
    lattice : (a, b, c, α, β, γ)
        A cubic cell (the conventional one).
    centring : str, optional
        The lattice centring the data show ("P", "F", "I"); every cubic
        group for None.
    seed : int
        Seeds the draws of the free coordinates.
    min_distance : float
        With the atomic radii, the clash limit
        (:func:`~diffpy_mlsolve.atoms.contact_limits`).
    keep : int
        Trials returned.

    Returns
    -------
    list of (score, CrystalArrays, group number)
        Lowest score (Rwp plus the clash) first; empty for a cell that is
        not cubic or contents no cubic group's orbits can hold.
    """
    from diffpy_mlsolve.atoms import _lattice_matrix, contact_limits
    from diffpy_mlsolve.errors import MLSolveError
    from diffpy_mlsolve.structures import CrystalArrays, _symbol_to_z

    if not is_cubic(lattice):
        return []
    elements = sorted(contents)
    counts = tuple(int(contents[e]) for e in elements)
    natoms = sum(counts)
    matrix = _lattice_matrix(lattice)
    limit = contact_limits(elements, min_distance)
    rng = np.random.default_rng(seed)
    formula = "".join(f"{e}{n}" for e, n in zip(elements, counts))
    scored = []  # the best draw of each way
    for number in cubic_groups(centring):
        for combo in _combinations(number, counts):
            best = None
            for _ in range(DRAWS):
                frac, els = _trial(number, combo, elements, rng)
                if len(frac) != natoms:
                    continue  # positions that coincide
                crystal = CrystalArrays(
                    np.asarray(lattice, float),
                    frac,
                    np.array([_symbol_to_z(e, e) for e in els]),
                    np.ones(natoms),
                    np.ones(natoms),
                    formula,
                )
                try:
                    r = scorer.rwp(crystal)
                except MLSolveError:
                    continue
                score = r + _clash(frac, els, matrix, limit)
                if best is None or score < best[0]:
                    best = (score, crystal, number)
            if best is not None:
                scored.append(best)
    scored.sort(key=lambda t: t[0])
    return scored[:keep]
