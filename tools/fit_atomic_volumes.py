"""Refit the shipped table of atomic volumes on the training split.

    .venv/bin/python tools/fit_atomic_volumes.py [../shared/data/structures]

Fits on train.csv.gz, writes diffpy_mlsolve/data/atomic_volumes.json, and
prints how often the rounded Z estimate is right on val and test.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from diffpy_mlsolve.volumes import (
    TABLE,
    atomic_volumes,
    fit_atomic_volumes,
    formula_units_from_volume,
    write_atomic_volumes,
)

COLUMNS = ["formula", "volume_per_atom", "natoms_conventional"]


def main(folder):
    folder = Path(folder)
    train = pd.read_csv(folder / "train.csv.gz", usecols=COLUMNS)
    volumes = fit_atomic_volumes(train.formula, train.volume_per_atom)
    write_atomic_volumes(
        volumes,
        TABLE,
        f"fit_atomic_volumes on {len(train)} structures of train.csv.gz",
    )
    atomic_volumes.cache_clear()  # the table just written
    pairs = sum(len(v) for k, v in volumes.items() if k != "*")
    print(
        f"{len(volumes['*'])} elements and {pairs} (element, anion) pairs "
        f"written to {TABLE}"
    )
    for split in ("val", "test"):
        table = pd.read_csv(folder / f"{split}.csv.gz", usecols=COLUMNS)
        true, est = [], []
        for row in table.itertuples(index=False):
            n = row.natoms_conventional
            true.append(n / Composition(row.formula).num_atoms)
            # the conventional cell's volume, as the solver is given it
            z = formula_units_from_volume(row.formula, row.volume_per_atom * n)
            est.append(np.nan if z is None else z)
        true, est = np.array(true), np.array(est)
        exact = np.mean(np.round(est) == true)
        near = np.mean(np.abs(np.round(est) - true) <= 1)
        rel = np.nanmedian(np.abs(est / true - 1))
        print(
            f"{split}: {len(true)} structures, rounded Z right "
            f"{100 * exact:.1f} %, within 1 {100 * near:.1f} %, median "
            f"relative error {100 * rel:.1f} %"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/structures")
