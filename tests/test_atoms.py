"""Peak picking on densities: periodic, sub-voxel, torch = scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

import diffpy_mlsolve as ms
from diffpy_mlsolve.atoms import find_peaks, find_peaks_skimage
from diffpy_mlsolve.physics.lattice import lattice_matrix
from diffpy_mlsolve.structures import as_crystal, to_pymatgen


def _cart_distances(frac_a, frac_b, lattice):
    mat = lattice_matrix(torch.tensor(lattice)).numpy()
    d = (frac_a[:, None, :] - frac_b[None, :, :] + 0.5) % 1 - 0.5
    return np.linalg.norm(d @ mat, axis=-1)


@pytest.mark.parametrize(
    "name", ["NaCl", "CsCl", "ZnS", "SrTiO3", "TiO2", "BaTiO3", "CaF2"]
)
def test_every_atom_is_a_peak(textbook_structures, name):
    crystal = as_crystal(textbook_structures[name])
    rho = ms.electron_density(crystal, grid=48, dtype=torch.float64)
    peaks = find_peaks(rho.values, threshold=0.01)
    assert len(peaks) == crystal.natoms, name
    dist = _cart_distances(crystal.frac, peaks.frac, crystal.lattice)
    assert dist.min(1).max() < 0.1, name  # every atom has a peak near it
    assert dist.min(0).max() < 0.1, name  # every peak is an atom


def test_a_peak_across_the_cell_face_is_one_peak():
    s = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]])
    rho = ms.electron_density(s, grid=20, standardize=False)
    peaks = find_peaks(rho.values)
    assert len(peaks) == 1
    assert np.allclose((peaks.frac[0] + 0.5) % 1 - 0.5, 0, atol=1e-3)


def test_subvoxel_position_off_the_grid():
    x = np.array([0.3137, 0.7712, 0.0491])
    s = Structure(Lattice.cubic(6.0), ["Fe"], [x])
    rho = ms.electron_density(
        s, grid=24, standardize=False, biso=2.0, dtype=torch.float64
    )
    peaks = find_peaks(rho.values)
    assert len(peaks) == 1
    err = np.abs((peaks.frac[0] - x + 0.5) % 1 - 0.5) * 6.0
    assert err.max() < 0.03  # Å, against a voxel of 0.25 Å


def test_torch_and_skimage_agree(textbook_structures):
    for name in ("Al2O3", "BaTiO3", "Bi2Se3"):
        rho = ms.electron_density(textbook_structures[name], grid=40)
        a = find_peaks(rho.values, threshold=0.02)
        b = find_peaks_skimage(rho.values, threshold=0.02)
        assert len(a) == len(b), name
        np.testing.assert_allclose(a.height, b.height, rtol=1e-6)
        d = _cart_distances(a.frac, b.frac, rho.lattice)
        assert d.min(1).max() < 1e-4, name


def test_threshold_and_limit(textbook_structures):
    rho = ms.electron_density(textbook_structures["SrTiO3"], grid=32)
    everything = find_peaks(rho.values, threshold=0.01)
    heavy = find_peaks(rho.values, threshold=0.5)
    assert len(heavy) < len(everything)
    assert np.all(heavy.height >= 0.5 * everything.height[0])
    assert len(find_peaks(rho.values, threshold=0.01, max_peaks=2)) == 2
    assert np.all(np.diff(everything.height) <= 0)


# ------------------------------------------------ from a density to atoms
@pytest.mark.parametrize(
    "name", ["NaCl", "CsCl", "CaF2", "ZnS", "SrTiO3", "Al2O3", "TiO2"]
)
def test_structure_from_a_true_density(textbook_structures, name):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from diffpy_mlsolve.atoms import structure_from_density

    truth = textbook_structures[name]
    rho = ms.electron_density(truth, grid=40)
    # Z comes from the electron count; the formula is only the ratio
    sym, sites = structure_from_density(rho, truth.composition.reduced_formula)
    conventional = to_pymatgen(as_crystal(truth))
    assert sites.contents == {
        str(e): int(n) for e, n in conventional.composition.items()
    }
    assert sym.number == as_crystal(truth).spacegroup
    assert StructureMatcher().fit(sym.to_pymatgen(), truth)
    assert sites.misfit < 0.2  # heights as the elements expect


def test_contents_from_electrons_and_checks():
    from diffpy_mlsolve.atoms import cell_contents
    from diffpy_mlsolve.errors import StructureError

    v = 5.64**3
    assert cell_contents("NaCl", v, electrons=4 * 28.1) == {"Na": 4, "Cl": 4}
    # Z from the atomic volumes alone (3.95), or the estimate nearer a
    # whole number
    assert cell_contents("NaCl", v) == {"Na": 4, "Cl": 4}
    assert cell_contents("NaCl", v, electrons=2.6 * 28) == {"Na": 4, "Cl": 4}
    assert cell_contents("NaCl", v, electrons=4.98 * 28) == {"Na": 5, "Cl": 5}
    # ... within Z_TOLERANCE of the volume's: 2.02 is not (ln 3.95/2 = 0.68)
    assert cell_contents("NaCl", v, electrons=2.02 * 28) == {"Na": 4, "Cl": 4}
    assert cell_contents("Na4Cl4", v, formula_units=2) == {"Na": 2, "Cl": 2}
    with pytest.raises(StructureError, match="too many atoms"):
        cell_contents("NaCl", v, formula_units=40)
    with pytest.raises(StructureError, match="too few atoms"):
        cell_contents("NaCl", 50.0**3, formula_units=1)
    # no volume for Rn in the table and no density: Z must be given
    with pytest.raises(StructureError, match="formula_units"):
        cell_contents("RnF2", v)
    assert cell_contents("RnF2", v, electrons=4 * 104) == {"Rn": 4, "F": 8}
    with pytest.raises(StructureError, match="Cannot read"):
        cell_contents("Xx2O", v, formula_units=1)


def test_assignment_puts_heavy_atoms_on_high_peaks():
    from diffpy_mlsolve.atoms import Peaks, assign_sites

    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0.2, 0.2, 0.2]])
    # a weak spurious peak last; heights scaled by an unknown factor 3
    peaks = Peaks(frac, 3 * np.array([9.0, 60.0, 8.5, 1.0]))
    sites = assign_sites(peaks, {"O": 2, "Pb": 1}, {"O": 8.0, "Pb": 62.0})
    got = {tuple(f): e for e, f in zip(sites.elements, sites.frac)}
    assert got == {(0.5, 0.5, 0.5): "Pb", (0, 0, 0): "O", (0.5, 0, 0): "O"}


def test_too_few_peaks_is_an_error_not_a_wrong_structure():
    from diffpy_mlsolve.atoms import Peaks, assign_sites
    from diffpy_mlsolve.errors import StructureError

    peaks = Peaks(np.zeros((1, 3)), np.ones(1))
    with pytest.raises(StructureError, match="1 separate peaks for the 2"):
        assign_sites(peaks, {"Na": 1, "Cl": 1}, {"Na": 1.0, "Cl": 2.0})


def test_close_peaks_merge_into_the_higher():
    from diffpy_mlsolve.atoms import Peaks, merge_close

    frac = np.array([[0.0, 0, 0], [0.98, 0, 0], [0.5, 0.5, 0.5]])
    peaks = Peaks(frac, np.array([5.0, 4.0, 3.0]))  # 0.1 Å across a face
    merged = merge_close(peaks, (5, 5, 5, 90, 90, 90), 0.9)
    assert merged.height.tolist() == [5.0, 3.0]
