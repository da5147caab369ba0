"""Whether more ways per group let the Wyckoff trials solve more cells.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_wyckoff_ways.py \
        [--every 10] [--max-atoms 32] [--limit 8] [--caps 16,32]

Test structures of ../shared/data/structures/test.csv.gz (every
``--every``-th, of at most ``--max-atoms`` atoms, not cubic, in a group
the trials search): those whose own Wyckoff way is among the ways of the
largest cap but not among those of the first (newly reachable), and as
many whose way is among the first's (already reachable, where more ways
dilute the draws), at most ``--limit`` of each.  For each, the
evaluation's realistic powder pattern (``mlsolve evaluate --atoms``,
seed 0, its index in the split) is extracted in the true cell and the
trials run on the true contents
(:func:`~diffpy_mlsolve.wyckoff.wyckoff_trials`, annealing as the
solver asks it, at ``ranking.ANNEAL_FIT`` times the floor) at each cap;
printed: whether the best trial matches the structure (StructureMatcher
0.5/10/0.3), its profile Rwp over the floor, and the seconds.  The
Wyckoff trials alone: the solver meets them only where no density gave a
structure of the cell's system that fits.
"""

from __future__ import annotations

import argparse
import time

from _shared import STRUCTURES
from bench_wyckoff_coverage import true_way
from pymatgen.analysis.structure_matcher import StructureMatcher

import diffpy_mlsolve.wyckoff as wyckoff
from diffpy_mlsolve.data.sources import open_source
from diffpy_mlsolve.evaluation_atoms import _pattern
from diffpy_mlsolve.phasing import extract_intensities
from diffpy_mlsolve.ranking import ANNEAL_FIT
from diffpy_mlsolve.sitesearch import scorer_for
from diffpy_mlsolve.structures import to_pymatgen


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--max-atoms", type=int, default=32)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--caps", default="16,32")
    args = ap.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    default = wyckoff.MAX_COMBINATIONS
    base = caps[0]
    picked = {"new": [], "reachable": []}
    for i, rec in enumerate(open_source(STRUCTURES / "test.csv.gz")):
        if i % args.every or rec.crystal_system == "cubic":
            continue
        number, lattice, elements, counts, way = true_way(rec.crystal)
        system = wyckoff.lattice_system(lattice)
        if sum(counts) > args.max_atoms:
            continue
        if number not in wyckoff.SYSTEM_GROUPS[system]:
            continue
        own = wyckoff._canonical(number, way)
        reach = []
        for cap in (base, max(caps)):
            wyckoff.MAX_COMBINATIONS = cap
            ways = wyckoff._combinations(number, counts)
            reach.append(own in {wyckoff._canonical(number, w) for w in ways})
        wyckoff.MAX_COMBINATIONS = default
        kind = "reachable" if reach[0] else "new" if reach[1] else None
        if kind and len(picked[kind]) < args.limit:
            picked[kind].append((i, rec, number, dict(zip(elements, counts))))
        if all(len(v) >= args.limit for v in picked.values()):
            break
    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    print(
        f"{'structure':16s} {'group':>5s} {'atoms':>5s} {'way':>9s} "
        + " ".join(f"{f'cap {c}: match Rwp/floor s':>28s}" for c in caps)
    )
    totals = {(k, c): 0 for k in picked for c in caps}
    for kind, rows in picked.items():
        for i, rec, number, contents in rows:
            lattice = tuple(float(v) for v in rec.crystal.lattice)
            scorer = scorer_for(
                extract_intensities(_pattern(rec, 0, i), lattice)
            )
            truth = to_pymatgen(rec.crystal)
            cells = []
            for cap in caps:
                wyckoff.MAX_COMBINATIONS = cap
                t0 = time.perf_counter()
                trials = wyckoff.wyckoff_trials(
                    scorer,
                    contents,
                    lattice,
                    fits=ANNEAL_FIT * scorer.floor,
                )
                dt = time.perf_counter() - t0
                wyckoff.MAX_COMBINATIONS = default
                if trials:
                    score, sym, _ = trials[0]
                    ok = matcher.fit(sym.to_pymatgen(), truth)
                    ratio = scorer.rwp(sym.to_crystal()) / scorer.floor
                else:
                    ok, ratio = False, float("nan")
                totals[kind, cap] += ok
                cells.append(
                    f"{'yes' if ok else 'no':>9s} {ratio:9.2f} {dt:8.1f}"
                )
            print(
                f"{rec.formula:16s} {number:5d} {sum(contents.values()):5d} "
                f"{kind:>9s} " + " ".join(cells),
                flush=True,
            )
    for kind, rows in picked.items():
        print(
            f"{kind}: {len(rows)} structures; matched "
            + ", ".join(f"cap {c}: {totals[kind, c]}" for c in caps)
        )


if __name__ == "__main__":
    main()
