"""Trial structures from Wyckoff orbits (diffpy_mlsolve.wyckoff), and the
candidates they give where no density shows a group."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from textbook import measured_pxrd

from diffpy_mlsolve.density import Density
from diffpy_mlsolve.phasing import find_centring
from diffpy_mlsolve.ranking import _polished, candidates_from_densities
from diffpy_mlsolve.sitesearch import ProfileScorer
from diffpy_mlsolve.symmetry import SYMPREC_LADDER, find_symmetry
from diffpy_mlsolve.wyckoff import cubic_groups, is_cubic, wyckoff_trials

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MATCH = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)


@pytest.fixture(scope="module")
def pyrite():
    """(FeS2 in Pa-3, S on 8c with x = 0.385; its Cu Kα pattern; the
    extracted reflections)."""
    truth = Structure.from_spacegroup(
        "Pa-3",
        Lattice.cubic(5.417),
        ["Fe", "S"],
        [[0, 0, 0], [0.385, 0.385, 0.385]],
    )
    return (truth, *measured_pxrd(truth))


def test_cubic_groups_of_each_centring():
    f = cubic_groups("F")
    assert sorted(f) == [196, 202, 203, 209, 210, 216, 219, 225, 226, 227, 228]
    assert f[:4] == [225, 226, 227, 228]  # 192 operations each
    assert sorted(cubic_groups("I")) == [
        197,
        199,
        204,
        206,
        211,
        214,
        217,
        220,
        229,
        230,
    ]
    assert len(cubic_groups()) == 36 and cubic_groups()[0] == 225


def test_only_cubic_cells_get_trials():
    assert is_cubic((5.417, 5.417, 5.417, 90, 90, 90))
    assert not is_cubic((5.417, 5.417, 5.5, 90, 90, 90))
    assert not is_cubic((5.417, 5.417, 5.417, 90, 90, 120))

    class Unused:  # a tetragonal cell must not get as far as scoring
        def rwp(self, crystal):
            raise AssertionError("a non-cubic cell's trial was scored")

    tetragonal = (5.4, 5.4, 5.5, 90, 90, 90)
    assert wyckoff_trials(Unused(), {"Fe": 4}, tetragonal) == []


def test_trials_find_pyrite_by_the_fit(pyrite):
    """The cell's contents in Wyckoff orbits of the primitive cubic
    groups, free coordinates drawn at random: the best trial is in Pa-3,
    and refined in it, it is pyrite at the truth's Rwp."""
    truth, _, refl = pyrite
    scorer = ProfileScorer(refl)
    trials = wyckoff_trials(
        scorer, {"Fe": 4, "S": 8}, truth.lattice.parameters, "P"
    )
    assert trials and trials[0][2] == 205  # Pa-3
    scores = [t[0] for t in trials]
    assert scores == sorted(scores)
    sym, r = _polished(scorer, find_symmetry(trials[0][1], SYMPREC_LADDER))
    assert sym.number == 205
    assert MATCH.fit(sym.to_pymatgen(), truth)
    assert r == pytest.approx(scorer.rwp(truth), rel=0.02)
    # the other trials of the list fit worse than the truth
    assert all(t[0] > 2 * scorer.rwp(truth) for t in trials[2:])


def test_trials_keep_the_data_centring(pyrite):
    truth, _, refl = pyrite
    scorer = ProfileScorer(refl)
    trials = wyckoff_trials(
        scorer, {"Fe": 4, "S": 8}, truth.lattice.parameters, "F"
    )
    assert trials and all(n in cubic_groups("F") for _, _, n in trials)


def test_a_map_that_shows_nothing_still_solves_a_cubic_cell(pyrite, tmp_path):
    """A density of noise: its peaks give P1 sites, no group, and no
    cubic structure; the Wyckoff candidates then find pyrite from the
    data alone, and it ranks first, written as a CIF in Pa-3 with no
    map."""
    import json

    from diffpy_mlsolve.solver import SolveResult

    truth, pattern, refl = pyrite
    rng = np.random.default_rng(0)
    noise = Density(rng.random((24, 24, 24)) * 0.5, truth.lattice.parameters)
    assert find_centring(refl) in (None, "P")
    cands = candidates_from_densities(
        [noise], pattern, "FeS2", formula_units=4, reflections=refl
    )
    best = cands[0]
    assert best.info["sites_from"] == "Wyckoff orbits of group 205"
    assert best.density is None and best.spacegroup == "Pa-3"
    assert MATCH.fit(best.symmetry.to_pymatgen(), truth)
    noisy = [c for c in cands if c.density is not None]
    assert noisy and all(c.symmetry.number < 195 for c in noisy)
    out = SolveResult(candidates=cands).write(tmp_path / "run")
    names = sorted(p.name for p in out.iterdir())
    assert "best.cif" in names and "density_01.map" not in names
    assert "density_02.map" in names  # the noise map's candidate
    assert "Pa-3" in (out / "best.cif").read_text()
    report = json.loads((out / "report.json").read_text())
    entry = report["candidates"][0]
    assert entry["spacegroup_number"] == 205 and not entry["has_density"]


def test_a_cubic_candidate_that_fits_needs_no_wyckoff_trials(
    pyrite, monkeypatch
):
    """From pyrite's own density the candidates are Pa-3 at the floor's
    fit: no Wyckoff trials are made.  With the threshold at 0 (no fit is
    good enough) they are, and pyrite is among them."""
    import diffpy_mlsolve.ranking as ranking
    from diffpy_mlsolve.simulate import electron_density

    truth, pattern, refl = pyrite
    density = electron_density(truth, grid=32, standardize=False)
    cands = candidates_from_densities(
        [density], pattern, "FeS2", formula_units=4, reflections=refl
    )
    assert cands[0].spacegroup == "Pa-3"
    assert (
        cands[0].info["profile_rwp"] < 2 * cands[0].info["profile_rwp_floor"]
    )
    assert all(c.density is not None for c in cands)
    monkeypatch.setattr(ranking, "WYCKOFF_FIT", 0.0)
    cands = candidates_from_densities(
        [density], pattern, "FeS2", formula_units=4, reflections=refl
    )
    wyckoff = [c for c in cands if c.density is None]
    assert wyckoff and any(MATCH.fit(c.to_pymatgen(), truth) for c in wyckoff)
