"""How often the true Z is among the formula units the Wyckoff trials try.

    .venv/bin/python benchmarks/bench_formula_units.py \
        [--split val] [--every 3] [--tolerances 0.3,0.35,0.4,0.5,none]

For each structure of ../shared/data/structures/<split>.csv.gz (every
``--every``-th), the options of
:func:`~diffpy_mlsolve.atoms.formula_unit_options` as the Wyckoff
candidates ask for them (volume estimate ± 2, ordered by the crystal
system's prior, no density) at each tolerance in ln Z, and the fraction
of structures whose true Z (atoms of the conventional cell over the
reduced formula's) is first, among the first 2 and the first 3
(``ranking.WYCKOFF_Z``), or among them at all.
"""

from __future__ import annotations

import argparse

import numpy as np
from _shared import STRUCTURES

from diffpy_mlsolve.atoms import (
    _lattice_matrix,
    _reduced,
    formula_unit_options,
    parse_composition,
)
from diffpy_mlsolve.data.sources import open_source


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--tolerances", default="0.3,0.35,0.4,0.5,none")
    args = ap.parse_args()
    tols = [
        None if t == "none" else float(t) for t in args.tolerances.split(",")
    ]
    ranks = {t: [] for t in tols}
    for k, rec in enumerate(open_source(STRUCTURES / f"{args.split}.csv.gz")):
        if k % args.every:
            continue
        volume = abs(np.linalg.det(_lattice_matrix(rec.crystal.lattice)))
        atoms = sum(_reduced(parse_composition(rec.formula)).values())
        z = round(rec.crystal.natoms / atoms)
        systems = (
            ("trigonal", "hexagonal")
            if rec.crystal_system in ("trigonal", "hexagonal")
            else rec.crystal_system
        )
        for t in tols:
            options = formula_unit_options(
                rec.formula, volume, spread=2, systems=systems, tolerance=t
            )
            ranks[t].append(options.index(z) if z in options else np.inf)
    n = len(ranks[tols[0]])
    print(f"{args.split}, every {args.every}: {n} structures")
    print(f"{'tolerance':>9s} {'first':>7s} {'first 2':>7s} {'first 3':>7s}")
    for t in tols:
        r = np.array(ranks[t])
        print(
            f"{'none' if t is None else t:>9} "
            + " ".join(f"{100 * np.mean(r < m):6.2f}%" for m in (1, 2, 3))
        )


if __name__ == "__main__":
    main()
