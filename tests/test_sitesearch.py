"""Sites chosen by the fit to the data (diffpy_mlsolve.sitesearch)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from diffpy_mlsolve.atoms import Peaks, structure_from_density
from diffpy_mlsolve.errors import PhysicsInputError
from diffpy_mlsolve.phasing import extract_intensities
from diffpy_mlsolve.rfactor import pattern_rfactor
from diffpy_mlsolve.simulate import electron_density, simulate_pxrd
from diffpy_mlsolve.sitesearch import (
    ProfileScorer,
    refine_positions,
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
    pattern = simulate_pxrd(
        truth,
        "CuKa",
        tth_range=(10, 120),
        npoints=5500,
        fwhm=0.05,
        eta=0.3,
        crystallite_size=250.0,
        strain=1e-3,
        counts=1e5,
        seed=3,
    )
    return truth, pattern, extract_intensities(pattern, truth.lattice)


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
