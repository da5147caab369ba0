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


def test_structures(formulas=None, systems=None) -> dict:
    """Formula -> (index among the test structures of ``systems``, all
    by default; the record) of the first of each formula (of those
    named, all by default): the index seeds the evaluation's data."""
    from diffpy_mlsolve.data.sources import open_source

    records = open_source(STRUCTURES / "test.csv.gz", systems=systems)
    found = {}
    for i, rec in enumerate(records):
        if formulas is None or rec.formula in formulas:
            found.setdefault(rec.formula, (i, rec))
    return found


def cubic_test_structures() -> dict:
    """:func:`test_structures` among the cubic ones."""
    return test_structures(systems=["cubic"])


def best_of(fn, repeat: int):
    """(best seconds, last result) of ``repeat`` calls of ``fn``."""
    import time

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
