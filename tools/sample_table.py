"""Write a seeded random sample of a structure table, for evaluations that
cannot afford the whole split (``mlsolve evaluate --limit N`` takes the
first N rows, which are not a random draw).

    .venv/bin/python tools/sample_table.py \
        ../shared/data/structures/test.csv.gz --systems cubic --n 15 \
        --seed 0 --out /tmp/cubic_random15.csv.gz

``--min-atoms`` and ``--max-atoms`` bound the atoms per conventional cell
(say so with any figure measured on such a sample).  Rows keep the
table's columns and their order in it; the sample stays outside the
repository (the structures are not ours to commit).  Prints the ids,
formulas and atoms per conventional cell drawn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("table", help="a csv or csv.gz structure table")
    ap.add_argument("--systems", help="crystal systems, comma-separated")
    ap.add_argument(
        "--min-atoms", type=int, help="at least this many atoms per cell"
    )
    ap.add_argument(
        "--max-atoms", type=int, help="at most this many atoms per cell"
    )
    ap.add_argument("--n", type=int, required=True, help="rows to draw")
    ap.add_argument("--seed", type=int, default=0, help="random seed (0)")
    ap.add_argument("--out", required=True, help="the sample table to write")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        sys.exit(f"{out} exists; please give a new path.")
    df = pd.read_csv(args.table, dtype={"material_id": str})
    if args.systems:
        if "crystal_system" not in df.columns:
            sys.exit("The table has no crystal_system column to filter on.")
        df = df[df["crystal_system"].isin(args.systems.split(","))]
    if args.min_atoms is not None or args.max_atoms is not None:
        if "natoms_conventional" not in df.columns:
            sys.exit("The table has no natoms_conventional column.")
        n = df["natoms_conventional"]
        low = -np.inf if args.min_atoms is None else args.min_atoms
        high = np.inf if args.max_atoms is None else args.max_atoms
        df = df[(n >= low) & (n <= high)]
    if not 0 < args.n <= len(df):
        sys.exit(f"--n must be 1 to {len(df)} (the rows that pass).")
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(df), size=args.n, replace=False))
    sample = df.iloc[pick]
    sample.to_csv(out, index=False)
    cols = [
        c
        for c in ("material_id", "formula", "natoms_conventional")
        if c in sample.columns
    ]
    print(sample[cols].to_string(index=False))
    print(f"wrote {len(sample)} of {len(df)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
