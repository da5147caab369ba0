"""Candidates from densities: the quick R factor, ranking, repeats, and
the files a solve writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

import diffpy_mlsolve as ms
from diffpy_mlsolve.errors import (
    PhysicsInputError,
    WavelengthError,
)
from diffpy_mlsolve.evaluation_atoms import match_candidates
from diffpy_mlsolve.ranking import (
    candidates_from_densities,
    contact_ratio,
    rank_candidates,
)
from diffpy_mlsolve.rfactor import pattern_rfactor
from diffpy_mlsolve.solver import SolveResult
from diffpy_mlsolve.structures import to_pymatgen


def _anti_nacl():
    """Na and Cl on the zinc-blende sites: right cell, wrong structure."""
    return Structure.from_spacegroup(
        "F-43m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [1 / 4] * 3]
    )


@pytest.fixture(scope="module")
def nacl_pattern(textbook_structures):
    return ms.simulate_pxrd(
        textbook_structures["NaCl"],
        "CuKa",
        fwhm=0.12,
        eta=0.3,
        background=[0.05, 0.01],
        counts=1e4,
        seed=1,
    )


def test_rfactor_tells_right_from_wrong(textbook_structures, nacl_pattern):
    right = pattern_rfactor(textbook_structures["NaCl"], nacl_pattern)
    wrong = pattern_rfactor(_anti_nacl(), nacl_pattern)
    assert right < 0.08  # the noise level of 1e4 counts
    assert wrong > 2 * right
    # the same figure from the pattern on Q (wavelength carried along)
    on_q = pattern_rfactor(textbook_structures["NaCl"], nacl_pattern.on_q())
    assert on_q == pytest.approx(right, rel=0.05)


def test_rfactor_refuses_what_it_cannot_score(textbook_structures):
    nacl = textbook_structures["NaCl"]
    bare = ms.Pattern.from_arrays(
        np.linspace(1, 5, 500), np.ones(500), xtype="q"
    )
    with pytest.raises(WavelengthError):
        pattern_rfactor(nacl, bare)
    gr = ms.simulate_pdf(nacl, rmax=10)  # a G(r) is scored in r ...
    assert pattern_rfactor(nacl, gr) < 0.02
    bare_gr = ms.Pattern.from_arrays(gr.x, gr.intensity, xtype="r")
    with pytest.raises(PhysicsInputError, match="qmax="):  # ... with Qmax
        pattern_rfactor(nacl, bare_gr)


def test_right_density_ranks_first_and_matches(
    textbook_structures, nacl_pattern
):
    truth = textbook_structures["NaCl"]
    good = ms.electron_density(truth, grid=32)
    bad = ms.electron_density(_anti_nacl(), grid=32)
    cands = candidates_from_densities([bad, good, good], nacl_pattern, "NaCl")
    assert [c.rank for c in cands] == [1, 2, 3]
    first = cands[0]
    assert first.info["density_sample"] in (2, 3)  # a right density
    assert first.spacegroup == "Fm-3m"
    assert first.info["formula"] == "Na4Cl4"
    # the repeat of the right structure ranks after the distinct wrong one
    assert cands[1].info["density_sample"] == 1
    assert "same_as_sample" in cands[2].info
    assert match_candidates(cands, truth, "loose")["top1"]
    assert match_candidates(cands, truth, "default")["rms"] < 0.05
    # zinc-blende NaCl is rock salt to the loose (MP-20) matcher, not to
    # pymatgen's defaults
    assert match_candidates(cands[1:2], truth, "loose")["topk"]
    assert not match_candidates(cands[1:2], truth, "default")["topk"]


def test_implausible_contacts_are_measured():
    ok = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]])
    crowded = Structure(
        Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.1, 0, 0]]
    )
    assert contact_ratio(ok) > 1
    assert contact_ratio(crowded) < 0.3  # 0.4 Å apart


def test_a_failed_density_is_flagged_not_written(
    textbook_structures, nacl_pattern, tmp_path
):
    truth = textbook_structures["NaCl"]
    flat = ms.electron_density(
        Structure(Lattice.cubic(5.64), ["Cl"], [[0, 0, 0]]), grid=24
    )
    good = ms.electron_density(truth, grid=24)
    cands = candidates_from_densities(
        [flat, good], nacl_pattern, "NaCl", formula_units=4
    )
    assert cands[-1].failed and "peaks" in cands[-1].failed
    res = SolveResult(candidates=cands)
    assert res.best is cands[0]
    out = res.write(tmp_path / "run")
    names = sorted(p.name for p in out.iterdir())
    assert "best.cif" in names and "density_01.png" in names
    assert "candidate_02.cif" not in names  # the failed one
    cif = (out / "best.cif").read_text()
    assert "Fm-3m" in cif
    report = json.loads((out / "report.json").read_text())
    entry = report["candidates"][0]
    assert entry["spacegroup_number"] == 225
    assert {w["wyckoff"] for w in entry["asymmetric_unit"]} == {"4a", "4b"}
    assert report["candidates"][1]["failed"]


def test_refined_candidates_rank_by_rwp_and_write_fits(
    textbook_structures, nacl_pattern, tmp_path
):
    pytest.importorskip("pyobjcryst")
    truth = textbook_structures["NaCl"]
    good = ms.electron_density(truth, grid=24)
    bad = ms.electron_density(_anti_nacl(), grid=24)
    cands = candidates_from_densities(
        [bad, good], nacl_pattern, "NaCl", refine="rietveld"
    )
    first, second = cands
    assert first.info["density_sample"] == 2
    assert first.refinement is not None and first.rwp < 0.08
    assert second.rwp > 1.5 * first.rwp  # the wrong one fits worse
    assert first.spacegroup == "Fm-3m"  # the refinement kept the group
    assert first.symmetry.number == 225
    # refine_top: only the quick ranking's best is refined
    top = candidates_from_densities(
        [bad, good], nacl_pattern, "NaCl", refine="rietveld", refine_top=1
    )
    assert top[0].info["density_sample"] == 2 and top[0].rwp is not None
    assert top[1].refinement is None and top[1].rwp is None
    out = SolveResult(candidates=cands).write(tmp_path / "run")
    assert (out / "fit_01.png").stat().st_size > 1000
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"][0]["rwp"] == pytest.approx(first.rwp)
    assert "lattice" in report["candidates"][0]["refinement"]
    assert report["versions"]["pyobjcryst"]  # the refiner's version too


def test_a_cell_that_does_not_index_the_pattern_is_refused(nacl_pattern):
    from diffpy_mlsolve.cellcheck import check_cell, unindexed_peaks
    from diffpy_mlsolve.errors import StructureError

    right = (5.64, 5.64, 5.64, 90, 90, 90)
    # Kα2 lines are included; noise may fake a shoulder or two
    assert len(unindexed_peaks(nacl_pattern, right)[0]) <= 2
    check_cell(nacl_pattern, right)
    # zero shift allowed
    shifted = ms.Pattern.from_arrays(
        nacl_pattern.x + 0.08,
        nacl_pattern.intensity,
        wavelength="CuKa",
    )
    check_cell(shifted, right)
    with pytest.raises(StructureError, match="no reflection near"):
        check_cell(nacl_pattern, (5.0, 5.0, 5.0, 90, 90, 90))
    solver = ms.get_solver("crystalnet", device="cpu")
    with pytest.raises(StructureError, match="leave the cell out"):
        solver.solve(nacl_pattern, "NaCl", (4.5, 4.5, 6.1, 90, 90, 90))


def test_without_a_cell_the_pattern_is_indexed(textbook_structures):
    pytest.importorskip("pyobjcryst")
    pattern = ms.simulate_pxrd(
        textbook_structures["CsCl"], "CuKa1", fwhm=0.1, counts=1e5, seed=2
    )
    solver = ms.get_solver("crystalnet", device="cpu")
    res = solver.solve(pattern, "CsCl", None, n_candidates=2, n_cells=1)
    (cell,) = res.settings["indexed_cells"]
    assert cell["bravais"] == "cP"
    assert cell["lattice"][0] == pytest.approx(4.12, rel=0.005)
    assert res.inputs["lattice"] is None
    best = res.best
    assert best.info["cell"] == cell
    assert best.spacegroup == "Pm-3m"


def test_a_placement_whose_cell_shrinks_does_not_abort_the_solve():
    """mp-232 (DyRh, CsCl type): a Z = 4 trial gave element placements
    whose true period is smaller than the cell; spglib could not put them
    back in the cell and the error aborted the whole solve."""
    from textbook import SHARED

    from diffpy_mlsolve.data.sources import open_source
    from diffpy_mlsolve.evaluation_atoms import _pattern, _solve

    table = SHARED / "test.csv.gz"
    if not table.is_file():
        pytest.skip("needs ../shared/data/structures/test.csv.gz")
    rec = list(open_source(table, systems=["cubic"], limit=2))[1]
    assert rec.id == "mp-232"
    solver = ms.get_solver("crystalnet", device="cpu")
    options = dict(n_candidates=5, refine=None, seed=0, phasing="flip")
    res = _solve(solver, _pattern(rec, 0, 1), rec, options)
    assert not isinstance(res, Exception), res
    truth = to_pymatgen(rec.crystal)
    assert match_candidates(res.candidates, truth, "default")["top1"]


def test_a_failed_refinement_ranks_after_the_refined(textbook_structures):
    from diffpy_mlsolve.solver import Candidate
    from diffpy_mlsolve.symmetry import find_symmetry

    def cand(name, **kw):
        sym = find_symmetry(textbook_structures[name])
        return Candidate(rank=1, structure=sym.to_diffpy(), symmetry=sym, **kw)

    # quick R 0.05 (refinement crashed) against a refined Rwp of 0.2
    crashed = cand("CsCl", pattern_rfactor=0.05)
    refined = cand("NaCl", pattern_rfactor=0.3, rwp=0.2)
    ranked = rank_candidates([crashed, refined])
    assert [c.rwp for c in ranked] == [0.2, None]
    # unrefined candidates alone rank by their quick R
    ranked = rank_candidates([cand("NaCl", pattern_rfactor=0.3), crashed])
    assert [c.pattern_rfactor for c in ranked] == [0.05, 0.3]


def test_picked_sites_stay_in_the_density_frame(
    textbook_structures, nacl_pattern
):
    shifted = textbook_structures["NaCl"].copy()
    shift = np.array([0.1, 0.2, 0.3])
    shifted.translate_sites(range(len(shifted)), shift)
    density = ms.electron_density(shifted, grid=32, standardize=False)
    (cand,) = candidates_from_densities([density], nacl_pattern, "NaCl")
    picked = np.asarray(cand.info["picked_sites"]["frac"])
    truth = np.mod(shifted.frac_coords, 1)
    # every picked site sits on an atom of the shifted crystal
    d = np.abs((picked[:, None, :] - truth[None]) + 0.5) % 1 - 0.5
    assert np.linalg.norm(d, axis=2).min(axis=1).max() < 0.02
    assert len(picked) == 8


def test_without_a_cell_a_missing_model_is_not_blamed_on_the_cells(
    textbook_structures, tmp_path
):
    from diffpy_mlsolve.errors import ModelNotAvailableError

    pytest.importorskip("pyobjcryst")
    pattern = ms.simulate_pxrd(
        textbook_structures["CsCl"], "CuKa1", counts=1e5, seed=0
    )
    empty = tmp_path / "no-model"
    empty.mkdir()
    solver = ms.get_solver("crystalnet", device="cpu", weights=empty)
    with pytest.raises(ModelNotAvailableError):
        solver.solve(pattern, "CsCl", None, n_candidates=1, n_cells=1)


def test_placements_and_the_symmetry_premium(textbook_structures):
    from diffpy_mlsolve.ranking import SYMMETRY_PREMIUM, decorations
    from diffpy_mlsolve.solver import Candidate
    from diffpy_mlsolve.symmetry import find_symmetry

    nacl = find_symmetry(textbook_structures["NaCl"])
    # 4a and 4b: the one other placement swaps the elements
    assert decorations(nacl) == [tuple(reversed(nacl.elements))]
    rattled = textbook_structures["NaCl"].copy()
    rattled.perturb(0.05, min_distance=0.05)
    p1 = find_symmetry(rattled, symprec=(1e-3,))
    assert p1.number == 1

    def cand(sym, r):
        return Candidate(
            rank=1, structure=sym.to_diffpy(), symmetry=sym, pattern_rfactor=r
        )

    # P1 must fit clearly better than Fm-3m to rank first
    r = 0.1
    slightly = r * (1 + 0.5 * SYMMETRY_PREMIUM)
    ranked = rank_candidates([cand(p1, r), cand(nacl, slightly)])
    assert ranked[0].symmetry.number == 225
    clearly = r * (1 + 2 * SYMMETRY_PREMIUM)
    ranked = rank_candidates([cand(p1, r), cand(nacl, clearly)])
    assert ranked[0].symmetry.number == 1
    # a refined structure whose group was not re-detected keeps its rank
    refined = Candidate(
        rank=1,
        structure=nacl.to_diffpy(),
        pattern_rfactor=slightly,
        info={"symmetry_ops": len(nacl.rotations)},
    )
    ranked = rank_candidates([cand(p1, r), refined])
    assert ranked[0].symmetry is None
