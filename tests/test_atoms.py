"""Peak picking on densities: periodic, sub-voxel, torch = scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

import diffpy_mlsolve as ms
from diffpy_mlsolve.atoms import find_peaks, find_peaks_skimage
from diffpy_mlsolve.physics.lattice import lattice_matrix
from diffpy_mlsolve.structures import as_crystal


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
