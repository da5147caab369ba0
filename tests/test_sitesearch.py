"""Sites chosen by the fit to the data (diffpy_mlsolve.sitesearch)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from textbook import measured_pxrd

from diffpy_mlsolve.atoms import (
    Peaks,
    structure_from_density,
    structures_in_group,
)
from diffpy_mlsolve.errors import PhysicsInputError
from diffpy_mlsolve.rfactor import pattern_rfactor
from diffpy_mlsolve.simulate import electron_density
from diffpy_mlsolve.sitesearch import (
    ProfileScorer,
    orbit_pool,
    refine_positions,
    search_orbits,
    search_sites,
)
from diffpy_mlsolve.structures import as_crystal
from diffpy_mlsolve.symmetry import find_symmetry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# rutile RuO2 (P4_2/mnm): Ru on an I-centred lattice, so a map phased
# mostly by Ru shows O at its sites and at their I-translates
A, C, X = 4.4825, 3.1113, 0.3055
RU = [[0, 0, 0], [0.5, 0.5, 0.5]]
O_TRUE = [
    [X, X, 0],
    [1 - X, 1 - X, 0],
    [0.5 + X, 0.5 - X, 0.5],
    [0.5 - X, 0.5 + X, 0.5],
]
# the I-translates (+ ½ ½ ½) of the true O sites: a wrong arrangement
O_SHIFTED = [
    [(u + 0.5) % 1, (v + 0.5) % 1, (w + 0.5) % 1] for u, v, w in O_TRUE
]


def _structure(o_sites, lattice=None) -> Structure:
    lattice = lattice or Lattice.tetragonal(A, C)
    return Structure(lattice, ["Ru", "Ru"] + ["O"] * 4, RU + o_sites)


@pytest.fixture(scope="module")
def rutile():
    """(truth, its broadened Cu Kα pattern, the extracted reflections)."""
    truth = _structure(O_TRUE)
    return (truth, *measured_pxrd(truth, strain=1e-3))


def test_profile_rwp_sees_the_light_atoms(rutile):
    """The profile Rwp puts the true O arrangement near the extraction's
    floor and the wrong one (half the O on I-translates) far above; the
    quick R factor, with one width for every peak, is dominated by its
    profile misfit and separates them far less."""
    truth, pattern, refl = rutile
    wrong = _structure(O_TRUE[:2] + O_SHIFTED[2:])
    scorer = ProfileScorer(refl)
    right_p, wrong_p = scorer.rwp(truth), scorer.rwp(wrong)
    right_q = pattern_rfactor(truth, pattern)
    wrong_q = pattern_rfactor(wrong, pattern)
    # measured: floor 0.026, truth 0.033, wrong 0.165; quick R 0.150
    # against 0.217
    assert scorer.floor <= right_p <= 1.4 * scorer.floor
    gain_p = (wrong_p - right_p) / right_p
    gain_q = (wrong_q - right_q) / right_q
    assert gain_p > 1.0
    assert gain_p > 3 * gain_q, (gain_p, gain_q)


def test_profile_rwp_does_not_depend_on_the_setting(rutile):
    """Axes permuted and the origin moved: the same structure, the same
    figure (reflections are matched by |d*|)."""
    truth, _, refl = rutile
    scorer = ProfileScorer(refl)
    other = Structure(
        Lattice.orthorhombic(C, A, A),
        truth.species,
        [
            [(w + 0.1) % 1, (u + 0.1) % 1, (v + 0.1) % 1]
            for u, v, w in truth.frac_coords
        ],
    )
    assert scorer.rwp(other) == pytest.approx(scorer.rwp(truth), rel=1e-6)


def test_profile_rwp_refuses_another_cell(rutile):
    _, _, refl = rutile
    scorer = ProfileScorer(refl)
    other = _structure(O_TRUE, Lattice.tetragonal(4.2, 3.3))
    with pytest.raises(PhysicsInputError, match="not in the pattern's cell"):
        scorer.rwp(other)


def test_profile_rwp_leaves_reflections_outside_the_pattern_out(rutile):
    """A pattern from 30°, past rutile's strongest reflection (110 at
    27.4°): the reflections it does not reach were not fitted, so the
    truth is scored, near the extraction's floor, not refused as another
    cell (so a 36-atom Ba5P4 was refused, by those past its last angle).
    Another cell is still refused."""
    truth = rutile[0]
    _, refl = measured_pxrd(truth, tth_range=(30, 120))
    scorer = ProfileScorer(refl)
    assert scorer.rwp(truth) <= 1.5 * scorer.floor
    other = _structure(O_TRUE, Lattice.tetragonal(4.2, 3.3))
    with pytest.raises(PhysicsInputError, match="not in the pattern's cell"):
        scorer.rwp(other)


def test_scorer_needs_a_fitted_powder_profile(rutile):
    _, _, refl = rutile
    bare = dataclasses.replace(refl, curves={})
    with pytest.raises(PhysicsInputError, match="no fitted powder profile"):
        ProfileScorer(bare)


def test_search_moves_sites_onto_the_true_light_atoms(rutile):
    """Peaks at Ru, the true O and their I-translates, all O peaks of one
    height; started with two O on translates, the search ends on the
    true O sites (or all on translates: the same structure with the origin
    at ½ ½ ½) and at a lower Rwp."""
    truth, _, refl = rutile
    scorer = ProfileScorer(refl)
    frac = np.array(RU + O_TRUE + O_SHIFTED, float)
    peaks = Peaks(frac, np.array([10.0, 10.0] + [3.0] * 8))
    start = [0, 1, 2, 3, 8, 9]  # O: two true, two translated
    elements = ["Ru", "Ru", "O", "O", "O", "O"]
    before = scorer.best_b(frac[start], elements)[0]
    rows, els, after = search_sites(
        scorer, peaks, start, elements, truth.lattice.parameters
    )
    o_rows = sorted(r for r, e in zip(rows, els) if e == "O")
    assert o_rows in ([2, 3, 4, 5], [6, 7, 8, 9])
    assert sorted(r for r, e in zip(rows, els) if e == "Ru") == [0, 1]
    assert after < 0.9 * before


def test_structure_from_a_pseudo_symmetric_density(rutile):
    """A map with half an O at every true site and every I-translate
    (what phases from Ru alone give): by height the O sites are a coin
    toss; with the scorer the structure is rutile."""
    truth, _, refl = rutile
    half = Structure(
        Lattice.tetragonal(A, C),
        ["Ru", "Ru"] + [{"O": 0.5}] * 8,
        RU + O_TRUE + O_SHIFTED,
    )
    density = electron_density(half, grid=48, standardize=False)
    sym, sites = structure_from_density(
        density, "RuO2", formula_units=2, scorer=ProfileScorer(refl)
    )
    matcher = StructureMatcher(stol=0.3, ltol=0.2, angle_tol=5)
    assert sym.number == 136  # P4_2/mnm
    assert matcher.fit(sym.to_pymatgen(), truth)
    assert sites.elements.count("O") == 4


def test_refinement_keeps_the_group_and_finds_the_sites(rutile):
    """Rutile with O at x = 0.28: refined within P4_2/mnm (O on its 4f
    line, Ru fixed on 2a) x returns to 0.3055 and the Rwp to the
    truth's."""
    truth, _, refl = rutile
    scorer = ProfileScorer(refl)
    x = 0.28
    off = _structure(
        [
            [x, x, 0],
            [1 - x, 1 - x, 0],
            [0.5 + x, 0.5 - x, 0.5],
            [0.5 - x, 0.5 + x, 0.5],
        ]
    )
    sym = find_symmetry(as_crystal(off, standardize=False), 1e-3)
    assert sym.number == 136
    new, r = refine_positions(scorer, sym)
    assert new.number == 136 and new.wyckoff == sym.wyckoff
    o = np.asarray(new.frac)[list(new.elements).index("O")]
    assert min(abs(o[0] - X), abs(o[0] - (1 - X))) < 0.003, o
    assert r == pytest.approx(scorer.rwp(truth), rel=0.02)
    assert r < 0.5 * scorer.rwp(off)


def test_equivalent_reflections_share_their_intensity(rutile):
    """The sets :func:`equivalent_reflections` forms for P4_2/mnm hold
    reflections of one |F|^2 for rutile (and of one |d*|), and
    (1 0 1), (0 1 1), (1 0 -1) are one set; P1 leaves only Friedel
    pairs, which the half sphere already merges."""
    from diffpy_mlsolve.physics.reflections import (
        equivalent_reflections,
        half_hkl_box,
    )

    truth, _, _ = rutile
    rot, _ = _rutile_group(truth)
    hkl = half_hkl_box(4, 4, 3).numpy()
    first, inverse = equivalent_reflections(hkl, rot)
    assert len(first) < len(hkl) / 4
    np.testing.assert_array_equal(inverse[first], np.arange(len(first)))
    phase = np.exp(2j * np.pi * hkl @ truth.frac_coords.T)
    f = np.where(np.array(truth.atomic_numbers) == 8, 8.0, 44.0)
    i2 = np.abs(phase @ f) ** 2
    np.testing.assert_allclose(i2, i2[first][inverse], atol=1e-9)
    d2 = (hkl / [A, A, C]) ** 2 @ np.ones(3)
    np.testing.assert_allclose(d2, d2[first][inverse])
    row = {tuple(h): inverse[i] for i, h in enumerate(hkl)}
    assert row[(1, 0, 1)] == row[(0, 1, 1)] == row[(1, 0, -1)]
    assert row[(1, 0, 1)] != row[(1, 1, 0)] != row[(0, 0, 1)]
    p1, _ = equivalent_reflections(hkl, np.eye(3)[None])
    assert len(p1) == len(hkl)


def test_refinement_at_one_reflection_of_each_set_is_exact(
    rutile, monkeypatch
):
    """Refining in the group with the structure factors at one
    reflection of each equivalent set ends where refining with all of
    them does (the sets' reflections are summed into their groups with
    their counts)."""

    truth, _, refl = rutile
    scorer = ProfileScorer(refl)
    sym = find_symmetry(as_crystal(truth, standardize=False), 1e-3)
    o = list(sym.elements).index("O")
    frac = np.array(sym.frac, float)
    frac[o, :2] += 0.025 * np.sign(frac[o, :2] - 0.5 + 1e-9)
    start = dataclasses.replace(sym, frac=frac)
    assert scorer.rwp(start.to_crystal()) > 2 * scorer.rwp(truth)
    reduced, r_reduced = refine_positions(scorer, start)

    def every(hkl, rotations):
        n = len(hkl)
        return np.arange(n), np.arange(n)

    monkeypatch.setattr(
        "diffpy_mlsolve.physics.reflections.equivalent_reflections", every
    )
    full, r_full = refine_positions(scorer, start)
    assert r_reduced == pytest.approx(r_full, rel=1e-9)
    np.testing.assert_allclose(reduced.frac, full.frac, atol=1e-8)
    assert r_full == pytest.approx(scorer.rwp(truth), rel=0.02)


def test_quadratic_form_and_its_gradient(rutile):
    """The profile's vᵀ M v through scipy (sparse M) or numpy (dense)
    has torch's value and gradient, 2 M v."""
    import torch
    from scipy import sparse

    from diffpy_mlsolve.sitesearch import _quadratic_form

    _, _, refl = rutile
    m = ProfileScorer(refl)._m
    m = m if sparse.issparse(m) else sparse.csr_matrix(m)
    full = torch.as_tensor(m.toarray())
    for given in (m, m.toarray()):
        v = torch.rand(m.shape[0], dtype=torch.float64, requires_grad=True)
        q = _quadratic_form(given)(v)
        q.backward()
        np.testing.assert_allclose(
            q.item(), float(v.detach() @ full @ v.detach()), rtol=1e-12
        )
        np.testing.assert_allclose(
            v.grad.numpy(), (2 * full @ v.detach()).numpy(), rtol=1e-12
        )


def test_noisy_p1_sites_refine_into_their_group(rutile):
    """Sites 0.15 Å off rutile's in random directions, found in P1 at a
    tight tolerance: refined, they show P4_2/mnm again, which is kept."""
    from diffpy_mlsolve.ranking import _polished

    truth, _, refl = rutile
    scorer = ProfileScorer(refl)
    rng = np.random.default_rng(1)
    noisy = truth.copy()
    for i in range(len(noisy)):
        noisy.translate_sites([i], rng.normal(0, 0.09, 3), frac_coords=False)
    p1 = find_symmetry(as_crystal(noisy, standardize=False), 1e-3)
    assert p1.number < 136
    sym, r = _polished(scorer, p1)
    assert sym.number == 136
    assert r == pytest.approx(scorer.rwp(truth), rel=0.05)


def _rutile_group(truth):
    """P4_2/mnm's operations in the truth's frame (origin on Ru)."""
    import spglib

    ds = spglib.get_symmetry_dataset(
        (truth.lattice.matrix, truth.frac_coords, [44, 44, 8, 8, 8, 8]),
        symprec=1e-3,
    )
    assert ds.number == 136
    return ds.rotations, ds.translations


def test_orbit_pool_snaps_onto_special_positions(rutile):
    """A point 0.1 Å off 2a is moved onto it (2 images); a general point
    has 16; the 4f line point keeps x and has 4."""
    truth, _, _ = rutile
    rot, tr = _rutile_group(truth)
    near_2a = [0.02, -0.015, 0.01]
    general = [0.13, 0.31, 0.22]
    orbits = orbit_pool(
        [near_2a, general, O_TRUE[0]], rot, tr, truth.lattice.parameters
    )
    assert [len(o) for o in orbits] == [2, 16, 4]
    assert np.allclose(np.mod(orbits[0][0] + 0.5, 1) - 0.5, 0, atol=1e-9)
    assert np.allclose(orbits[2][0], O_TRUE[0], atol=1e-9)


def test_orbit_search_picks_the_orbit_that_fits(rutile):
    """Peaks on Ru (2a) and on both O orbits a half-O map shows (4f, the
    truth, and 4g, its I-translate), 4g the higher: by height the O
    would go on 4g; the orbit search puts them on 4f, at the truth's
    Rwp, and never breaks an orbit."""
    truth, _, refl = rutile
    scorer = ProfileScorer(refl)
    rot, tr = _rutile_group(truth)
    peaks = Peaks(
        np.array([RU[0], O_SHIFTED[0], O_TRUE[0], [0.25, 0.1, 0.3]]),
        np.array([10.0, 3.3, 3.0, 1.0]),
    )
    found = search_orbits(
        scorer,
        peaks,
        {"Ru": 2, "O": 4},
        {"Ru": 10.0, "O": 3.2},
        rot,
        tr,
        truth.lattice.parameters,
    )
    frac, elements, heights, r = found[0]
    assert sorted(elements) == ["O"] * 4 + ["Ru"] * 2
    built = Structure(truth.lattice, elements, frac)
    matcher = StructureMatcher(stol=0.3, ltol=0.2, angle_tol=5)
    assert matcher.fit(built, truth)
    assert r == pytest.approx(scorer.rwp(truth), rel=0.05)
    # the O count cannot be filled by the 16-fold orbit alone
    assert (
        search_orbits(
            scorer,
            Peaks(np.array([RU[0], [0.25, 0.1, 0.3]]), np.array([10.0, 3.0])),
            {"Ru": 2, "O": 4},
            {"Ru": 10.0, "O": 3.2},
            rot,
            tr,
            truth.lattice.parameters,
        )
        == []
    )


def test_structure_in_the_maps_group(rutile):
    """The half-O map (shown with its origin moved): in the P4_2/mnm it
    shows, whole orbits chosen by the fit give rutile, in its group; a
    group whose orbits cannot hold the cell is refused with the reason."""
    from diffpy_mlsolve.errors import StructureError
    from diffpy_mlsolve.mapsymmetry import MapSymmetry, find_map_symmetry

    truth, _, refl = rutile
    shift = np.array([0.1, 0.2, 0.3])
    half = Structure(
        Lattice.tetragonal(A, C),
        ["Ru", "Ru"] + [{"O": 0.5}] * 8,
        np.mod(np.array(RU + O_TRUE + O_SHIFTED) + shift, 1.0),
    )
    density = electron_density(half, grid=48, standardize=False)
    # the map shows I4/mmm (O at 4f and 4g alike) with its origin on Ru
    i4 = find_map_symmetry(density, max_groups=1)[0]
    assert i4.number == 139
    assert np.allclose((i4.origin - shift + 0.25) % 0.5 - 0.25, 0, atol=0.03)
    rot, tr = _rutile_group(truth)
    p42 = MapSymmetry(
        hall_number=419,
        number=136,
        symbol="P4_2/mnm",
        origin=shift,
        agreement=np.ones(len(rot)),
        rotations=rot,
        translations=tr,
    )
    sym, sites = structures_in_group(
        density, "RuO2", p42, ProfileScorer(refl), formula_units=2
    )[0]
    matcher = StructureMatcher(stol=0.3, ltol=0.2, angle_tol=5)
    assert sym.number == 136
    assert matcher.fit(sym.to_pymatgen(), truth)
    # the sites are given in the density's frame: Ru where the map has it
    ru = sites.frac[list(sites.elements).index("Ru")]
    assert (
        min(
            np.linalg.norm((ru - np.array(p) - shift + 0.5) % 1 - 0.5)
            for p in RU
        )
        < 0.02
    )
    # I4/mmm has no 4-fold O orbit here
    with pytest.raises(StructureError, match="orbits"):
        structures_in_group(
            density, "RuO2", i4, ProfileScorer(refl), formula_units=2
        )


def test_the_patterns_centring_gives_groups_the_map_misses(monkeypatch):
    """MoSi2 (I4/mmm) from a map of half its atoms (those of one lattice
    point, origin moved), as a network map that misses the centring: the
    map shows P4/mmm, whose orbits cannot hold the cell; the pattern's
    extinctions show I, and the I-averaged map shows I4/mmm, whose orbits
    give MoSi2."""
    from diffpy_mlsolve import ranking
    from diffpy_mlsolve.errors import StructureError
    from diffpy_mlsolve.phasing import find_centring
    from diffpy_mlsolve.ranking import _map_groups, candidates_from_densities

    lattice = Lattice.tetragonal(3.20, 7.85)
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0, 1 / 3], [0, 0, 2 / 3]]
    frac += [[0.5, 0.5, 5 / 6], [0.5, 0.5, 1 / 6]]
    truth = Structure(lattice, ["Mo"] * 2 + ["Si"] * 4, frac)
    pattern, refl = measured_pxrd(truth)
    assert find_centring(refl) == "I"
    half = Structure(
        lattice,
        ["Mo", "Si", "Si"],
        np.mod(np.array(frac)[[0, 2, 3]] + [0.1, 0.2, 0.3], 1.0),
    )
    density = electron_density(half, grid=48, standardize=False)
    shown = _map_groups(density, {})
    assert [g.symbol for g in shown] == ["P4/mmm"]
    groups = _map_groups(density, {}, "I")
    assert [g.symbol for g in groups] == ["P4/mmm", "I4/mmm"]
    scorer = ProfileScorer(refl)
    with pytest.raises(StructureError, match="orbits"):
        structures_in_group(
            density, "MoSi2", groups[0], scorer, formula_units=2
        )
    sym, _ = structures_in_group(
        density, "MoSi2", groups[1], scorer, formula_units=2
    )[0]
    assert sym.number == 139
    matcher = StructureMatcher(stol=0.3, ltol=0.2, angle_tol=5)
    assert matcher.fit(sym.to_pymatgen(), truth)
    # the solve's ranking finds the centring in the reflections itself:
    # only the I4/mmm orbits can fill this map's cell (the Wyckoff
    # trials kept out: their own I4/mmm MoSi2 fits as well, 1.31 times
    # this pattern's floor, above the 1.1 that calls them)
    monkeypatch.setattr(ranking, "WYCKOFF_FIT", 2.0)
    best = candidates_from_densities(
        [density], pattern, "MoSi2", formula_units=2, reflections=refl
    )[0]
    assert best.failed is None
    assert best.info["sites_from"] == "orbits of I4/mmm"
    assert matcher.fit(best.to_pymatgen(), truth)
    monkeypatch.undo()
    best = candidates_from_densities(
        [density], pattern, "MoSi2", formula_units=2, reflections=refl
    )[0]
    assert best.spacegroup == "I4/mmm"
    assert matcher.fit(best.to_pymatgen(), truth)


def test_lower_orders_where_the_highest_cannot_hold_the_cell():
    """A map of two equal atoms at the body centre and corner shows
    Im-3m, whose orbits (2a and up) cannot hold CsCl's one Cs and one
    Cl; the next order down lists Pm-3m, whose 1a and 1b can: the
    ranking then searches that order (its :data:`ORBIT_TIERS`)."""
    from diffpy_mlsolve.errors import StructureError
    from diffpy_mlsolve.ranking import (
        ORBIT_TIERS,
        _map_groups,
        _orbit_structures,
    )

    assert ORBIT_TIERS >= 2
    lattice = Lattice.cubic(4.12)
    truth = Structure(lattice, ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3])
    _, refl = measured_pxrd(truth)
    shifted = [[0.1, 0.2, 0.3], [0.6, 0.7, 0.8]]
    density = electron_density(
        Structure(lattice, ["Cs", "Cs"], shifted), grid=48, standardize=False
    )
    cache = {}
    top = _map_groups(density, cache)
    assert [g.symbol for g in top] == ["Im-3m"]
    scorer = ProfileScorer(refl)
    with pytest.raises(StructureError, match="orbits"):
        structures_in_group(density, "CsCl", top[0], scorer)
    lower = {g.symbol: g for g in _map_groups(density, cache, tier=1)}
    assert "Pm-3m" in lower
    sym, _ = structures_in_group(density, "CsCl", lower["Pm-3m"], scorer)[0]
    assert sym.number == 221
    assert StructureMatcher().fit(sym.to_pymatgen(), truth)
    # the ranking's loop over the orders: Im-3m fails (its reason kept),
    # the next order's groups give the structures
    errors = []
    found = _orbit_structures(density, "CsCl", scorer, 1, {}, None, errors, {})
    assert errors and all("orbits" in e for e in errors)
    assert {how for _, _, how in found} <= {f"orbits of {g}" for g in lower}
    assert "orbits of Pm-3m" in {how for _, _, how in found}
    assert any(
        StructureMatcher().fit(s.to_pymatgen(), truth) for s, _, _ in found
    )


def _nacl_gr_fit():
    """Intensities fitted to a 3 nm rock-salt particle's G(r)."""
    from diffpy_mlsolve.pattern import Pattern
    from diffpy_mlsolve.pdf_intensities import pdf_intensities
    from diffpy_mlsolve.simulate import simulate_pdf

    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]
    )
    gr = simulate_pdf(nacl, rmax=20.0, qmax=20.0, qdamp=0.03, diameter=30.0)
    gr = Pattern.from_arrays(gr.x, gr.intensity, xtype="r")
    return pdf_intensities(gr, nacl.lattice, qmax=20.0).reflections


def test_scan_of_moves_equals_the_direct_sums(rutile):
    """``rwp_of_moves`` (the site search's scan: one sparse product) and
    ``element_terms`` give what forming every sum does, for a powder
    scorer and a G(r) scorer, its normal matrix dense (as a G(r)'s is
    kept) and sparse."""
    import copy

    import torch
    from scipy import sparse

    from diffpy_mlsolve.sitesearch import scorer_for

    rng = np.random.default_rng(1)
    pdf = scorer_for(_nacl_gr_fit())
    assert isinstance(pdf._m, np.ndarray)
    pdf_sparse = copy.copy(pdf)
    pdf_sparse._m = sparse.csr_matrix(pdf._m)
    na = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    rock_salt = (na, np.add(na, [0.5, 0, 0]), "Na", "Cl")
    for scorer, (heavy, light, h, el) in (
        (ProfileScorer(rutile[2]), (RU, O_TRUE, "Ru", "O")),
        (pdf, rock_salt),
        (pdf_sparse, rock_salt),
    ):
        # the light atoms' true sites (the last left out), then random
        k, m = len(heavy), len(light)
        frac = np.vstack([heavy, light, rng.random((5, 3))])
        table = scorer.element_terms(frac, [h, el, h], 0.7)
        assert set(table) == {h, el}
        phase = np.exp(2j * np.pi * scorer.hkl @ frac[k + 1])
        assert np.allclose(
            table[el][:, k + 1], scorer.form_factor(el, 0.7) * phase
        )
        base = table[h][:, :k].sum(1) + table[el][:, k : k + m - 1].sum(1)
        moves = table[el][:, k + m - 1 :]  # the missing site, or random
        direct = scorer.rwp_of_many(base[:, None] + moves)
        fast = scorer.rwp_of_moves(base, moves, scorer.group_norms(moves))
        assert np.argmin(direct) == 0  # the true site fits best
        assert np.allclose(fast, direct, rtol=1e-10, atol=1e-12)
        # the differentiable Rwp agrees with the plain one
        g = scorer._sum @ (np.abs(base) ** 2)
        torch_r = scorer.torch_rwp()(torch.as_tensor(g))
        assert float(torch_r) == pytest.approx(scorer.rwp_of_groups(g))


@pytest.fixture(scope="module")
def lead_rutile():
    """(rutile with Pb for the Ru at the origin, its extracted
    reflections): a trial with two Ru there fits better the closer they
    come, as one heavier scatterer."""
    truth = Structure(
        Lattice.tetragonal(A, C), ["Pb", "Ru"] + ["O"] * 4, RU + O_TRUE
    )
    return truth, measured_pxrd(truth)[1]


def _contact_floor_ratio(elements, frac, lattice) -> float:
    """The closest pair's distance over its limit (contact_limits)."""
    from diffpy_mlsolve.atoms import (
        _lattice_matrix,
        _pair_distances,
        contact_limits,
    )

    limit = contact_limits(elements)
    dist = _pair_distances(np.asarray(frac, float), _lattice_matrix(lattice))
    lim = np.array([[limit[a][b] for b in elements] for a in elements])
    np.fill_diagonal(dist, np.inf)
    return float((dist / lim).min())


def test_search_keeps_sites_apart_by_their_radii(lead_rutile, monkeypatch):
    """Peaks 1.08 Å apart either side of the Pb site: two Ru there fit
    the data best, and the old fixed 0.9 Å limit let them (the search
    without the radii's floor ends there); with it, no pair ends closer
    than 0.6 of its radii's sum."""
    import diffpy_mlsolve.atoms as atoms_module

    truth, refl = lead_rutile
    scorer = ProfileScorer(refl)
    u = 0.12
    frac = np.array(
        [[u, 0, 0], [1 - u, 0, 0], [0.5, 0.5, 0.5]]
        + O_TRUE
        + [[0.5, 0, 0], [0, 0.5, 0.25]],
        float,
    )
    peaks = Peaks(frac, np.array([10.0, 10, 10, 3, 3, 3, 3, 5, 5]))
    start = [0, 7, 2, 3, 4, 5, 6]  # a Ru on a decoy, none on the pair
    elements = ["Ru"] * 3 + ["O"] * 4
    lattice = truth.lattice.parameters
    rows, els, r = search_sites(scorer, peaks, start, elements, lattice)
    assert _contact_floor_ratio(els, frac[rows], lattice) >= 1.0
    monkeypatch.setattr(atoms_module, "CONTACT_FLOOR", 0.0)
    rows0, els0, r0 = search_sites(scorer, peaks, start, elements, lattice)
    assert {0, 1} <= set(rows0) and r0 < r  # the clash fits better


def test_refinement_keeps_atoms_apart(lead_rutile, monkeypatch):
    """Two Ru 1.08 Å apart about the Pb site: refined without the
    repulsion they merge (closer than 0.05 of their radii's sum); with
    it they end near their limit, 0.6 of that sum."""
    import diffpy_mlsolve.sitesearch as sitesearch
    from diffpy_mlsolve.ranking import contact_ratio

    truth, refl = lead_rutile
    scorer = ProfileScorer(refl)
    u = 0.12
    trial = Structure(
        Lattice.tetragonal(A, C),
        ["Ru"] * 3 + ["O"] * 4,
        [[u, 0, 0], [-u, 0, 0], [0.5, 0.5, 0.5]] + O_TRUE,
    )
    sym = find_symmetry(as_crystal(trial, standardize=False), 1e-3)
    assert contact_ratio(sym.to_crystal()) < 0.45
    new, _ = refine_positions(scorer, sym)
    assert contact_ratio(new.to_crystal()) > 0.5
    monkeypatch.setattr(sitesearch, "REPULSION", 0.0)
    merged, _ = refine_positions(scorer, sym)
    assert contact_ratio(merged.to_crystal()) < 0.05


@pytest.mark.parametrize("max_atoms", [32, 5])
def test_large_cells_skip_the_p1_search(rutile, monkeypatch, max_atoms):
    """The P1 site search runs for cells of at most SEARCH_MAX_ATOMS
    atoms; above it (here rutile's 6 atoms against a cap of 5) the sites
    by height and the map's orbits are still refined against the profile
    Rwp, and give rutile."""
    import diffpy_mlsolve.sitesearch as sitesearch
    from diffpy_mlsolve import ranking

    truth, pattern, refl = rutile
    calls = []
    search = sitesearch.search_sites

    def counted(*args, **kw):
        calls.append(1)
        return search(*args, **kw)

    monkeypatch.setattr(sitesearch, "search_sites", counted)
    monkeypatch.setattr(ranking, "SEARCH_MAX_ATOMS", max_atoms)
    density = electron_density(truth, grid=48, standardize=False)
    best = ranking.candidates_from_densities(
        [density], pattern, "RuO2", formula_units=2, reflections=refl
    )[0]
    assert bool(calls) == (max_atoms >= 6)
    assert best.failed is None
    assert best.info["profile_rwp"] < 2 * best.info["profile_rwp_floor"]
    assert best.info["sites_from"] != "search" or max_atoms >= 6
    matcher = StructureMatcher(stol=0.3, ltol=0.2, angle_tol=5)
    assert matcher.fit(best.to_pymatgen(), truth)
