"""How often the Wyckoff trials can hold a structure at all.

    .venv/bin/python benchmarks/bench_wyckoff_coverage.py [--split test] \
        [--every 1]

For each structure of ../shared/data/structures/<split>.csv.gz (every
``--every``-th), in its conventional standard cell (spglib): whether its
space group is one the Wyckoff trials search for its lattice
(:data:`~diffpy_mlsolve.wyckoff.SYSTEM_GROUPS`: not P1, whose sites are
the P1 search's) and whether its own Wyckoff way (the orbits of each
element) is among the ways :func:`~diffpy_mlsolve.wyckoff._combinations`
enumerates for that group and the cell's contents (at most
:data:`~diffpy_mlsolve.wyckoff.MAX_SITES` orbits per element, or the
fewest that can hold it; :data:`~diffpy_mlsolve.wyckoff.MAX_COMBINATIONS`
ways), before (the first 16, every way) and now (one of each set of
ways the group's normalizer relates).  A way not enumerated is not drawn,
though a refinement may still reach it from another (Tl5Te3's came out
of the trials at 16 ways: benchmarks/bench_wyckoff_ways.py); one that is
can come out if its group's setting is tried (the extinctions and the
prior decide, not measured here) and the search finds the coordinates.
Printed by crystal system and by atoms in the cell.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import spglib
from _shared import STRUCTURES

import diffpy_mlsolve.wyckoff as wyckoff
from diffpy_mlsolve.atoms import _lattice_matrix
from diffpy_mlsolve.data.sources import open_source
from diffpy_mlsolve.structures import _z_to_symbol
from diffpy_mlsolve.wyckoff import (
    SYSTEM_GROUPS,
    _canonical,
    _combinations,
    _group,
    lattice_system,
)

BINS = ((1, 16), (17, 32), (33, 64), (65, 10**6))
#: The ways per group tried before the normalizer merged related ways.
BEFORE = 16


def true_way(crystal):
    """(group number, lattice parameters, elements, counts, way) of the
    conventional standard cell: ``way`` per element (sorted) the sorted
    labels ("16n") of its orbits."""
    cell = (
        _lattice_matrix(crystal.lattice),
        np.asarray(crystal.frac, float),
        np.asarray(crystal.numbers, int),
    )
    std = spglib.get_symmetry_dataset(cell, symprec=0.01)
    conv = (std.std_lattice, std.std_positions, std.std_types)
    data = spglib.get_symmetry_dataset(conv, symprec=0.01)
    orbits = collections.defaultdict(list)
    for i, rep in enumerate(data.equivalent_atoms):
        orbits[int(rep)].append(i)
    per = collections.defaultdict(list)
    for rep, members in orbits.items():
        element = _z_to_symbol(int(conv[2][rep]))
        per[element].append(f"{len(members)}{data.wyckoffs[rep]}")
    elements = sorted(per)
    counts = tuple(sum(int(label[:-1]) for label in per[e]) for e in elements)
    way = [sorted(per[e]) for e in elements]
    matrix = np.asarray(data.std_lattice, float)
    lengths = np.linalg.norm(matrix, axis=1)
    angles = [
        np.degrees(
            np.arccos(matrix[i] @ matrix[j] / (lengths[i] * lengths[j]))
        )
        for i, j in ((1, 2), (0, 2), (0, 1))
    ]
    return int(data.number), (*lengths, *angles), elements, counts, way


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--every", type=int, default=1)
    args = ap.parse_args()
    # (system, atoms, group searched, way enumerated: every way, distinct)
    rows = []
    now = wyckoff.MAX_COMBINATIONS
    unknown = 0  # labels not in the group's table (a setting mismatch)
    for k, rec in enumerate(open_source(STRUCTURES / f"{args.split}.csv.gz")):
        if k % args.every:
            continue
        number, lattice, elements, counts, way = true_way(rec.crystal)
        system = lattice_system(lattice)
        searched = number in SYSTEM_GROUPS[system]
        enumerated = (False, False)
        if searched:
            labels = {
                f"{wp.multiplicity}{wp.letter}"
                for wp in _group(number).Wyckoff_positions
            }
            if not all(lab in labels for e in way for lab in e):
                unknown += 1
            own = _canonical(number, way)
            wyckoff.MAX_COMBINATIONS = BEFORE
            before = _combinations(number, counts, distinct=False)
            wyckoff.MAX_COMBINATIONS = now
            enumerated = tuple(
                own in {_canonical(number, c) for c in combos}
                for combos in (before, _combinations(number, counts))
            )
        rows.append((rec.crystal_system, sum(counts), searched, *enumerated))
    n = len(rows)
    print(
        f"{args.split}, every {args.every}: {n} structures "
        f"({unknown} with labels outside the group's table)"
    )
    print(
        f"{'':18s} {'n':>5s} {'group searched':>15s} "
        f"{'way enumerated: before':>23s} {'now':>6s}"
    )
    print(
        f"(before: the first {BEFORE} ways of each group; now: the first "
        f"{now}, one of each set the normalizer relates)"
    )

    def line(name, sel):
        m = len(sel)
        if m:
            pct = [100 * sum(r[k] for r in sel) / m for k in (2, 3, 4)]
            print(
                f"{name:18s} {m:5d} {pct[0]:14.1f}% {pct[1]:22.1f}% "
                f"{pct[2]:5.1f}%"
            )

    for system in sorted({r[0] for r in rows}):
        line(system, [r for r in rows if r[0] == system])
    for lo, hi in BINS:
        name = f"{lo}-{hi} atoms" if hi < 10**6 else f"over {lo - 1} atoms"
        line(name, [r for r in rows if lo <= r[1] <= hi])
    line("all", rows)


if __name__ == "__main__":
    main()
