"""Where the benchmarks find the structure tables: ../shared/data/structures
beside the repository (never copied into it)."""

from pathlib import Path

STRUCTURES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"
)
