"""Space groups found in phased maps (diffpy_mlsolve.mapsymmetry)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from diffpy_mlsolve.atoms import structure_from_density
from diffpy_mlsolve.errors import PhysicsInputError
from diffpy_mlsolve.mapsymmetry import (
    MAP_SYMMETRY_THRESHOLD,
    average,
    averager,
    centred_map,
    find_map_symmetry,
    flip_in_groups,
    lattice_centring,
    lattice_groups,
    resampled,
    symmetrize,
    symmetry_grid,
)
from diffpy_mlsolve.phasing import charge_flip, extract_intensities
from diffpy_mlsolve.simulate import electron_density, simulate_pxrd

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ops(hall):
    import spglib

    ops = spglib.get_symmetry_from_database(hall)
    return ops["rotations"], ops["translations"]


def _shifted(density, shift):
    return replace(
        density, values=np.roll(density.values, shift, axis=(0, 1, 2))
    )


def test_symmetry_grid():
    assert [symmetry_grid(n) for n in (8, 12, 32, 37, 48)] == [
        12,
        12,
        36,
        48,
        48,
    ]


def test_lattice_groups_follow_the_metric():
    cubic = set(lattice_groups((5.64, 5.64, 5.64, 90, 90, 90)))
    hexagonal = set(lattice_groups((4.76, 4.76, 12.99, 90, 90, 120)))
    triclinic = set(lattice_groups((4, 5, 6, 80, 85, 95)))
    assert {523, 525, 1} <= cubic  # Fm-3m, Fd-3m (origin 2), P1
    assert 458 not in cubic  # R-3m (hexagonal axes) needs γ = 120°
    assert {458, 460, 485} <= hexagonal  # R-3m, R-3c, P6/mmm
    assert 523 not in hexagonal
    assert triclinic == {1, 2}


@pytest.mark.parametrize("name, number", [("NaCl", 225), ("Al2O3", 167)])
def test_group_and_origin_of_a_shifted_map(textbook_structures, name, number):
    """A true density moved off its origin: the group is found, and the
    map averaged at the found origin gives the structure in its group."""
    st = textbook_structures[name]
    dens = electron_density(st, grid=48, standardize=False)
    moved = _shifted(dens, (7, 30, 13))
    found = find_map_symmetry(moved)
    assert found and found[0].number == number
    assert found[0].min_agreement > 0.95
    sym = symmetrize(moved, found[0])
    assert sym.metadata["map_symmetry"]["number"] == number
    struct, _ = structure_from_density(sym, st.composition.reduced_formula)
    assert struct.number == number


def test_resampled_keeps_the_map_and_shows_its_group(textbook_structures):
    """A 32-point map (the network's grid, which cannot hold thirds) on
    36 points: the same band-limited map (back on 32 points it is the
    original, the mean is kept), and corundum's R-3c is found in it."""
    st = textbook_structures["Al2O3"]
    dens = electron_density(st, grid=32, standardize=False)
    up = resampled(dens, 36)
    assert up.values.shape == (36, 36, 36)
    assert up.values.mean() == pytest.approx(dens.values.mean(), rel=1e-9)
    back = resampled(up, 32).values
    # only the Nyquist planes of the 32-point map are lost
    assert np.abs(back - dens.values).max() < 0.02 * dens.values.max()
    assert resampled(dens, 32) is dens
    found = find_map_symmetry(up)
    assert found and found[0].number == 167
    assert found[0].min_agreement > 0.9
    assert find_map_symmetry(up, max_groups=0) == []


def test_noise_has_no_symmetry():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(24, 24, 24))
    cell = (5, 5, 5, 90, 90, 90)
    assert find_map_symmetry(noise, cell) == []
    # the threshold is what refuses it: at 0.1 chance correlations pass
    assert MAP_SYMMETRY_THRESHOLD > 0.1
    assert find_map_symmetry(noise, cell, threshold=0.1)


def test_average_is_invariant_and_equals_the_sum_over_operations():
    rng = np.random.default_rng(1)
    rho = rng.normal(size=(24, 24, 24))
    rots, trans = _ops(525)  # Fd-3m origin 2: 192 operations, centred
    avg = average(rho, rots, trans)
    # brute force: every operation gathered separately
    pts = np.indices((24,) * 3).reshape(3, -1)
    ref = np.zeros(24**3)
    for r, t in zip(rots, trans):
        idx = np.mod(r @ pts + np.rint(t * 24).astype(int)[:, None], 24)
        ref += rho[idx[0], idx[1], idx[2]]
    np.testing.assert_allclose(avg.ravel(), ref / len(rots), atol=1e-12)
    again = averager(rots, trans, 24)(avg)
    np.testing.assert_allclose(again, avg, atol=1e-12)


def test_average_refuses_grids_that_miss_translations():
    rots, trans = _ops(458)  # R-3m: translations of 1/3
    with pytest.raises(PhysicsInputError, match="multiple of 12"):
        average(np.zeros((32, 32, 32)), rots, trans)


def test_flip_with_symmetry_needs_a_grid_of_12(textbook_structures):
    st = textbook_structures["NaCl"]
    pat = simulate_pxrd(st, "CuKa1", tth_range=(10, 120), npoints=4000)
    refl = extract_intensities(pat, st.lattice)
    with pytest.raises(PhysicsInputError, match="multiple of 12"):
        charge_flip(refl, st.lattice, 32, symmetry=_ops(523), iterations=2)


def test_flip_in_groups_solves_what_p1_flipping_misses(textbook_structures):
    """SrTiO3 from a laboratory pattern: the P1 flipped map gives no
    structure in the right group, but it shows Pm-3m (with wrong
    supergroups the fit to the data would reject), and flipped again in
    Pm-3m it gives SrTiO3."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    st = textbook_structures["SrTiO3"]
    pat = simulate_pxrd(
        st,
        "CuKa",
        tth_range=(10, 120),
        npoints=5500,
        fwhm=0.08,
        counts=1e5,
        seed=1,
    )
    refl = extract_intensities(pat, st.lattice)
    p1 = charge_flip(refl, st.lattice, 36, seed=0, electrons=84.0)
    sym, _ = structure_from_density(p1, "SrTiO3", formula_units=1)
    assert sym.number != 221
    maps = flip_in_groups(p1, refl, electrons=84.0, iterations=30)
    groups = [m.metadata["map_symmetry"]["number"] for m in maps]
    assert 221 in groups and len(groups) == len(set(groups))
    orders = [m.metadata["symmetry"] for m in maps]
    assert orders == sorted(orders, reverse=True)
    pm3m = maps[groups.index(221)]
    struct, _ = structure_from_density(pm3m, "SrTiO3", formula_units=1)
    assert struct.number == 221
    assert StructureMatcher().fit(struct.to_pymatgen(), st)


def test_centred_map_adds_the_lattice_translates(textbook_structures):
    """Half of corundum (the atoms near one R lattice point's column,
    z < 1/3): averaged over R's translations it is corundum at a third
    of the weight, wherever the origin; an unknown letter is refused."""
    st = textbook_structures["Al2O3"]
    keep = [i for i, f in enumerate(st.frac_coords) if f[2] % 1 < 1 / 3]
    part = st.copy()
    part.remove_sites([i for i in range(len(st)) if i not in keep])
    dens = electron_density(part, grid=36, standardize=False)
    whole = electron_density(st, grid=36, standardize=False).values
    for shift in [(0, 0, 0), (5, 11, 7)]:
        moved = _shifted(dens, shift)
        centred = centred_map(moved, "R")
        expect = np.roll(whole, shift, axis=(0, 1, 2)) / 3
        assert np.abs(centred.values - expect).max() < 1e-6 * whole.max()
    assert find_map_symmetry(centred_map(dens, "R"))[0].number == 167
    with pytest.raises(PhysicsInputError, match="centring"):
        centred_map(dens, "X")


def test_lattice_centring_is_read_from_the_operations():
    """The symbol names the standard setting only: spglib calls Hall 64
    and 65 "C2/m", but they are its A and I settings."""
    from diffpy_mlsolve.mapsymmetry import _database

    symbols = {g[0]: g[4] for g in _database()}
    expect = {63: "C", 64: "A", 65: "I", 523: "F", 458: "R", 459: "P"}
    for hall, letter in expect.items():
        assert lattice_centring(*_ops(hall)) == letter
    assert symbols[64] == symbols[65] == "C2/m"
    # 2/3 1/3 1/3 alone is no lattice of CENTRING_TRANSLATIONS
    rot = np.repeat(np.eye(3, dtype=int)[None], 2, axis=0)
    assert lattice_centring(rot, [[0, 0, 0], [2 / 3, 1 / 3, 1 / 3]]) is None
