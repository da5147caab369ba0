"""Which ways the Wyckoff trials anneal: the brief-annealing screen against
the rule it replaced.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_wyckoff_screen.py \
        [--formulas Ba5P4,NaFePO4,Tl2GeS3] [--table T.csv.gz --indices 1,7]

For each test structure of ../shared/data/structures/test.csv.gz named
(the first of each formula), or each row of ``--indices`` of a table
(the random samples of ``tools/sample_table.py``), the evaluation's
realistic powder pattern (``mlsolve evaluate --atoms``, seed 0, its
index in the table: the same data as ``--skip i --limit i+1``) is
extracted in the true cell and :func:`~diffpy_mlsolve.wyckoff.wyckoff_trials`
fills the true contents, every group the extinctions allow, annealing
where nothing comes within :data:`~diffpy_mlsolve.ranking.ANNEAL_FIT`
times the floor (as the solver calls it):

- "now": :func:`~diffpy_mlsolve.wyckoff._screened` picks the
  ``ANNEAL_WAYS`` ways to anneal: every way of the ``ANNEAL_SETTINGS``
  most likely settings and the best trials' ways, by a brief annealing;
- "before": the best trial's way and its setting's first, then the next
  trial's, two in all (``screened_before`` below), as until this
  benchmark was written.

The trials are then refined and ranked as the solver ranks them
(:func:`~diffpy_mlsolve.ranking._ranked_trial`: refined again, the
low-symmetry premium and the contact penalty).  Printed: the best's
profile Rwp over the floor, its group, whether it is the structure
(pymatgen's StructureMatcher at stol 0.5, angle_tol 10, ltol 0.3, as
``mlsolve evaluate``), the rank of the first trial that is (of the 8
kept), and the seconds.  The trials
never see the true structure; it is read only to give them its contents
and to judge their result.
"""

from __future__ import annotations

import argparse
import collections
import time

from _shared import test_structures

import diffpy_mlsolve.wyckoff as wyckoff
from diffpy_mlsolve.evaluation_atoms import _matcher, _pattern
from diffpy_mlsolve.phasing import extract_intensities
from diffpy_mlsolve.ranking import ANNEAL_FIT, _ranked_trial
from diffpy_mlsolve.sitesearch import scorer_for
from diffpy_mlsolve.structures import _z_to_symbol, to_pymatgen


def screened_before(ways, first, trials, matrix, limit, rng):
    """The rule before the screen: the best trial's way and its
    setting's first way, then the next trial's, two in all."""
    order = [j for t in trials for j in (t[3], first[t[3]])]
    return list(dict.fromkeys(order))[:2]


def run(scorer, contents, lattice, truth, rule):
    """(profile Rwp / floor, group, match, rank of the first match or
    None, seconds) of the best trial as the solver ranks them, the
    annealed ways picked by ``rule``."""
    real = wyckoff._screened
    wyckoff._screened = rule
    try:
        t0 = time.perf_counter()
        trials = wyckoff.wyckoff_trials(
            scorer, contents, lattice, fits=ANNEAL_FIT * scorer.floor
        )
        ranked = [_ranked_trial(scorer, sym) for _, sym, _ in trials]
        ranked = [t[:3] for t in ranked if t is not None]
        seconds = time.perf_counter() - t0
    finally:
        wyckoff._screened = real
    ranked.sort(key=lambda t: t[0])
    matcher = _matcher("loose")
    matches = [
        bool(matcher.fit(to_pymatgen(sym.to_crystal()), truth))
        for _, sym, _ in ranked
    ]
    rank = matches.index(True) + 1 if True in matches else None
    _, sym, prof = ranked[0]
    return prof / scorer.floor, sym.symbol, matches[0], rank, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formulas", default="Ba5P4,NaFePO4,Tl2GeS3")
    ap.add_argument("--table", help="a structure table (with --indices)")
    ap.add_argument("--indices", help="its rows, comma-separated")
    args = ap.parse_args()
    if args.table:
        from diffpy_mlsolve.data.sources import open_source

        rows = list(open_source(args.table))
        records = {
            f"{rows[i].formula}": (i, rows[i])
            for i in map(int, args.indices.split(","))
        }
        wanted = list(records)
    else:
        wanted = args.formulas.split(",")
        records = test_structures(wanted)
    print(
        f"{'structure':10s} {'group':>6s} {'atoms':>5s} {'rule':7s} "
        f"{'Rwp/floor':>9s} {'found':>10s} {'match':>5s} "
        f"{'1st match':>9s} {'seconds':>7s}"
    )
    for formula in wanted:
        i, rec = records[formula]
        lattice = tuple(float(v) for v in rec.crystal.lattice)
        scorer = scorer_for(extract_intensities(_pattern(rec, 0, i), lattice))
        contents = dict(
            collections.Counter(
                _z_to_symbol(int(z)) for z in rec.crystal.numbers
            )
        )
        truth = to_pymatgen(rec.crystal)
        for name, rule in (
            ("before", screened_before),
            ("now", wyckoff._screened),
        ):
            ratio, symbol, match, rank, seconds = run(
                scorer, contents, lattice, truth, rule
            )
            print(
                f"{formula:10s} {int(rec.spacegroup):6d} "
                f"{len(rec.crystal.numbers):5d} {name:7s} {ratio:9.2f} "
                f"{symbol:>10s} {str(match):>5s} {str(rank):>9s} "
                f"{seconds:7.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
