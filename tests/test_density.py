"""Electron densities: electron count, maxima, symmetry, the FFT sign, and
consistency with the powder pattern of the same structure factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from textbook import real_structures

import diffpy_mlsolve as ms
from diffpy_mlsolve.errors import PhysicsInputError
from diffpy_mlsolve.physics.density import (
    dstar_cutoff,
    structure_factors_from_density,
)
from diffpy_mlsolve.simulate import (
    crystal_structure_factors,
    crystal_tensors,
)
from diffpy_mlsolve.structures import as_crystal, to_pymatgen

F64 = torch.float64


@pytest.fixture(scope="module")
def structures(textbook_structures):
    return list(textbook_structures.items()) + real_structures(12)


def test_integrates_to_electron_count(structures):
    half = Structure(
        Lattice.cubic(4.0),
        [{"Fe": 0.5, "Co": 0.5}, {"O": 0.8}],
        [[0, 0, 0], [0.5, 0.5, 0.5]],
    )
    items = structures + [("FeCoO-partial", half)]
    dens = ms.electron_density([s for _, s in items], grid=40, dtype=F64)
    for (name, s), d in zip(items, dens):
        expected = as_crystal(s).electrons
        assert d.electrons == pytest.approx(expected, rel=5e-3), name
    assert dens[-1].electrons == pytest.approx(0.5 * 26 + 0.5 * 27 + 6.4)


def test_maxima_on_heavy_atoms(structures):
    for name, s in structures:
        d = ms.electron_density(s, grid=48, dtype=F64)
        crystal = as_crystal(s)
        heavy = crystal.frac[crystal.numbers == crystal.numbers.max()]
        n = d.values.shape[0]
        idx = np.unravel_index(np.argmax(d.values), d.values.shape)
        peak = np.array(idx) / n
        dist = np.abs((heavy - peak + 0.5) % 1 - 0.5) * n  # voxels
        assert dist.max(1).min() <= 1.0, name


def _grid_map(rot, trans, n):
    """Grid index -> index of the image under x' = R x + t (or None)."""
    shift = trans * n
    if not np.allclose(shift, np.round(shift), atol=1e-6):
        return None
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    new = (idx @ rot.T + np.round(shift).astype(int)) % n
    return tuple(new[..., i] for i in range(3))


@pytest.mark.parametrize(
    "name", ["NaCl", "ZnS", "Al2O3", "BaTiO3", "TiO2", "Bi2Se3"]
)
def test_symmetric_under_space_group(textbook_structures, name):
    n = 48
    d = ms.electron_density(textbook_structures[name], grid=n, dtype=F64)
    conv = to_pymatgen(as_crystal(textbook_structures[name]))
    ops = SpacegroupAnalyzer(conv, symprec=0.1).get_symmetry_operations()
    scale = np.abs(d.values).max()
    used = 0
    for op in ops:
        mapping = _grid_map(
            np.round(op.rotation_matrix).astype(int), op.translation_vector, n
        )
        if mapping is None:
            continue
        used += 1
        diff = np.abs(d.values[mapping] - d.values).max() / scale
        assert diff < 1e-5, f"{name}: {op.as_xyz_str()} off by {diff:.2e}"
    assert used == len(ops)


def test_polar_crystals_not_inverted(textbook_structures):
    """With the wrong FFT sign a polar crystal comes out inverted."""
    # ZnS: S at (1/4, 1/4, 1/4); the inverted site (3/4, 3/4, 3/4) is empty
    d = ms.electron_density(textbook_structures["ZnS"], grid=40, dtype=F64)
    assert d.values[10, 10, 10] > 20 * d.values[30, 30, 30]
    # BaTiO3 P4mm: Ti sits at z = 0.512, not at the inverted 0.488
    d = ms.electron_density(textbook_structures["BaTiO3"], grid=100)
    column = d.values[50, 50, 40:60]
    assert 40 + int(np.argmax(column)) == 51


def test_density_gives_back_its_structure_factors(textbook_structures):
    """FFT of the density returns F(h), phases included (ZnS is polar)."""
    crystal = as_crystal(textbook_structures["ZnS"])
    grid = 40
    d = ms.electron_density(crystal, grid=grid, smoothing=0.0, dtype=F64)
    batch = crystal_tensors([crystal], "cpu", F64)
    cut = float(dstar_cutoff(crystal.lattice, grid)[0])
    hkl, _, mask, fh = crystal_structure_factors(batch, cut)
    rho = torch.tensor(np.array(d.values))[None]
    back = structure_factors_from_density(
        rho, torch.tensor([crystal.volume], dtype=F64), hkl
    )
    err = (back - fh)[mask].abs().max() / fh.abs().max()
    assert err < 1e-8


@pytest.mark.parametrize("name", ["NaCl", "Al2O3", "Bi2Se3", "BaTiO3"])
def test_pattern_of_density_matches_pattern_of_structure(
    textbook_structures, name
):
    s = textbook_structures[name]
    d = ms.electron_density(s, grid=64, dtype=F64)
    lam = 1.540593
    top = min(
        150.0, 2 * np.degrees(np.arcsin(min(1, lam / (2 * d.resolution))))
    )
    kw = dict(tth_range=(5, top - 1), npoints=6000, fwhm=0.08, dtype=F64)
    from_density = ms.pattern_from_density(d, lam, **kw)
    crystal = as_crystal(s)
    from_structure = ms.simulate_pxrd(
        crystal.with_biso(crystal.biso + d.smoothing), lam, **kw
    )
    r = np.corrcoef(from_density.intensity, from_structure.intensity)[0, 1]
    assert r >= 0.999, f"{name}: r = {r:.6f}"


def test_pattern_is_differentiable_in_density(textbook_structures):
    d = ms.electron_density(textbook_structures["CsCl"], grid=12, dtype=F64)
    cell = torch.tensor(d.lattice)[None]
    from diffpy_mlsolve.physics.lattice import cell_volume
    from diffpy_mlsolve.physics.reflections import reflections_within

    hkl, _, _ = reflections_within(cell, 1.0)
    hkl = hkl[(hkl.abs() < 6).all(1)]
    rho = torch.tensor(d.values)[None].requires_grad_(True)

    def f2(r):
        fh = structure_factors_from_density(r, cell_volume(cell), hkl)
        return (fh.real**2 + fh.imag**2).sum()

    assert torch.autograd.gradcheck(f2, (rho,), eps=1e-6, atol=1e-3)


def test_ringing_is_small_with_auto_smoothing():
    uo2 = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.47), ["U", "O"], [[0, 0, 0], [0.25] * 3]
    )
    auto = ms.electron_density(uo2, grid=32, dtype=F64)
    raw = ms.electron_density(uo2, grid=32, smoothing=0.0, dtype=F64)
    assert auto.values.min() > -0.002 * auto.values.max()
    assert raw.values.min() < auto.values.min()
    assert auto.smoothing > 0


def test_grid_too_small_for_resolution(textbook_structures):
    with pytest.raises(PhysicsInputError, match="Please use grid >="):
        ms.electron_density(
            textbook_structures["Bi2Se3"], grid=16, resolution=0.5
        )
    with pytest.raises(PhysicsInputError, match="smoothing"):
        ms.electron_density(textbook_structures["NaCl"], smoothing=-1)
    with pytest.raises(PhysicsInputError, match="grid must be"):
        ms.electron_density(textbook_structures["NaCl"], grid=2)


def test_float32_matches_float64(textbook_structures):
    s = textbook_structures["SrTiO3"]
    a = ms.electron_density(s, grid=32, dtype=torch.float32).values
    b = ms.electron_density(s, grid=32, dtype=F64).values
    assert np.abs(a - b).max() < 1e-4 * np.abs(b).max()
