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
    """Five cubic rows have at least 20 atoms; two are drawn, the same
    two for the same seed and others for another seed."""

    def draw(seed):
        done, out = _sample(
            tmp_path,
            *("--systems", "cubic", "--min-atoms", "20", "--n", "2"),
            *("--seed", str(seed)),
        )
        assert done.returncode == 0, done.stderr
        rows = pd.read_csv(out)
        assert set(rows["crystal_system"]) == {"cubic"}
        assert rows["natoms_conventional"].between(20, 184).all()
        return list(rows["material_id"])

    first = draw(1)
    assert len(first) == 2
    assert draw(1) == first
    assert draw(2) != first
    done, out = _sample(tmp_path, "--max-atoms", "16", "--n", "5")
    assert set(pd.read_csv(out)["natoms_conventional"]) == {2, 5, 8, 10, 16}


def test_sample_table_refuses_more_rows_than_pass(tmp_path):
    done, out = _sample(tmp_path, "--min-atoms", "100", "--n", "2")
    assert done.returncode != 0
    assert "--n must be 1 to 1" in done.stderr
    assert not out.exists()
