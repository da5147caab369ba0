"""Where the benchmarks find the structure tables (../shared/data/structures
beside the repository, never copied into it), and the cubic test
structures they name by formula."""

from pathlib import Path

STRUCTURES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"
)


def add_formula_args(ap, default: str) -> None:
    """``--formulas`` (cubic test structures) and ``--diameter`` (nm)."""
    ap.add_argument(
        "--formulas", default=default, help="cubic test structures by formula"
    )
    ap.add_argument("--diameter", type=float, default=3.0, help="nm (3)")


def cubic_test_structures() -> dict:
    """Formula -> (index among the cubic test structures, the record) of
    the first of each formula (the index seeds the evaluation's G(r))."""
    from diffpy_mlsolve.data.sources import open_source

    records = open_source(STRUCTURES / "test.csv.gz", systems=["cubic"])
    return {r.formula: (i, r) for i, r in reversed(list(enumerate(records)))}
