"""The command-line helpers in tools/."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _table(path):
    pd.DataFrame(
        {
            "material_id": [f"mp-{i}" for i in range(12)],
            "formula": ["X"] * 12,
            "crystal_system": ["cubic"] * 8 + ["trigonal"] * 4,
            "natoms_conventional": [2, 8, 16, 24, 28, 40, 56, 184]
            + [5, 10, 30, 60],
        }
    ).to_csv(path, index=False)


def _sample(tmp_path, *args):
    table = tmp_path / "table.csv"
    if not table.exists():
        _table(table)
    out = tmp_path / f"sample{len(list(tmp_path.iterdir()))}.csv"
    done = subprocess.run(
        [sys.executable, str(TOOLS / "sample_table.py"), str(table)]
        + list(args)
        + ["--out", str(out)],
        capture_output=True,
        text=True,
    )
    return done, out


def test_sample_table_draws_within_the_bounds_and_is_seeded(tmp_path):
    args = ("--systems", "cubic", "--min-atoms", "29", "--n", "3")
    done, out = _sample(tmp_path, *args, "--seed", "1")
    assert done.returncode == 0, done.stderr
    first = pd.read_csv(out)
    assert len(first) == 3
    assert set(first["crystal_system"]) == {"cubic"}
    assert first["natoms_conventional"].between(29, 184).all()
    again, out2 = _sample(tmp_path, *args, "--seed", "1")
    assert list(pd.read_csv(out2)["material_id"]) == list(first["material_id"])
    done, out = _sample(tmp_path, "--max-atoms", "16", "--n", "5")
    assert set(pd.read_csv(out)["natoms_conventional"]) == {2, 5, 8, 10, 16}


def test_sample_table_refuses_more_rows_than_pass(tmp_path):
    done, out = _sample(tmp_path, "--min-atoms", "100", "--n", "2")
    assert done.returncode != 0
    assert "--n must be 1 to 1" in done.stderr
    assert not out.exists()
