"""Cost of scoring the random draws of the Wyckoff trials, as shipped
(all of a way's draws at once) and as it was (one structure at a time).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_wyckoff_draws.py \
        [--formulas Al2O3,CaAu2,Tl2GeS3] [--draws 1000]

For each test structure of ../shared/data/structures/test.csv.gz named
(the first of each formula), the evaluation's realistic powder pattern
(``mlsolve evaluate --atoms``, seed 0, its index in the split) is
extracted in the true cell and scored by a
:class:`~diffpy_mlsolve.sitesearch.ProfileScorer`.  ``--draws`` random
fillings of the true atoms (uniform fractional coordinates) are scored
"now" by :func:`~diffpy_mlsolve.wyckoff._draw_rwp` (structure factors of
all draws from per-axis phase tables, one ``rwp_of_many``; B = 1, no B
shift) and "before" by ``ProfileScorer.rwp`` on each (its own
reflection list and the best B shift), as the trials did until this
benchmark was written.  Both run back to back in this process; the best
of three is printed, and the largest difference of the Rwp the two give.
"""

from __future__ import annotations

import argparse

import numpy as np
from _shared import best_of, test_structures

from diffpy_mlsolve.evaluation_atoms import _pattern
from diffpy_mlsolve.phasing import extract_intensities
from diffpy_mlsolve.sitesearch import scorer_for
from diffpy_mlsolve.structures import (
    CrystalArrays,
    _z_to_symbol,
    as_crystal,
)
from diffpy_mlsolve.wyckoff import _draw_rwp


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formulas", default="Al2O3,CaAu2,Tl2GeS3")
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    wanted = args.formulas.split(",")
    records = test_structures(wanted)
    print(
        f"{'structure':12s} {'atoms':>5s} {'reflections':>11s} "
        f"{'before s':>9s} {'now s':>7s} {'ratio':>6s} {'max |ΔRwp|':>10s}"
    )
    for formula in wanted:
        i, rec = records[formula]
        lattice = tuple(float(v) for v in rec.crystal.lattice)
        scorer = scorer_for(extract_intensities(_pattern(rec, 0, i), lattice))
        crystal = as_crystal(rec.crystal, standardize=False)
        n = crystal.natoms
        els = [_z_to_symbol(int(z)) for z in crystal.numbers]
        fracs = np.random.default_rng(0).random((args.draws, n, 3))

        def before():
            return np.array(
                [
                    scorer.rwp(
                        CrystalArrays(
                            crystal.lattice,
                            f,
                            crystal.numbers,
                            np.ones(n),
                            np.ones(n),
                            formula,
                        )
                    )
                    for f in fracs
                ]
            )

        t_before, r_before = best_of(before, 3)
        t_now, r_now = best_of(lambda: _draw_rwp(scorer, fracs, els), 3)
        print(
            f"{formula:12s} {n:5d} {len(scorer.hkl):11d} {t_before:9.2f} "
            f"{t_now:7.2f} {t_before / t_now:6.1f} "
            f"{np.abs(r_before - r_now).max():10.4f}"
        )


if __name__ == "__main__":
    main()
