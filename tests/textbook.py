"""Textbook structures written out here, so tests never need ../shared."""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Lattice, Structure

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"


def _sg(sg, lattice, species, coords):
    return Structure.from_spacegroup(sg, lattice, species, coords)


def textbook() -> dict[str, Structure]:
    """Named structures with their standard settings (ICSD-like values)."""
    hexa = Lattice.hexagonal
    return {
        "NaCl": _sg(
            "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]
        ),
        "CsCl": _sg(
            "Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3]
        ),
        "CaF2": _sg(
            "Fm-3m", Lattice.cubic(5.463), ["Ca", "F"], [[0, 0, 0], [0.25] * 3]
        ),
        "ZnS": _sg(
            "F-43m", Lattice.cubic(5.41), ["Zn", "S"], [[0, 0, 0], [0.25] * 3]
        ),
        "SrTiO3": _sg(
            "Pm-3m",
            Lattice.cubic(3.905),
            ["Sr", "Ti", "O"],
            [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0]],
        ),
        "Al2O3": _sg(
            "R-3c",
            hexa(4.759, 12.991),
            ["Al", "O"],
            [[0, 0, 0.3523], [0.3064, 0, 0.25]],
        ),
        "Bi2Se3": _sg(
            "R-3m",
            hexa(4.143, 28.636),
            ["Bi", "Se", "Se"],
            [[0, 0, 0.4008], [0, 0, 0], [0, 0, 0.2117]],
        ),
        "BaTiO3": _sg(
            "P4mm",
            Lattice.tetragonal(3.992, 4.036),
            ["Ba", "Ti", "O", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.512], [0.5, 0.5, 0.023], [0.5, 0, 0.486]],
        ),
        "TiO2": _sg(
            "P4_2/mnm",
            Lattice.tetragonal(4.594, 2.959),
            ["Ti", "O"],
            [[0, 0, 0], [0.305, 0.305, 0]],
        ),
    }


def real_structures(
    n: int, split: str = "test"
) -> list[tuple[str, Structure]]:
    """The first ``n`` rows of ../shared's table, or [] when it is absent."""
    path = SHARED / f"{split}.csv.gz"
    if not path.is_file():
        return []
    import warnings

    import pandas as pd

    table = pd.read_csv(path, nrows=n)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mid, cif in zip(table.material_id, table.cif):
            out.append((mid, Structure.from_str(cif, fmt="cif")))
    return out


def measured_pxrd(truth, tth_range=(10, 120), **shape):
    """(a broadened Cu Kα pattern of ``truth``, 10-120° unless told, 50
    points a degree; its extracted reflections): the data the
    site-search tests score against."""
    from diffpy_mlsolve.phasing import extract_intensities
    from diffpy_mlsolve.simulate import simulate_pxrd

    pattern = simulate_pxrd(
        truth,
        "CuKa",
        tth_range=tth_range,
        npoints=int(round(50 * (tth_range[1] - tth_range[0]))),
        fwhm=0.05,
        eta=0.3,
        crystallite_size=250.0,
        counts=1e5,
        seed=3,
        **shape,
    )
    return pattern, extract_intensities(pattern, truth.lattice)
