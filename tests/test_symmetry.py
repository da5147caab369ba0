"""Space groups of atom sets: the tolerance ladder, Wyckoff snapping,
expansion and CIFs with their symmetry."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from diffpy_mlsolve.errors import StructureError
from diffpy_mlsolve.structures import CrystalArrays, as_crystal
from diffpy_mlsolve.symmetry import find_symmetry

GROUPS = {
    "NaCl": (225, ("4a", "4b")),
    "CsCl": (221, ("1a", "1b")),
    "CaF2": (225, ("4a", "8c")),
    "ZnS": (216, ("4a", "4c")),
    "SrTiO3": (221, ("1a", "1b", "3c")),
    "Al2O3": (167, ("12c", "18e")),
    "Bi2Se3": (166, ("3a", "6c", "6c")),
    "TiO2": (136, ("2a", "4f")),
}


def _shaken(crystal, sigma, seed=0):
    rng = np.random.default_rng(seed)
    shift = rng.normal(0, sigma, crystal.frac.shape) / crystal.lattice[:3]
    return CrystalArrays(
        crystal.lattice,
        np.mod(crystal.frac + shift, 1),
        crystal.numbers,
        crystal.occupancy,
        crystal.biso,
    )


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_group_found_and_sites_snapped(textbook_structures, name):
    truth = as_crystal(textbook_structures[name])
    sym = find_symmetry(_shaken(truth, 0.03))  # 0.03 Å errors per axis
    number, wyckoff = GROUPS[name]
    assert sym.number == number
    # letters depend on the origin chosen; multiplicities do not
    assert sorted(w[:-1] for w in sym.wyckoff) == sorted(
        w[:-1] for w in wyckoff
    )
    full = sym.to_crystal()
    assert full.natoms == truth.natoms
    assert sorted(full.numbers) == sorted(truth.numbers)
    # idealised: a tight tolerance finds the same group again
    assert find_symmetry(full, symprec=1e-4).number == number
    assert StructureMatcher().fit(sym.to_pymatgen(), textbook_structures[name])


def test_sites_found_at_a_loose_tolerance_sit_on_their_positions():
    """RuO2 sites refined in P1 (a few 0.01 Å off, axes c, a, a): the
    ladder finds P4_2/mnm at 0.03 Å, where spglib's standardized O lay off
    its 4f line, (0.3061, 0.3053, 0.0015), and expanded to 8 O.  Snapped
    onto the line, they expand to the 2 Ru and 4 O there are."""
    lattice = (3.1113, 4.4825, 4.4825, 90, 90, 90)
    frac = [
        [0.004347, 0.995115, 0.007781],
        [0.504345, 0.495042, 0.507855],
        [0.004484, 0.301969, 0.312223],
        [0.004436, 0.690665, 0.700984],
        [0.504423, 0.800663, 0.202159],
        [0.504391, 0.189682, 0.813438],
    ]
    crystal = CrystalArrays(
        np.array(lattice, float),
        np.array(frac),
        np.array([44, 44, 8, 8, 8, 8]),
        np.ones(6),
        np.ones(6),
    )
    sym = find_symmetry(crystal)
    assert sym.number == 136
    assert sorted(sym.to_crystal().numbers) == [8, 8, 8, 8, 44, 44]
    o = np.asarray(sym.frac)[list(sym.elements).index("O")]
    assert o[0] == pytest.approx(o[1], abs=1e-12) and o[2] in (0.0, 0.5)


def test_contents_are_kept_not_merged():
    # two atoms 0.5 Å apart: a loose tolerance would merge them
    s = Structure(
        [[4, 0, 0], [0, 4, 0], [0, 0, 4]],
        ["Cu", "Cu"],
        [[0, 0, 0], [0.125, 0, 0]],
    )
    sym = find_symmetry(s)
    assert len(sym.to_crystal().numbers) == 2


def test_one_tolerance_that_fails_is_an_error(textbook_structures):
    shaken = _shaken(as_crystal(textbook_structures["NaCl"]), 0.05)
    with pytest.raises(StructureError, match="No space group"):
        find_symmetry(shaken, symprec=1e-4, min_number=2)


def test_spglib_failing_on_its_standard_cell_falls_back(
    textbook_structures, monkeypatch
):
    """spglib can fail on its own standardized cell (seen on a trigonal
    candidate): the group of the next tolerance is taken, and when every
    one fails the error says why."""
    import diffpy_mlsolve.symmetry as symmetry

    shaken = _shaken(as_crystal(textbook_structures["NaCl"]), 0.05)
    assert find_symmetry(shaken, symprec=(0.01, 0.3)).number == 225
    real = symmetry._dataset
    state = {"standard": False}

    def fails_on_the_standard_cell_at_03(lattice, frac, numbers, symprec):
        # _from_dataset reads the standardized cell at 1e-4, then at the
        # tolerance that found it
        if symprec == 1e-4:
            state["standard"] = True
            return None
        if state["standard"]:
            state["standard"] = False
            if symprec == 0.3:
                return None
        return real(lattice, frac, numbers, symprec)

    monkeypatch.setattr(symmetry, "_dataset", fails_on_the_standard_cell_at_03)
    sym = find_symmetry(shaken, symprec=(0.01, 0.3))
    assert sym.symprec == 0.01 and sym.number < 225
    monkeypatch.setattr(symmetry, "_dataset", lambda *a: None)
    with pytest.raises(StructureError, match="No space group"):
        find_symmetry(shaken, symprec=(0.01, 0.3))


def test_cif_has_the_space_group_and_reads_back(textbook_structures, tmp_path):
    from diffpy.structure import loadStructure

    truth = textbook_structures["Al2O3"]
    sym = find_symmetry(as_crystal(truth))
    path = sym.write_cif(tmp_path / "al2o3.cif")
    text = path.read_text()
    assert "'R-3c'" in text and "_symmetry_Int_Tables_number   167" in text
    assert text.count("_atom_site_fract_x") == 1
    back = Structure.from_file(path)  # pymatgen expands the operations
    assert len(back) == 30
    assert StructureMatcher().fit(back, truth)
    assert len(loadStructure(str(path))) == 30  # and so does diffpy
