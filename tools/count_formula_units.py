"""Count the formula units per conventional cell (Z) of each crystal
system, and the space groups, on the training split: the priors of the Z
and of the groups the Wyckoff trials try.

    .venv/bin/python tools/count_formula_units.py [../shared/data/structures]

Writes diffpy_mlsolve/data/formula_units.json and
diffpy_mlsolve/data/space_groups.json.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition

from diffpy_mlsolve.volumes import Z_TABLE
from diffpy_mlsolve.wyckoff import GROUP_TABLE

COLUMNS = ["formula", "crystal_system", "natoms_conventional", "spacegroup"]


def main(folder):
    train = pd.read_csv(Path(folder) / "train.csv.gz", usecols=COLUMNS)
    source = (
        f"count_formula_units on {len(train)} structures of train.csv.gz "
        "(conventional cells)"
    )
    counts: dict[str, Counter] = {}
    for row in train.itertuples(index=False):
        reduced = Composition(row.formula).reduced_composition.num_atoms
        z = row.natoms_conventional / reduced
        if abs(z - round(z)) > 1e-6:
            continue
        counts.setdefault(row.crystal_system, Counter())[int(round(z))] += 1
    table = {
        "source": source,
        "counts": {
            system: {str(z): n for z, n in sorted(c.items())}
            for system, c in sorted(counts.items())
        },
    }
    Z_TABLE.write_text(json.dumps(table, indent=0) + "\n")
    for system, c in sorted(counts.items()):
        top = ", ".join(f"Z={z}: {n}" for z, n in c.most_common(6))
        print(f"{system}: {sum(c.values())} cells; {top}")
    groups = Counter(int(n) for n in train.spacegroup)
    GROUP_TABLE.write_text(
        json.dumps(
            {
                "source": source,
                "counts": {str(n): c for n, c in sorted(groups.items())},
            },
            indent=0,
        )
        + "\n"
    )
    top = ", ".join(f"{n}: {c}" for n, c in groups.most_common(8))
    print(f"space groups: {len(groups)} seen; {top}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/structures")
