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
from diffpy_mlsolve.ranking import (
    _polished,
    _premium,
    candidates_from_densities,
)
from diffpy_mlsolve.sitesearch import ProfileScorer
from diffpy_mlsolve.wyckoff import (
    SYSTEM_GROUPS,
    _candidate_settings,
    _forbidden,
    consistent,
    cubic_groups,
    group_prior,
    is_cubic,
    lattice_system,
    settings,
    system_groups,
    unique_axis,
    wyckoff_trials,
)

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


def test_the_lattices_that_get_trials():
    assert is_cubic((5.417, 5.417, 5.417, 90, 90, 90))
    assert not is_cubic((5.417, 5.417, 5.5, 90, 90, 90))
    assert lattice_system((5.417, 5.417, 5.417, 90, 90, 90)) == "cubic"
    assert lattice_system((5.4, 5.4, 5.5, 90, 90, 90)) == "tetragonal"
    assert lattice_system((3.2, 3.2, 5.1, 90, 90, 120)) == "hexagonal"
    assert lattice_system((3.98, 4.33, 11.19, 90, 90, 90)) == "orthorhombic"
    assert lattice_system((5.4, 6.1, 7.2, 90, 101, 90)) == "monoclinic"
    assert lattice_system((5.4, 6.1, 7.2, 90, 90, 101)) == "monoclinic"
    assert lattice_system((5.4, 6.1, 7.2, 91, 101, 90)) == "triclinic"
    assert unique_axis((5.4, 6.1, 7.2, 90, 101, 90)) == 1
    assert unique_axis((5.4, 6.1, 7.2, 90, 90, 101)) == 2
    assert unique_axis((5.4, 6.1, 7.2, 91, 101, 90)) is None
    assert [len(system_groups(k)) for k in SYSTEM_GROUPS] == [
        36,
        68,
        52,
        59,
        13,
        1,
    ]


def test_monoclinic_settings_keep_the_unique_axis():
    """P2_1/c with b unique in the data: P2_1/c and P2_1/a (cell choices
    1 and 3; a 2_1 along b either way); with c unique, the screw axis
    along c and the glide along a or b."""
    b = settings(14, "monoclinic", 1)
    assert b == [(0, 1, 2), (2, 1, 0)]
    c = settings(14, "monoclinic", 2)
    assert all(axes[1] == 2 for axes in c) and len(c) == 2
    assert settings(10, "monoclinic", 1) == [(0, 1, 2)]  # P2/m
    # 0k0 with k odd is absent in each; h0l with l odd in P2_1/c only,
    # h odd in P2_1/a
    hkl = [[0, 1, 0], [1, 0, 1], [2, 0, 1], [1, 0, 2]]
    assert _forbidden(14, b[0])(hkl).tolist() == [1, 1, 1, 0]
    assert _forbidden(14, b[1])(hkl).tolist() == [1, 1, 0, 1]
    # c unique: 00l with l odd in both, hk0 with k odd or h odd
    hkl = [[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 0]]
    assert sorted(_forbidden(14, axes)(hkl).tolist() for axes in c) == [
        [1, 0, 1, 1],
        [1, 1, 0, 1],
    ]


def test_orthorhombic_settings_and_their_extinctions():
    """A group's distinct settings on the data's axes, and the reflections
    each forbids (Pnma: 0kl k+l odd, hk0 h odd, h00, 0k0, 00l odd)."""
    assert len(settings(62, "orthorhombic")) == 6  # Pnma, Pmnb, Pbnm, ...
    assert len(settings(47, "orthorhombic")) == 1  # Pmmm
    assert len(settings(70, "orthorhombic")) == 1  # Fddd
    assert len(settings(25, "orthorhombic")) == 3  # Pmm2, P2mm, Pm2m
    assert settings(62, "tetragonal") == [(0, 1, 2)]
    hkl = [[0, 1, 1], [0, 2, 1], [1, 1, 0], [2, 1, 0], [1, 0, 0], [2, 0, 0]]
    hkl += [[0, 1, 0], [0, 0, 1], [1, 1, 1]]
    pnma = _forbidden(62, (0, 1, 2))(hkl)
    assert pnma.tolist() == [0, 1, 1, 0, 1, 0, 1, 1, 0]
    # the same group with its a axis along the data's c (Pbnm-like):
    # the n glide now forbids hk0 with h + k odd
    other = _forbidden(62, (2, 0, 1))([[1, 0, 0], [1, 2, 0], [1, 1, 0]])
    assert other.tolist() == [1, 1, 0]


def test_common_groups_are_tried_first():
    """Without extinctions to judge (a G(r)), the settings go by the
    group's frequency in the training split and its order: the six
    settings each of Cmcm and Pnma first of the orthorhombic ones, Imma
    before the rarer groups of its order, and Fm-3m first of the cubic
    ones (by order alone: F groups first, Imma not among the 40)."""

    class GofR:  # a scorer with no extracted intensities
        pass

    assert group_prior(62, "orthorhombic") > 0.25  # Pnma
    assert group_prior(47, "orthorhombic") < 0.01  # Pmmm
    total = sum(group_prior(n, "cubic") for n in SYSTEM_GROUPS["cubic"])
    assert total == pytest.approx(1.0)
    tried = _candidate_settings(GofR(), "orthorhombic", None)
    numbers = [n for n, _ in tried]
    assert sorted(numbers[:12]) == [62] * 6 + [63] * 6
    assert 74 in numbers and 73 not in numbers  # Imma, not Ibca
    assert numbers.index(63) < numbers.index(74)  # Cmcm before Imma
    assert _candidate_settings(GofR(), "cubic", None)[0] == (225, (0, 1, 2))


def test_ways_to_fill_a_cell_are_few_and_valid():
    """KYb(BH4)4's cell (B16 H64 K4 Yb4) in every orthorhombic group:
    each way fills every count exactly, with at most MAX_SITES orbits
    per element where they can hold it, and a fixed position used once
    at most (pyxtal's own enumeration took 21 GB on it)."""
    from pyxtal.symmetry import Group

    from diffpy_mlsolve.wyckoff import MAX_COMBINATIONS, MAX_SITES
    from diffpy_mlsolve.wyckoff import _combinations as ways

    counts = (16, 64, 4, 4)
    found = 0
    for number in system_groups("orthorhombic"):
        g = Group(number)
        combos = ways(number, counts)
        assert len(combos) <= MAX_COMBINATIONS
        for combo in combos:
            found += 1
            labels = [x for element in combo for x in element]
            fixed = [
                x for x in labels if g.get_wyckoff_position(x).get_dof() == 0
            ]
            assert len(fixed) == len(set(fixed))
            general = g.Wyckoff_positions[0].multiplicity
            for n, element in zip(counts, combo):
                # more orbits only where MAX_SITES cannot hold n
                assert 1 <= len(element)
                assert len(element) <= MAX_SITES or n > MAX_SITES * general
                assert sum(int(x[:-1]) for x in element) == n
    assert found > 0
    # pyrite's Fe4 S8 in Pa-3: Fe on 4a or 4b, S on 8c; the two are one
    # structure moved by ½ ½ ½, and one is tried
    assert sorted(map(str, ways(205, (4, 8), distinct=False))) == [
        "[['4a'], ['8c']]",
        "[['4b'], ['8c']]",
    ]
    assert len(ways(205, (4, 8))) == 1


def test_ways_the_normalizer_relates_are_tried_once(monkeypatch):
    """Ways that another origin (or inversion, or a turn that keeps the
    metric) turns into each other are one structure moved: one of each
    is kept, so the MAX_COMBINATIONS tried reach further (SrAgSb's own
    way in P6_3/mmc was beyond them); an orthorhombic group's axis swaps
    change the structure in a cell of three lengths, and are kept."""
    import diffpy_mlsolve.wyckoff as wyckoff
    from diffpy_mlsolve.wyckoff import _canonical
    from diffpy_mlsolve.wyckoff import _combinations as ways

    # CsCl in Pm-3m: Cs 1a + Cl 1b or Cs 1b + Cl 1a
    assert len(ways(221, (1, 1), distinct=False)) == 2
    assert len(ways(221, (1, 1))) == 1
    # SrAgSb (Ag 2a, Sb 2d, Sr 2c) in P6_3/mmc, 16 ways tried
    monkeypatch.setattr(wyckoff, "MAX_COMBINATIONS", 16)
    own = _canonical(194, [["2a"], ["2d"], ["2c"]])
    assert own not in {
        _canonical(194, c) for c in ways(194, (2, 2, 2), distinct=False)
    }
    assert own in {_canonical(194, c) for c in ways(194, (2, 2, 2))}
    monkeypatch.setattr(wyckoff, "MAX_COMBINATIONS", 100)
    assert len(ways(194, (2, 2, 2), distinct=False)) == 24
    assert len(ways(194, (2, 2, 2))) == 12
    # Pmmm, one atom each: of the 56 ways, the second atom a half
    # translation from the first along a, b, c, a+b, a+c, b+c or a+b+c
    assert len(ways(47, (1, 1), distinct=False)) == 56
    assert len(ways(47, (1, 1))) == 7
    # P1 (in no lattice's list of groups): one way, its general position
    assert ways(1, (1, 2)) == [[["1a"], ["1a", "1a"]]]


@pytest.fixture(scope="module")
def herzenbergite():
    """(SnS in Pnma, given with its axes in the order b, c, a; its Cu Kα
    pattern; the extracted reflections)."""
    std = Structure.from_spacegroup(
        "Pnma",
        Lattice.orthorhombic(11.19, 3.98, 4.33),
        ["Sn", "S"],
        [[0.1185, 0.25, 0.1198], [0.8506, 0.25, 0.4793]],
    )
    truth = Structure(
        Lattice.orthorhombic(3.98, 4.33, 11.19),
        std.species,
        [[y, z, x] for x, y, z in std.frac_coords],
    )
    return (truth, *measured_pxrd(truth))


def test_an_element_of_many_orbits_still_gets_ways():
    """An element that needs more than MAX_SITES orbits gets the ways of
    the fewest (it got none, and its cell no trial): Nd2CoTe2(SO7)2's 14
    O in P-1 on seven 2i, RuOF4's 32 F in P2_12_12_1 on eight 4a."""
    from diffpy_mlsolve.wyckoff import MAX_COMBINATIONS, MAX_SITES
    from diffpy_mlsolve.wyckoff import _combinations as ways

    # Co, Nd, O, S, Te
    combos = ways(2, (1, 2, 14, 2, 2))
    assert 0 < len(combos) <= MAX_COMBINATIONS
    for combo in combos:
        assert combo[2] == ["2i"] * 7
        assert len(combo[0]) == 1 and combo[0][0].startswith("1")
    assert ways(19, (8, 8, 32)) == [[["4a"] * 2, ["4a"] * 2, ["4a"] * 8]]
    # no more orbits than needed where MAX_SITES would do
    assert all(
        len(e) <= MAX_SITES for combo in ways(62, (20, 16)) for e in combo
    )


def test_annealing_runs_only_where_no_trial_fits(herzenbergite, monkeypatch):
    """The trials anneal (ANNEAL_WAYS ways in full, their ends added to
    the trials, after a brief annealing of more) only when asked to and
    no refined trial reaches ``fits``."""
    import diffpy_mlsolve.wyckoff as wyckoff

    truth, _, refl = herzenbergite
    scorer = ProfileScorer(refl)
    calls = []
    real = wyckoff._anneal

    def counted(
        scorer, way, rng, chains=None, steps=None, contacts=None, **kw
    ):
        calls.append(chains)  # None: in full
        assert contacts is not None  # atoms kept apart
        return real(scorer, way, rng, 8, 20, contacts)

    monkeypatch.setattr(wyckoff, "_anneal", counted)
    args = (scorer, {"Sn": 4, "S": 4}, truth.lattice.parameters)
    best = wyckoff_trials(*args)[0][0]
    assert calls == []
    assert wyckoff_trials(*args, fits=1.01 * best)[0][0] == best
    assert calls == []
    trials = wyckoff_trials(*args, fits=0.0)
    assert calls.count(None) == wyckoff.ANNEAL_WAYS
    assert calls.count(wyckoff.ANNEAL_SCREEN_CHAINS) > wyckoff.ANNEAL_WAYS
    assert trials[0][0] <= best


def test_the_ways_annealed_are_screened_by_a_brief_annealing(herzenbergite):
    """The ways annealed in full are found by a brief annealing of every
    way of the most likely settings, not only from the best trials' ways
    (Ba5P4's and NaFePO4's own, in their most likely setting, were not
    among those): with no trial at all, SnS's own way (Sn 4c, S 4c in
    Pnma on the data's axes) is picked first."""
    from diffpy_mlsolve.atoms import _lattice_matrix, contact_limits
    from diffpy_mlsolve.wyckoff import (
        ANNEAL_SETTINGS,
        ANNEAL_WAYS,
        _screened,
        _ways,
    )

    truth, _, refl = herzenbergite
    lattice = truth.lattice.parameters
    ways, first = _ways(ProfileScorer(refl), ["S", "Sn"], (4, 4), lattice)
    starts = sorted(set(first))
    picked = _screened(
        ways,
        first,
        [],
        _lattice_matrix(lattice),
        contact_limits(["S", "Sn"], 0.9),
        np.random.default_rng(0),
    )
    assert len(picked) == ANNEAL_WAYS
    # only the most likely settings' ways, with no trials to add theirs
    assert all(first[i] in starts[:ANNEAL_SETTINGS] for i in picked)
    number, _, combo, _ = ways[picked[0]]
    assert (number, combo) == (62, [["4c"], ["4c"]])
    # in the setting the extinctions pick, (b, c, a); Cmcm's is first
    tried = _candidate_settings(ProfileScorer(refl), "orthorhombic", None)
    assert tried[starts.index(first[picked[0]])] == (62, (2, 0, 1))


def test_extinctions_pick_the_setting(herzenbergite):
    """The pattern allows Pnma with its axes as the data have them, and
    contradicts it with the standard's."""
    _, _, refl = herzenbergite
    assert consistent(refl, 62, (2, 0, 1))[0]
    assert not consistent(refl, 62, (0, 1, 2))[0]


def test_trials_solve_an_orthorhombic_cell_in_another_setting(
    herzenbergite,
):
    """SnS's 8 atoms from the pattern alone: the best trial is in Pnma
    (4c + 4c, four free coordinates, drawn 96 times per way), and refined
    further as the solver refines it, it is SnS at the truth's Rwp."""
    truth, _, refl = herzenbergite
    scorer = ProfileScorer(refl)
    trials = wyckoff_trials(
        scorer, {"Sn": 4, "S": 4}, truth.lattice.parameters
    )
    assert trials[0][2] == 62
    sym, r = _polished(scorer, trials[0][1])  # as the solver does
    assert sym.number == 62
    assert MATCH.fit(sym.to_pymatgen(), truth)
    assert r == pytest.approx(scorer.rwp(truth), rel=0.05)
    scores = [t[0] for t in trials]
    assert scores == sorted(scores)


def test_trials_find_pyrite_by_the_fit(pyrite):
    """The cell's contents in Wyckoff orbits of the primitive cubic
    groups, free coordinates drawn at random and the best refined: the
    best trial is pyrite in Pa-3 at the truth's Rwp, and the trials
    that are not pyrite fit worse."""
    truth, _, refl = pyrite
    scorer = ProfileScorer(refl)
    trials = wyckoff_trials(
        scorer, {"Fe": 4, "S": 8}, truth.lattice.parameters, "P"
    )
    assert trials and trials[0][2] == 205  # Pa-3
    scores = [t[0] for t in trials]
    assert scores == sorted(scores)
    sym, r = _polished(scorer, trials[0][1])
    assert sym.number == 205
    assert MATCH.fit(sym.to_pymatgen(), truth)
    assert r == pytest.approx(scorer.rwp(truth), rel=0.02)
    others = [t for t in trials if not MATCH.fit(t[1].to_pymatgen(), truth)]
    assert others and all(t[0] > 2 * scorer.rwp(truth) for t in others)


def test_a_way_places_whole_orbits_on_the_data_axes():
    """A way's affine map puts each orbit where pyxtal's operations put
    it, with the standard axes moved to the data's."""
    from pyxtal.symmetry import Group

    from diffpy_mlsolve.wyckoff import _place, _way_map

    axes = (2, 0, 1)
    way = _way_map(62, [["4c"], ["8d"]], ["S", "Sn"], axes)
    assert way[3] == ["S"] * 4 + ["Sn"] * 8
    points = np.random.default_rng(3).random((2, 2, 3))
    frac = _place(way, points)
    g = Group(62)
    for k in range(2):
        want = []
        for label, v in zip(("4c", "8d"), points[k]):
            wp = g.get_wyckoff_position(label)
            want.append(np.asarray(wp.apply_ops(wp.ops[0].operate(v))))
        want = np.mod(np.vstack(want), 1.0)
        moved = np.empty_like(want)
        moved[:, list(axes)] = want
        assert np.allclose(frac[k], moved)


def test_draws_are_scored_at_the_reflections_of_distinct_intensity(
    herzenbergite,
):
    """Atoms in whole orbits of Pnma (on the data's axes b, c, a) have
    equal |F|^2 at reflections its rotations relate: scored at one of
    each set (about a quarter of the reflections), their Rwp are the full
    scorer's."""
    from diffpy_mlsolve.wyckoff import (
        _draw_rwp,
        _place,
        _Symmetric,
        _way_map,
    )

    _, _, refl = herzenbergite
    scorer = ProfileScorer(refl)
    view = _Symmetric(scorer, 62, (2, 0, 1))
    assert len(view.hkl) < 0.4 * len(scorer.hkl)  # zones have fewer
    way = _way_map(62, [["4c"], ["8d"]], ["S", "Sn"], (2, 0, 1))
    fracs = _place(way, np.random.default_rng(0).random((20, 2, 3)))
    full = _draw_rwp(scorer, fracs, way[3])
    assert np.allclose(_draw_rwp(view, fracs, way[3]), full, atol=1e-12)
    assert np.ptp(full) > 0.05  # the draws differ
    # atoms not in orbits of the group score otherwise
    loose = np.random.default_rng(1).random(fracs.shape)
    assert not np.allclose(
        _draw_rwp(view, loose, way[3]), _draw_rwp(scorer, loose, way[3])
    )


def test_annealing_a_way_finds_its_structure(herzenbergite):
    """SnS's way (S and Sn on Pnma's 4c, on the data's axes b, c, a)
    annealed with few chains: the best end, refined, is SnS at the
    truth's Rwp."""
    from diffpy_mlsolve.sitesearch import refine_positions
    from diffpy_mlsolve.structures import CrystalArrays
    from diffpy_mlsolve.symmetry import find_symmetry
    from diffpy_mlsolve.wyckoff import _anneal, _way_map

    truth, _, refl = herzenbergite
    scorer = ProfileScorer(refl)
    way = _way_map(62, [["4c"], ["4c"]], ["S", "Sn"], (2, 0, 1))
    ends = _anneal(scorer, way, np.random.default_rng(0), 16, 300)
    assert ends.shape == (16, 8, 3)
    crystal = CrystalArrays(
        np.asarray(truth.lattice.parameters, float),
        ends[0],
        np.array([16] * 4 + [50] * 4),
        np.ones(8),
        np.ones(8),
        "S4Sn4",
    )
    sym, r = refine_positions(scorer, find_symmetry(crystal, (1e-3, 0.01)))
    assert MATCH.fit(sym.to_pymatgen(), truth)
    assert r == pytest.approx(scorer.rwp(truth), rel=0.05)


def test_a_trial_that_loses_atoms_on_refinement_is_dropped(
    herzenbergite, monkeypatch
):
    """Refinement can merge an atom with its image (an annealed atom
    within 1e-3 of a special position): such a trial has other contents
    and is dropped, not scored (it crashed the clash test)."""
    import dataclasses

    import diffpy_mlsolve.sitesearch as sitesearch

    truth, _, refl = herzenbergite
    scorer = ProfileScorer(refl)
    real = sitesearch.refine_positions

    def merging(scorer, sym, **kw):
        sym, r = real(scorer, sym, **kw)
        if sym.number != 62:
            return sym, r
        # one S site's image lands on another: an atom fewer
        frac = np.array(sym.frac, float)
        return dataclasses.replace(sym, frac=frac[1:]), r

    monkeypatch.setattr(sitesearch, "refine_positions", merging)
    trials = wyckoff_trials(
        scorer, {"Sn": 4, "S": 4}, truth.lattice.parameters
    )
    assert trials and all(sym.number != 62 for _, sym, _ in trials)
    assert all(sym.to_crystal().natoms == 8 for _, sym, _ in trials)


def test_trials_solve_a_monoclinic_cell():
    """A P2_1/m cell (b unique, β = 104°; Sr, Se and two O on 2e, eight
    free coordinates, no contact inside its limit: the annealing keeps
    atoms apart) from its pattern alone: the best trial, refined as
    the solver refines it, is the structure in P2_1/m."""
    truth = Structure.from_spacegroup(
        "P2_1/m",
        Lattice.monoclinic(4.9, 5.6, 6.3, 104.0),
        ["Sr", "Se", "O", "O"],
        [
            [0.31, 0.25, 0.18],
            [0.82, 0.25, 0.66],
            [0.41, 0.25, 0.73],
            [0.71, 0.25, 0.93],
        ],
    )
    _, refl = measured_pxrd(truth)
    scorer = ProfileScorer(refl)
    trials = wyckoff_trials(
        scorer,
        {"O": 4, "Se": 2, "Sr": 2},
        truth.lattice.parameters,
        fits=1.3 * scorer.floor,
    )
    # refined and ranked as the solver does (_wyckoff_candidates)
    polished = [_polished(scorer, t[1]) for t in trials]
    sym, r = min(polished, key=lambda p: _premium(p[1], len(p[0].rotations)))
    assert sym.symbol == "P2_1/m"
    assert MATCH.fit(sym.to_pymatgen(), truth)
    assert r < 1.5 * scorer.rwp(truth)


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
    # built in Pa-3 or a subgroup (P2_13) whose refined sites rise to it
    assert best.info["sites_from"] in (
        "Wyckoff orbits of group 205",
        "Wyckoff orbits of group 198",
    )
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


def test_pyrite_z_outside_the_density_tolerance_gets_trials(pyrite):
    """Pyrite's volume estimate is 2.9 formula units for 4, outside the
    tolerance the densities' Z keep (0.3 in ln Z): the Wyckoff trials,
    Z left to the solver, still try 4 and find pyrite."""
    from diffpy_mlsolve.atoms import formula_unit_options

    truth, pattern, refl = pyrite
    volume = truth.lattice.volume
    assert formula_unit_options("FeS2", volume, systems="cubic") == [3]
    rng = np.random.default_rng(0)
    noise = Density(rng.random((24, 24, 24)) * 0.5, truth.lattice.parameters)
    cands = candidates_from_densities(
        [noise], pattern, "FeS2", reflections=refl
    )
    best = cands[0]
    assert 4 in best.info["formula_units_tried"]
    assert best.density is None and best.spacegroup == "Pa-3"
    assert MATCH.fit(best.to_pymatgen(), truth)


def test_a_map_that_shows_nothing_still_solves_an_orthorhombic_cell(
    herzenbergite,
):
    """A density of noise in SnS's cell (axes b, c, a), Z left to the
    solver: the best candidate is a Wyckoff one, SnS in Pnma."""
    truth, pattern, refl = herzenbergite
    rng = np.random.default_rng(0)
    noise = Density(rng.random((24, 24, 24)) * 0.5, truth.lattice.parameters)
    cands = candidates_from_densities(
        [noise], pattern, "SnS", reflections=refl
    )
    best = cands[0]
    assert best.info["sites_from"].startswith("Wyckoff orbits of group")
    assert best.density is None and best.spacegroup == "Pnma"
    assert best.info["formula_units_tried"][0] == 4
    assert MATCH.fit(best.to_pymatgen(), truth)


def test_a_cubic_candidate_that_fits_needs_no_wyckoff_trials(
    pyrite, monkeypatch
):
    """From pyrite's own density the candidate is Pa-3 at 1.18 times the
    floor: with WYCKOFF_FIT above that no Wyckoff trials are made; at the
    shipped 1.1 they are, and pyrite still ranks first (the trials'
    Pa-3 and the density's refine to the same fit).
    With the threshold at 0 (no fit is good enough) pyrite is among the
    trials too."""
    import diffpy_mlsolve.ranking as ranking
    from diffpy_mlsolve.simulate import electron_density

    truth, pattern, refl = pyrite
    density = electron_density(truth, grid=32, standardize=False)
    monkeypatch.setattr(ranking, "WYCKOFF_FIT", 1.25)
    cands = candidates_from_densities(
        [density], pattern, "FeS2", formula_units=4, reflections=refl
    )
    assert cands[0].spacegroup == "Pa-3"
    ratio = cands[0].info["profile_rwp"] / cands[0].info["profile_rwp_floor"]
    assert 1.1 < ratio < 1.25
    assert all(c.density is not None for c in cands)
    monkeypatch.setattr(ranking, "WYCKOFF_FIT", 1.1)
    cands = candidates_from_densities(
        [density], pattern, "FeS2", formula_units=4, reflections=refl
    )
    assert any(c.density is None for c in cands)
    assert cands[0].spacegroup == "Pa-3"
    assert MATCH.fit(cands[0].to_pymatgen(), truth)
    monkeypatch.setattr(ranking, "WYCKOFF_FIT", 0.0)
    cands = candidates_from_densities(
        [density], pattern, "FeS2", formula_units=4, reflections=refl
    )
    wyckoff = [c for c in cands if c.density is None]
    assert wyckoff and any(MATCH.fit(c.to_pymatgen(), truth) for c in wyckoff)


def test_only_the_best_fitting_contents_are_annealed(
    herzenbergite, monkeypatch
):
    """Where no trial comes within ANNEAL_FIT times the floor (here set
    to 0), the trials of every Z tried run without annealing, and those
    of the best-fitting contents once more with it: one annealed call,
    not one per Z."""
    import diffpy_mlsolve.ranking as ranking
    import diffpy_mlsolve.wyckoff as wyckoff

    truth, pattern, refl = herzenbergite
    calls = []
    real = wyckoff.wyckoff_trials

    def spy(scorer, contents, *args, fits=None, **kw):
        calls.append((dict(contents), fits))
        return real(scorer, contents, *args, fits=None, **kw)

    monkeypatch.setattr(wyckoff, "wyckoff_trials", spy)
    monkeypatch.setattr(ranking, "ANNEAL_FIT", 0.0)
    monkeypatch.setattr(ranking, "WYCKOFF_FIT", 0.0)  # every Z tried
    noise = Density(
        np.random.default_rng(0).random((24, 24, 24)) * 0.5,
        truth.lattice.parameters,
    )
    cands = candidates_from_densities(
        [noise], pattern, "SnS", reflections=refl
    )
    tried = next(
        c.info["formula_units_tried"]
        for c in cands
        if c.info["sites_from"].startswith("Wyckoff")
    )
    plain = [c for c, fits in calls if fits is None]
    annealed = [c for c, fits in calls if fits is not None]
    assert len(plain) == len(tried) > 1
    assert annealed == [{"S": 4, "Sn": 4}]  # SnS's Z, the best fit


@pytest.mark.parametrize("ratio, trials", [(1.05, False), (1.5, True)])
def test_powder_trials_unless_a_candidate_fits_closely(
    herzenbergite, monkeypatch, ratio, trials
):
    """A powder pattern's Wyckoff trials run unless a candidate of the
    lattice's system comes within WYCKOFF_FIT (1.1) times the floor: a
    subgroup candidate at 1.13 kept YGe3 (Cmcm) from its trials, whose
    Cmcm wins.  A G(r)'s keep the looser WYCKOFF_FIT_PDF (2)."""
    import diffpy_mlsolve.wyckoff as wyckoff
    from diffpy_mlsolve.ranking import (
        WYCKOFF_FIT,
        WYCKOFF_FIT_PDF,
        _wyckoff_candidates,
    )
    from diffpy_mlsolve.sitesearch import PDFScorer
    from diffpy_mlsolve.solver import Candidate
    from diffpy_mlsolve.structures import as_crystal
    from diffpy_mlsolve.symmetry import find_symmetry

    assert WYCKOFF_FIT < ratio < WYCKOFF_FIT_PDF or ratio < WYCKOFF_FIT
    truth, pattern, refl = herzenbergite
    scorer = ProfileScorer(refl)
    sym = find_symmetry(as_crystal(truth, standardize=False), 0.01)
    assert sym.number == 62
    fitted = Candidate(
        rank=1,
        structure=sym.to_diffpy(),
        symmetry=sym,
        info={"profile_rwp": ratio * scorer.floor},
    )
    calls = []
    monkeypatch.setattr(
        wyckoff,
        "wyckoff_trials",
        lambda *a, **k: calls.append(1) or [],
    )
    density = Density(np.zeros((8, 8, 8)) + 0.1, truth.lattice.parameters)
    _wyckoff_candidates([fitted], density, pattern, "SnS", 4, scorer, 0.9)
    assert bool(calls) == trials
    # a G(r)'s scorer: no trials below twice the floor
    calls.clear()
    monkeypatch.setattr(scorer, "__class__", PDFScorer)
    _wyckoff_candidates([fitted], density, pattern, "SnS", 4, scorer, 0.9)
    assert not calls


def test_ways_of_many_free_coordinates_get_draws():
    """A way of 63 or more free coordinates gets MAX_DRAWS draws (2**63
    in numpy's int64 made it none, and the trials of Yb11(SnBi4)2's 84
    atoms stopped on an empty draw)."""
    from diffpy_mlsolve.wyckoff import DRAWS, MAX_DRAWS, _draws

    assert _draws(2, [["2i"] * 21]) == MAX_DRAWS  # 63 in P-1
    assert _draws(2, [["2i"] * 30]) == MAX_DRAWS
    assert _draws(2, [["1a"], ["2i"]]) == min(MAX_DRAWS, DRAWS * 2**3)
