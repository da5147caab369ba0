"""Rietveld refinement in pyobjcryst: the ObjCryst model against our own
simulator, refinements of perturbed textbook structures, Kα2, and the
errors of the refiner plugin.  Real pyobjcryst, no mocks; every
refinement takes well under a second."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from diffpy_mlsolve import get_refiner
from diffpy_mlsolve.errors import (
    MissingBackendError,
    PatternFormatError,
    PhysicsInputError,
    StructureError,
    WavelengthError,
)
from diffpy_mlsolve.pattern import Pattern
from diffpy_mlsolve.radiation import Radiation
from diffpy_mlsolve.solver import RefinementResult
from diffpy_mlsolve.structures import as_crystal
from diffpy_mlsolve.symmetry import find_symmetry

# simulated measurements: realistic widths, a sloping background, counts
SIM = dict(
    tth_range=(10.0, 90.0),
    npoints=4000,
    fwhm=0.1,
    eta=0.3,
    background=[0.05, 0.01],
    counts=2e4,
    seed=1,
    device="cpu",
)


@pytest.fixture
def objcryst():
    return pytest.importorskip("pyobjcryst")


@pytest.fixture(scope="module")
def structures():
    from textbook import textbook

    out = textbook()
    out["Si"] = Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]
    )
    return out


def _simulate(structure, source="CuKa1", **kw):
    from diffpy_mlsolve.simulate import simulate_pxrd

    return simulate_pxrd(structure, source, **{**SIM, **kw})


def _perturbed(sym, shift, biso, seed=3):
    """``sym`` with the cell 0.5 % off (a, b up; c down unless cubic),
    each site moved ``shift`` Å along its free directions, and B = biso."""
    from diffpy_mlsolve.refine.rietveld import site_projectors

    rng = np.random.default_rng(seed)
    mat = Lattice.from_parameters(*sym.lattice).matrix
    frac = []
    for x, proj in zip(sym.frac, site_projectors(sym)):
        d = proj @ (rng.normal(size=3) @ np.linalg.inv(mat))
        length = np.linalg.norm(d @ mat)
        frac.append(x + (d * shift / length if length > 1e-9 else 0.0))
    f = (1.005,) * 3 if sym.number >= 195 else (1.005, 1.005, 0.995)
    a, b, c, al, be, ga = sym.lattice
    return dataclasses.replace(
        sym,
        lattice=(a * f[0], b * f[1], c * f[2], al, be, ga),
        frac=np.array(frac),
        biso=np.full(len(sym.biso), float(biso)),
    )


def _site_error(structure, reference) -> float:
    """RMS distance (Å) of each atom to the nearest atom of the same
    element in ``reference`` (periodic, in the reference's metric)."""
    a = as_crystal(structure, standardize=False)
    r = as_crystal(reference, standardize=False)
    mat = Lattice.from_parameters(*r.lattice).matrix
    d2 = []
    for z, x in zip(a.numbers, a.frac):
        diff = r.frac[r.numbers == z] - x
        diff -= np.rint(diff)
        d2.append(np.min(np.sum((diff @ mat) ** 2, axis=1)))
    return float(np.sqrt(np.mean(d2)))


def _objcryst_curve(crystal, pattern, fwhm=0.1, eta=0.5):
    """ObjCryst's calculated pattern of ``crystal`` on ``pattern``'s 2θ."""
    from pyobjcryst.powderpattern import ReflectionProfileType

    from diffpy_mlsolve.refine.rietveld import objcryst_powder

    powder = objcryst_powder(
        pattern.x,
        pattern.intensity,
        np.ones(pattern.npoints),
        Radiation(pattern.wavelength),
    )
    diffraction = powder.AddPowderPatternDiffraction(crystal)
    diffraction.SetReflectionProfilePar(
        ReflectionProfileType.PROFILE_PSEUDO_VOIGT,
        math.radians(fwhm) ** 2,
        0.0,
        0.0,
        eta,
        0.0,
    )
    return np.asarray(powder.GetPowderPatternCalc(), float)


def _peak_positions(x, y, n=8):
    """2θ of the ``n`` strongest local maxima above 2 % of the highest."""
    inner = (y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:])
    inner &= y[1:-1] > 0.02 * y.max()
    idx = np.flatnonzero(inner) + 1
    idx = idx[np.argsort(y[idx])[::-1][:n]]
    return np.sort(x[idx])


# -- the ObjCryst model is ours -----------------------------------------


@pytest.mark.parametrize(
    "name, objcryst_name",
    [
        ("NaCl", "F m -3 m"),
        ("ZnS", "F -4 3 m"),  # polar, no inversion
        ("Al2O3", "R -3 c:H"),  # rhombohedral on hexagonal axes
        ("Bi2Se3", "R -3 m:H"),
        ("TiO2", "P 42/m n m"),  # (x, x, 0) site
        ("Si", "F d -3 m:1"),  # two origin choices: spglib's is 1
    ],
)
def test_objcryst_crystal_gives_our_pattern(
    objcryst, structures, name, objcryst_name
):
    from diffpy_mlsolve.refine.rietveld import objcryst_crystal

    sym = find_symmetry(structures[name], 0.01)
    ours = _simulate(sym.to_diffpy(), eta=0.5, background=None, counts=None)
    crystal = objcryst_crystal(sym)
    assert crystal.GetSpaceGroup().GetName() == objcryst_name
    theirs = _objcryst_curve(crystal, ours)
    y = ours.intensity
    scale = float(theirs @ y / (theirs @ theirs))
    assert np.corrcoef(theirs, y)[0, 1] > 0.995
    assert np.sqrt(np.sum((y - scale * theirs) ** 2) / np.sum(y**2)) < 0.05
    np.testing.assert_allclose(
        _peak_positions(ours.x, theirs), _peak_positions(ours.x, y), atol=0.03
    )


def test_objcryst_default_origin_of_fd3m_is_not_spglibs(objcryst, structures):
    # why the setting is passed explicitly: "Fd-3m" alone is origin 2
    from pyobjcryst.atom import Atom
    from pyobjcryst.crystal import Crystal
    from pyobjcryst.scatteringpower import ScatteringPowerAtom

    from diffpy_mlsolve.refine.rietveld import objcryst_spacegroup_ids

    sym = find_symmetry(structures["Si"], 0.01)
    assert sym.choice == "1"
    assert objcryst_spacegroup_ids(sym)[0].startswith("Hall: ")
    ours = _simulate(sym.to_diffpy(), eta=0.5, background=None, counts=None)
    crystal = Crystal(5.43, 5.43, 5.43, "Fd-3m")
    assert crystal.GetSpaceGroup().GetName() == "F d -3 m:2"
    power = ScatteringPowerAtom("Si", "Si", 1.0)
    crystal.AddScatteringPower(power)
    crystal.AddScatterer(Atom(0.0, 0.0, 0.0, "Si1", power, 1.0))
    wrong = _objcryst_curve(crystal, ours)
    assert np.corrcoef(wrong, ours.intensity)[0, 1] < 0.9


# -- refinements ----------------------------------------------------------


@pytest.mark.parametrize("name", ["TiO2", "Al2O3", "Bi2Se3"])
def test_refinement_recovers_a_perturbed_structure(objcryst, structures, name):
    true = find_symmetry(structures[name], 0.01)
    pattern = _simulate(true.to_diffpy())
    start = _perturbed(true, shift=0.08, biso=2.5).to_diffpy()
    result = get_refiner("rietveld").refine(start, pattern)
    s = result.settings
    assert s["spacegroup"] == true.symbol
    assert result.rwp < 0.10
    assert result.rwp < s["rwp_start"] / 3
    assert 0.5 < result.gof < 2.0  # Poisson noise: chi2/dof near 1
    for got, want in zip(s["lattice"][:3], true.lattice[:3]):
        assert abs(got / want - 1) < 1e-3
    truth = true.to_diffpy()
    before = _site_error(start, truth)
    after = _site_error(result.structure, truth)
    assert before > 0.05
    assert after < before / 3
    for el, b in s["biso"].items():
        assert abs(b - 1.0) < 0.5  # from 2.5 to near the true 1.0


def test_wrong_structure_fits_clearly_worse(objcryst, structures):
    pattern = _simulate(structures["NaCl"])
    refiner = get_refiner("rietveld")
    right = refiner.refine(structures["NaCl"], pattern)
    # the same ions and cell, zincblende arrangement instead of rock salt
    wrong = Structure.from_spacegroup(
        "F-43m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.25] * 3]
    )
    bad = refiner.refine(wrong, pattern)
    assert right.rwp < 0.08
    assert bad.rwp > 0.15
    assert bad.rwp > 3 * right.rwp


def test_kalpha2_doublet_is_fitted(objcryst, structures):
    pattern = _simulate(structures["NaCl"], source="CuKa")
    assert pattern.metadata["source_name"] == "CuKa"
    refiner = get_refiner("rietveld")
    doublet = refiner.refine(structures["NaCl"], pattern)
    single = refiner.refine(structures["NaCl"], pattern, radiation="CuKa1")
    assert doublet.settings["wavelength2"] == pytest.approx(1.544427)
    assert doublet.settings["kalpha2_ratio"] == 0.5
    assert single.settings["wavelength2"] is None
    assert doublet.rwp < 0.08
    assert single.rwp > 1.3 * doublet.rwp
    assert doublet.settings["lattice"][0] == pytest.approx(5.64, rel=2e-4)


def test_result_fields(objcryst, structures):
    pattern = _simulate(structures["TiO2"])
    result = get_refiner("rietveld").refine(
        structures["TiO2"], pattern, cycles=3, background_points=10
    )
    from diffpy.structure import Structure as DiffpyStructure

    assert isinstance(result, RefinementResult)
    np.testing.assert_allclose(result.x, pattern.x, atol=1e-9)
    np.testing.assert_allclose(result.yobs, pattern.intensity)
    assert result.ycalc.shape == pattern.x.shape
    assert 0 < result.rwp < 1
    assert result.gof is not None and result.gof > 0
    assert isinstance(result.structure, DiffpyStructure)
    assert len(result.structure) == 6  # Ti2 O4
    s = result.settings
    biso = s["biso"]["O"]
    u = [a.Uisoequiv for a in result.structure if a.element == "O"]
    np.testing.assert_allclose(u, biso / (8 * math.pi**2), rtol=1e-6)
    assert s["spacegroup_number"] == 136
    assert s["wavelength"] == pytest.approx(1.540593)
    assert s["sigma_model"].startswith("sqrt(max(y, 1))")
    assert s["background_points"] == 10 and s["cycles_per_stage"] == 3
    assert s["stages"][-1] == "all"
    assert {"lattice", "profile", "positions", "biso"} <= set(s["stages"])
    assert s["pyobjcryst_version"] == objcryst.__version__
    for key in ("caglioti_u_deg2", "caglioti_v_deg2", "caglioti_w_deg2"):
        assert math.isfinite(s[key])
    # peak width of the data: FWHM^2 = W at low angle, here (0.1 deg)^2
    assert s["fwhm_start_deg"] == pytest.approx(0.1, rel=0.25)
    assert 0 <= s["eta"] <= 1


def test_pattern_sigma_q_axis_and_p1(objcryst, structures):
    pattern = _simulate(structures["NaCl"])
    on_q = pattern.on_q()
    q = Pattern.from_arrays(
        on_q.x, on_q.intensity, xtype="q", sigma=np.sqrt(on_q.intensity + 1)
    )
    refiner = get_refiner("rietveld")
    result = refiner.refine(
        structures["NaCl"], q, wavelength=1.540593, spacegroup="P1"
    )
    assert result.settings["sigma_model"] == "pattern sigma"
    assert result.settings["spacegroup"] == "P1"
    assert result.settings["origin_fixed_by"].endswith("xyz")
    assert len(result.structure) == 8
    assert result.rwp < 0.08
    np.testing.assert_allclose(result.x, pattern.x, atol=1e-6)


# -- errors -------------------------------------------------------------


def test_q_pattern_without_wavelength_is_refused(objcryst, structures):
    q = _simulate(structures["NaCl"]).on_q()
    q = Pattern.from_arrays(q.x, q.intensity, xtype="q")
    with pytest.raises(WavelengthError, match="wavelength="):
        get_refiner("rietveld").refine(structures["NaCl"], q)


def test_pdf_is_sent_to_the_pdf_refiner(objcryst, structures):
    r = np.linspace(1, 20, 500)
    gr = Pattern.from_arrays(r, np.sin(3 * r) * np.exp(-r / 10), xtype="r")
    with pytest.raises(PatternFormatError, match="'pdf' refiner"):
        get_refiner("rietveld").refine(structures["NaCl"], gr)


@pytest.mark.parametrize("noise", [False, True])
def test_flat_pattern_has_no_peaks(objcryst, structures, noise):
    x = np.linspace(10, 90, 2000)
    y = np.full_like(x, 300.0)
    if noise:
        y = np.random.default_rng(0).poisson(y).astype(float)
    flat = Pattern.from_arrays(x, y, wavelength=1.5406)
    with pytest.raises(PatternFormatError, match="no diffraction peak"):
        get_refiner("rietveld").refine(structures["NaCl"], flat)


def test_structure_and_setting_errors(objcryst, structures):
    from diffpy.structure import Lattice as DiffpyLattice
    from diffpy.structure import Structure as DiffpyStructure

    pattern = _simulate(structures["NaCl"], npoints=1000)
    refiner = get_refiner("rietveld")
    empty = DiffpyStructure(
        lattice=DiffpyLattice(5.64, 5.64, 5.64, 90, 90, 90)
    )
    with pytest.raises(StructureError, match="no atoms"):
        refiner.refine(empty, pattern)
    with pytest.raises(StructureError, match="does not have space group"):
        refiner.refine(structures["NaCl"], pattern, spacegroup="P6_3/mmc")
    with pytest.raises(StructureError, match="Unknown space group"):
        refiner.refine(structures["NaCl"], pattern, spacegroup="Xy-9")
    with pytest.raises(PhysicsInputError, match="Unknown refinement stage"):
        refiner.refine(structures["NaCl"], pattern, stages=("scale", "Biso"))
    with pytest.raises(WavelengthError, match="λ = 1.5406"):
        refiner.refine(
            structures["NaCl"],
            pattern.with_wavelength(1.5406),
            radiation="MoKa",
        )
    with pytest.raises(PatternFormatError, match="Cannot refine against"):
        refiner.refine(structures["NaCl"], np.ones(10))


def test_missing_pyobjcryst_gives_the_install_hint(monkeypatch, structures):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "pyobjcryst" or name.startswith("pyobjcryst."):
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    refiner = get_refiner("rietveld")
    assert refiner.missing_backends() == ["pyobjcryst"]
    with pytest.raises(MissingBackendError, match="libobjcryst-dev"):
        refiner.refine(structures["NaCl"], None)


def test_driver_imports_no_backend():
    import subprocess
    import sys

    code = (
        "import sys, diffpy_mlsolve.refine.rietveld, "
        "diffpy_mlsolve_plugins.rietveld\n"
        "assert 'pyobjcryst' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
