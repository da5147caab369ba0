"""Cost of the Wyckoff trials' annealing steps, as shipped and as it was.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_wyckoff_anneal.py \
        [--formulas Tl2GeS3,Al2O3,Ba5P4] [--steps 40]

For each test structure of ../shared/data/structures/test.csv.gz named
(the first of each formula), the evaluation's realistic powder pattern
(``mlsolve evaluate --atoms``, seed 0, its index in the split) is
extracted in the true cell, and the first way to fill the true contents
with orbits of the true group (standard axes) is annealed for
``--steps`` steps with 64 chains:

- "now": :func:`~diffpy_mlsolve.wyckoff._anneal` on the group's
  :class:`~diffpy_mlsolve.wyckoff._Symmetric` view (one reflection of
  each set the group's rotations relate; a step updates the structure
  factors of each chain's moved orbit only);
- "before": the loop as it was until this benchmark was written (every
  step scores the whole cell at every reflection, ``_draw_rwp`` on the
  scorer), kept below as ``anneal_before``.

Both draw the same random numbers, so their ends must agree: the largest
difference of their best Rwp is printed with the times (best of two,
back to back in this process).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from _shared import best_of, test_structures

from diffpy_mlsolve.evaluation_atoms import _pattern
from diffpy_mlsolve.phasing import extract_intensities
from diffpy_mlsolve.sitesearch import scorer_for
from diffpy_mlsolve.structures import _z_to_symbol
from diffpy_mlsolve.wyckoff import (
    ANNEAL_T,
    _anneal,
    _combinations,
    _draw_rwp,
    _place,
    _Symmetric,
    _way_map,
)

CHAINS = 64


def anneal_before(scorer, way, rng, chains, steps):
    """The annealing loop before the symmetric view and the per-orbit
    updates: the whole cell scored at all reflections each step."""
    mats, _, orbit, els = way
    free = np.flatnonzero(
        [np.abs(mats[orbit == k]).sum() > 0 for k in range(orbit.max() + 1)]
    )
    points = rng.random((chains, orbit.max() + 1, 3))
    rwp = _draw_rwp(scorer, _place(way, points), els)
    best, best_rwp = points.copy(), rwp.copy()
    rows = np.arange(chains)
    for step in range(steps):
        frac = step / steps
        temp = ANNEAL_T * (0.0005 / ANNEAL_T) ** frac
        sigma = 0.15 * (1 - frac) + 0.01
        moved = points.copy()
        k = free[rng.integers(free.size, size=chains)]
        moved[rows, k] += rng.normal(size=(chains, 3)) * sigma
        jump = rng.random(chains) < 0.1
        moved[jump, k[jump]] = rng.random((int(jump.sum()), 3))
        moved = np.mod(moved, 1.0)
        new = _draw_rwp(scorer, _place(way, moved), els)
        with np.errstate(over="ignore"):
            keep = (new < rwp) | (
                rng.random(chains) < np.exp(-(new - rwp) / temp)
            )
        points[keep], rwp[keep] = moved[keep], new[keep]
        better = rwp < best_rwp
        best[better], best_rwp[better] = points[better], rwp[better]
    return _place(way, best[np.argsort(best_rwp)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formulas", default="Tl2GeS3,Al2O3,Ba5P4")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    wanted = args.formulas.split(",")
    records = test_structures(wanted)
    print(
        f"{'structure':10s} {'group':>5s} {'atoms':>5s} {'refl.':>6s} "
        f"{'kept':>5s} {'before s':>9s} {'now s':>6s} {'ratio':>6s} "
        f"{'max |ΔRwp|':>10s}"
    )
    for formula in wanted:
        i, rec = records[formula]
        lattice = tuple(float(v) for v in rec.crystal.lattice)
        scorer = scorer_for(extract_intensities(_pattern(rec, 0, i), lattice))
        counts = collections.Counter(
            _z_to_symbol(int(z)) for z in rec.crystal.numbers
        )
        els = sorted(counts)
        number = int(rec.spacegroup)
        combo = _combinations(number, tuple(counts[e] for e in els))[0]
        way = _way_map(number, combo, els)
        view = _Symmetric(scorer, number)

        def run(fn, target):
            ends = fn(
                target, way, np.random.default_rng(0), CHAINS, args.steps
            )
            return _draw_rwp(scorer, ends, way[3])

        t_before, r_before = best_of(lambda: run(anneal_before, scorer), 2)
        t_now, r_now = best_of(lambda: run(_anneal, view), 2)
        print(
            f"{formula:10s} {number:5d} {len(way[3]):5d} "
            f"{len(scorer.hkl):6d} {len(view.hkl):5d} {t_before:9.2f} "
            f"{t_now:6.2f} {t_before / t_now:6.1f} "
            f"{np.abs(r_before - r_now).max():10.1e}"
        )


if __name__ == "__main__":
    main()
