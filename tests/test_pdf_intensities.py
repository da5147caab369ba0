"""Solving from a PDF G(r): Bragg intensities fitted in r, the G(r) R
factor, the solver on a nanoparticle G(r), the evaluation's PDF rows and
the typed errors (real kernels and solver, no mocks)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from diffpy_mlsolve.errors import (
    PatternFormatError,
    PhysicsInputError,
    StructureError,
)
from diffpy_mlsolve.pattern import Pattern
from diffpy_mlsolve.pdf_intensities import equivalent_powder, pdf_intensities
from diffpy_mlsolve.rfactor import pattern_rfactor, pdf_rfactor
from diffpy_mlsolve.simulate import simulate_pdf

A = 5.64
CELL = (A, A, A, 90.0, 90.0, 90.0)


def _nacl(biso=0.6):
    s = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(A), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]
    )
    s.add_site_property("biso", [biso] * len(s))
    return s


def _zincblende():
    return Structure.from_spacegroup(
        "F-43m", Lattice.cubic(A), ["Na", "Cl"], [[0, 0, 0], [0.25] * 3]
    )


def _particle(structure, diameter=30.0, noise=0.01, seed=0, **meta):
    gr = simulate_pdf(
        structure, rmax=30.0, qmax=25.0, qdamp=0.03, diameter=diameter
    )
    rng = np.random.default_rng(seed)
    g = gr.intensity + rng.normal(
        0, noise * np.abs(gr.intensity).max(), gr.x.size
    )
    return Pattern.from_arrays(gr.x, g, xtype="r", metadata=meta)


@pytest.fixture(scope="module")
def gr_3nm():
    return _particle(_nacl(), qmax=25.0)


@pytest.fixture(scope="module")
def fit_3nm(gr_3nm):
    return pdf_intensities(gr_3nm, CELL)


def _f2_of(refl, hkl):
    i = np.flatnonzero(np.all(np.abs(refl.hkl) == hkl, axis=1))
    return float(refl.f2[i[0]])


def test_intensities_fit_the_data_and_recover_the_particle(fit_3nm):
    assert fit_3nm.rw < 0.06  # noise is 1 % of max |G|
    assert abs(fit_3nm.diameter - 30.0) < 3.0
    refl = fit_3nm.reflections
    # F(111) of rock salt: 4 (Z_Cl - Z_Na) = 24; F(200): 4 (11 + 17) = 112
    # (point scatterers, the PDF convention), damped by B = 0.6
    truth = {
        (1, 1, 1): 24.0**2 * math.exp(-0.6 * 3 / A**2 / 2),
        (2, 0, 0): 112.0**2 * math.exp(-0.6 * 4 / A**2 / 2),
    }
    ratio = _f2_of(refl, (1, 1, 1)) / _f2_of(refl, (2, 0, 0))
    assert ratio == pytest.approx(truth[1, 1, 1] / truth[2, 0, 0], rel=0.25)
    # (111) and (200) lie 0.3 Å^-1 apart: isolated groups; the dense
    # high-Q shells are not
    i111 = np.flatnonzero(np.all(np.abs(refl.hkl) == (1, 1, 1), axis=1))[0]
    assert refl.isolated[refl.group[i111]]
    assert not refl.isolated[refl.group[np.argmax(refl.dstar)]]
    # absent in F-centring: (100), (110)
    strong = _f2_of(refl, (2, 0, 0))
    assert _f2_of(refl, (1, 0, 0)) < 0.02 * strong
    assert _f2_of(refl, (1, 1, 0)) < 0.02 * strong


def test_for_phasing_limits_resolution_and_blurs(fit_3nm):
    refl = fit_3nm.for_phasing(dmin=1.0, blur=2.0)
    beyond = fit_3nm.reflections.dstar > 1.0
    assert np.all(refl.group[beyond] == -1)
    assert np.all(np.isnan(refl.f2[beyond]))
    i = np.flatnonzero(~beyond & (fit_3nm.reflections.f2 > 0))[-1]
    d2 = fit_3nm.reflections.dstar[i] ** 2
    assert refl.f2[i] == pytest.approx(
        fit_3nm.reflections.f2[i] * math.exp(-d2)
    )


def test_equivalent_powder_has_the_rock_salt_lines(fit_3nm):
    pat = equivalent_powder(fit_3nm)
    assert pat.xtype == "tth" and pat.wavelength == pytest.approx(1.5406)
    top = pat.x[np.argmax(pat.intensity)]
    d200 = A / 2
    assert top == pytest.approx(
        2 * math.degrees(math.asin(1.5406 / (2 * d200))), abs=0.1
    )


def test_pdf_rfactor_prefers_the_right_structure(gr_3nm):
    right, fit = pdf_rfactor(_nacl(biso=1.0), gr_3nm, return_curves=True)
    wrong = pdf_rfactor(_zincblende(), gr_3nm)
    assert right < 0.08  # Biso fitted from 1.0 to the data's 0.6
    assert fit["profile"]["biso"] == pytest.approx(0.6)
    assert wrong > 3 * right
    # pattern_rfactor hands a G(r) to pdf_rfactor
    assert pattern_rfactor(_nacl(), gr_3nm) == pytest.approx(right)


def test_solver_solves_a_nanoparticle_pdf(gr_3nm):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from diffpy_mlsolve.plugins import get_solver

    res = get_solver("crystalnet", device="cpu").solve(
        gr_3nm, "NaCl", CELL, n_candidates=2
    )
    best = res.best
    assert best.spacegroup == "Fm-3m"
    assert StructureMatcher().fit(best.to_pymatgen(), _nacl())
    assert best.pattern_rfactor < 0.1
    fit = res.settings["pdf_fit"]
    assert abs(fit["diameter"] - 30.0) < 3.0 and fit["qmax"] == 25.0


def test_errors_name_the_fix(gr_3nm):
    from diffpy_mlsolve.plugins import get_solver

    no_qmax = _particle(_nacl())
    with pytest.raises(PhysicsInputError, match="qmax="):
        pdf_intensities(no_qmax, CELL)
    with pytest.raises(PhysicsInputError, match="diameter"):
        pdf_intensities(gr_3nm, CELL, diameter=3.0)  # nm, not Å
    powder = Pattern.from_arrays(
        np.linspace(10, 80, 200), np.ones(200), "tth", wavelength=1.5406
    )
    with pytest.raises(PatternFormatError, match="G\\(r\\)"):
        pdf_intensities(powder, CELL)
    solver = get_solver("crystalnet", device="cpu")
    with pytest.raises(StructureError, match="check the cell"):
        solver.solve(gr_3nm, "NaCl", (4.0, 4.0, 4.0, 90, 90, 90))
    # check_cell=False lets the wrong cell through (its fit is poor)
    from diffpy_mlsolve_plugins.crystalnet import _from_pdf

    wrong = (4.0, 4.0, 4.0, 90.0, 90.0, 90.0)
    _, fit, _ = _from_pdf(gr_3nm, wrong, None, None, None, False)
    assert fit.rw > 0.2
    with pytest.raises(StructureError, match="give the cell"):
        solver.solve(gr_3nm, "NaCl", None)
    with pytest.raises(PhysicsInputError, match="PDF"):
        solver.solve(powder, "NaCl", CELL, diameter=30.0)


def test_with_metadata_copies():
    p = Pattern.from_arrays(np.arange(1.0, 11.0), np.ones(10), xtype="r")
    q = p.with_metadata(qmax=20.0)
    assert q.metadata["qmax"] == 20.0 and "qmax" not in p.metadata
    np.testing.assert_array_equal(q.x, p.x)


def test_cli_rejects_bad_diameters(tmp_path, capsys):
    from diffpy_mlsolve.cli import main

    rc = main(
        [
            "evaluate",
            "--structures",
            str(tmp_path / "none.csv"),
            "--input",
            "pdf",
            "--diameter",
            "three",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc != 0
    assert "--diameter 2,3,5 (got 'three')" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


LAVES_A = 7.04
LAVES_CELL = (LAVES_A,) * 3 + (90.0,) * 3


def _laves(cu=0.125):
    """MgCu2 (Fd-3m, 24 atoms: the cubic Laves phase of HfZn2 and CeRh2);
    ``cu`` moves the Cu off their sites."""
    return Structure.from_spacegroup(
        "Fd-3m",
        Lattice.cubic(LAVES_A),
        ["Cu", "Mg"],
        [[cu] * 3, [0.5] * 3],
    )


@pytest.fixture(scope="module")
def laves_fit():
    return pdf_intensities(_particle(_laves(), qmax=25.0), LAVES_CELL)


def test_diameter_of_a_large_cell_particle(laves_fit):
    """The envelope is fitted with finer groups than the intensities:
    with the wide groups alone a 3 nm Laves particle fitted 25 Å."""
    assert _laves().composition.reduced_formula == "MgCu2"
    assert laves_fit.diameter == pytest.approx(30.0, rel=0.05)


def test_pdf_scorer_scores_structures_by_their_gr(laves_fit, fit_3nm):
    """The G(r) Rw of a structure's own |F|^2 through the fitted envelope:
    the truth at about the intensity fit's Rw, Cu moved or the elements
    exchanged far above; powder reflections are refused, and the powder
    scorer refuses a G(r)'s."""
    from diffpy_mlsolve.sitesearch import PDFScorer, ProfileScorer, scorer_for

    scorer = scorer_for(laves_fit.reflections)
    assert isinstance(scorer, PDFScorer)
    truth = scorer.rwp(_laves())
    # measured: truth 0.044 (intensity fit 0.058), moved 0.68, exchanged
    # 0.71
    assert truth < 1.2 * scorer.floor
    assert scorer.rwp(_laves(cu=0.10)) > 5 * truth
    exchanged = Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(LAVES_A), ["Mg", "Cu"], [[0.125] * 3, [0.5] * 3]
    )
    assert scorer.rwp(exchanged) > 5 * truth
    # NaCl: the grouping by |d*| holds for a small cell too
    nacl = scorer_for(fit_3nm.reflections)
    assert nacl.rwp(_nacl()) < 1.2 * nacl.floor
    assert nacl.rwp(_zincblende()) > 3 * nacl.rwp(_nacl())
    with pytest.raises(PhysicsInputError, match="no fitted powder profile"):
        ProfileScorer(laves_fit.reflections)
    bare = laves_fit.reflections
    with pytest.raises(PhysicsInputError, match="no G\\(r\\) envelope"):
        PDFScorer(dataclasses.replace(bare, curves={"x": bare.curves["x"]}))


def test_pdf_centring_from_the_fit(laves_fit, fit_3nm):
    """F for the Laves and rock-salt particles; none for CsCl (its
    I-forbidden reflections carry Cs - Cl), and a cubic cell's C is never
    taken (a G(r) cannot tell 100 from 001)."""
    from diffpy_mlsolve.pdf_intensities import pdf_centring
    from diffpy_mlsolve.phasing import find_centring

    assert pdf_centring(laves_fit.reflections) == "F"
    assert find_centring(fit_3nm.reflections) == "F"  # dispatched
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3])
    fit = pdf_intensities(_particle(cscl, qmax=25.0), (4.12,) * 3 + (90,) * 3)
    assert pdf_centring(fit.reflections) is None
