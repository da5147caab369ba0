"""PDF refinement on diffpy.srfit (real srfit, no mocks): the recipe's
G(r), staged refinement of perturbed structures, nanoparticle diameter,
extensibility and the typed errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

pytest.importorskip("diffpy.srfit")

from diffpy_mlsolve.errors import (  # noqa: E402
    MissingBackendError,
    PatternFormatError,
    PhysicsInputError,
    StructureError,
)
from diffpy_mlsolve.pattern import Pattern  # noqa: E402
from diffpy_mlsolve.refine.pdf import (  # noqa: E402
    CALCULATOR_MLSOLVE,
    fit_recipe,
    make_pdf_recipe,
    pdf_result,
    refine_pdf,
)
from diffpy_mlsolve.simulate import simulate_pdf  # noqa: E402
from diffpy_mlsolve.solver import RefinementResult  # noqa: E402
from diffpy_mlsolve.symmetry import find_symmetry  # noqa: E402

QMAX, QDAMP = 25.0, 0.04
HAS_SRREAL = importlib.util.find_spec("diffpy.srreal") is not None


def _with_biso(structure, biso):
    s = structure.copy()
    s.add_site_property("biso", [biso[site.specie.symbol] for site in s])
    return s


def _gr(structure, rmax=12.0, **kw):
    kw.setdefault("qdamp", QDAMP)
    return simulate_pdf(structure, rmax=rmax, qmax=QMAX, rstep=0.02, **kw)


@pytest.fixture(scope="module")
def nacl():
    from textbook import textbook

    return _with_biso(textbook()["NaCl"], {"Na": 1.2, "Cl": 0.8})


@pytest.fixture(scope="module")
def rutile():
    from textbook import textbook

    return _with_biso(textbook()["TiO2"], {"Ti": 0.6, "O": 1.1})


@pytest.fixture(scope="module")
def nacl_gr(nacl):
    return _gr(nacl)


def _rutile_start(x=0.297, a=4.594 * 1.01, c=2.959 * 0.99):
    start = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(a, c), ["Ti", "O"], [[0] * 3, [x, x, 0]]
    )
    start.add_site_property("biso", [0.4] * len(start))
    return start


def test_recipe_gr_at_the_truth_is_simulate_pdf(nacl, nacl_gr):
    recipe = make_pdf_recipe(nacl, nacl_gr)
    assert recipe.mlsolve.calculator == (
        "srreal" if HAS_SRREAL else CALCULATOR_MLSOLVE
    )
    recipe.residual()
    profile = recipe.pdf.profile
    assert profile.x[0] == pytest.approx(1.0)
    assert profile.x[-1] == pytest.approx(12.0)
    r = np.corrcoef(profile.y, profile.ycalc)[0, 1]
    assert r > 0.9999
    # the same curve, not only the same shape: scale 1, B from the truth
    assert pdf_result(recipe).rwp < 1e-3
    assert recipe.mlsolve.symbol == "Fm-3m"
    assert set(recipe.getNames()) == {"scale", "a", "Biso_Na1", "Biso_Cl1"}
    assert recipe.Biso_Na1.value == pytest.approx(1.2)


def test_recipe_gr_of_a_nanoparticle_is_simulate_pdf(nacl):
    pattern = _gr(nacl, diameter=20.0)
    recipe = make_pdf_recipe(nacl, pattern, diameter=20.0)
    recipe.residual()
    profile = recipe.pdf.profile
    assert np.corrcoef(profile.y, profile.ycalc)[0, 1] > 0.9999
    assert "psize" in recipe.getNames()


def test_nacl_refines_from_a_perturbed_start(nacl, nacl_gr):
    # noisy data with uncertainties: 1 % of the largest peak
    sigma = np.full(nacl_gr.npoints, 0.01 * np.abs(nacl_gr.intensity).max())
    noise = np.random.default_rng(1).normal(0.0, sigma)
    noisy = Pattern.from_arrays(
        nacl_gr.x,
        nacl_gr.intensity + noise,
        xtype="r",
        sigma=sigma,
        metadata=dict(nacl_gr.metadata),
    )
    start = Structure.from_spacegroup(
        "Fm-3m",
        Lattice.cubic(5.64 * 1.01),
        ["Na", "Cl"],
        [[0, 0, 0], [0.5] * 3],
    )
    start.add_site_property("biso", [0.4] * len(start))
    result = refine_pdf(start, noisy)
    assert isinstance(result, RefinementResult)
    a = result.settings["lattice"][0]
    assert abs(a / 5.64 - 1) < 1e-3
    assert result.rwp < 0.05
    assert 0.8 < result.gof < 1.25  # chi^2 per degree of freedom
    assert result.settings["biso"] == pytest.approx(
        {"Na1": 1.2, "Cl1": 0.8}, rel=0.1
    )
    assert result.settings["spacegroup"] == "Fm-3m"
    assert result.settings["diameter"] is None
    assert find_symmetry(result.structure, symprec=0.01).number == 225
    # Rw dropped stage by stage: scale, lattice, ADPs
    rws = [s["rw"] for s in result.settings["stages"]]
    assert rws[0] > 0.2 and rws[-1] == pytest.approx(result.rwp)
    np.testing.assert_allclose(result.x, np.arange(1.0, 12.01, 0.02))
    assert result.ycalc.shape == result.yobs.shape == result.x.shape


def test_rutile_recovers_lattice_and_oxygen_x(rutile):
    pattern = _gr(rutile, rmax=10.0)
    result = refine_pdf(_rutile_start(), pattern)
    a, _, c = result.settings["lattice"][:3]
    assert abs(a / 4.594 - 1) < 1e-3 and abs(c / 2.959 - 1) < 1e-3
    assert result.rwp < 0.05
    assert result.settings["xyz"]["x_O1"] == pytest.approx(0.305, abs=2e-3)
    assert result.settings["biso"]["Ti1"] == pytest.approx(0.6, rel=0.1)
    sym = find_symmetry(result.structure, symprec=0.01)
    assert sym.number == 136
    # every oxygen moved with x_O1: the structure is still rutile
    assert len(result.structure) == 6


def test_nanoparticle_diameter_is_recovered(nacl):
    pattern = _gr(nacl, diameter=30.0)
    result = refine_pdf(nacl, pattern, diameter=40.0)
    assert abs(result.settings["diameter"] / 30.0 - 1) < 0.05
    assert result.rwp < 0.05
    # bulk fit of the same data is clearly worse
    bulk = refine_pdf(nacl, pattern)
    assert bulk.rwp > 2 * result.rwp


def test_a_wrong_structure_fits_clearly_worse(nacl, nacl_gr):
    right = refine_pdf(nacl, nacl_gr)
    zincblende = Structure.from_spacegroup(
        "F-43m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.25] * 3]
    )
    wrong = refine_pdf(zincblende, nacl_gr)
    assert right.rwp < 0.01
    assert wrong.rwp > 0.3
    assert wrong.settings["spacegroup"] == "F-43m"


def test_the_recipe_can_be_extended(nacl, nacl_gr):
    recipe = make_pdf_recipe(nacl, nacl_gr)
    n = len(recipe.pdf.profile.x)
    assert len(recipe.residual()) == n
    # a user variable, a fixed one and a restraint
    recipe.addVar(recipe.pdf.G.delta1, 0.0, tag="delta1")
    recipe.fix("Biso_Na1")
    recipe.restrain("scale", lb=0.9, ub=1.1, sig=0.01)
    chiv = recipe.residual()
    assert len(chiv) == n + 1 and np.all(np.isfinite(chiv))
    recipe.scale.value = 1.02
    history = fit_recipe(recipe, stages=[("scale",)])
    # the user's variable joins the last pass; the fixed one stays fixed
    assert "delta1" in history[-1]["free"]
    assert "Biso_Na1" not in history[-1]["free"]
    assert recipe.getNames() == ["scale", "a", "Biso_Cl1", "delta1"]
    assert pdf_result(recipe).rwp < 0.01


def test_p1_and_per_element_adps(nacl, nacl_gr):
    p1 = make_pdf_recipe(nacl, nacl_gr, spacegroup="P1", rmax=8.0)
    names = p1.getNames()
    assert {"a", "b", "c", "alpha", "beta", "gamma"} <= set(names)
    # the origin is pinned: one atom keeps its coordinates fixed
    assert "x_Na1" not in names and "x_Na2" in names
    per_element = make_pdf_recipe(nacl, nacl_gr, adp="element")
    assert {"Biso_Na", "Biso_Cl"} <= set(per_element.getNames())
    with pytest.raises(StructureError, match="Fm-3m"):
        make_pdf_recipe(nacl, nacl_gr, spacegroup="Pm-3m")


def test_qdamp_is_fixed_when_known_and_refined_otherwise(nacl, nacl_gr):
    recipe = make_pdf_recipe(nacl, nacl_gr)
    assert "qdamp" not in recipe.getNames()
    assert recipe.qdamp.value == pytest.approx(QDAMP)
    bare = Pattern.from_arrays(
        nacl_gr.x, nacl_gr.intensity, xtype="r", metadata={"qmax": QMAX}
    )
    recipe = make_pdf_recipe(nacl, bare)
    assert "qdamp" in recipe.getNames()
    recipe = make_pdf_recipe(nacl, bare, qdamp=0.05)
    assert "qdamp" not in recipe.getNames()


def test_the_plugin_refines_and_reports(nacl, nacl_gr):
    from diffpy_mlsolve.plugins import get_refiner

    refiner = get_refiner("pdf")
    result = refiner.refine(nacl, nacl_gr, rmax=10.0)
    assert result.rwp < 0.01
    settings = result.settings
    assert settings["calculator"] in ("srreal", CALCULATOR_MLSOLVE)
    assert settings["spacegroup_number"] == 225
    assert set(settings) >= {"lattice", "scale", "qdamp", "biso", "qmax"}
    assert result.x[-1] == pytest.approx(10.0)
    ax = result.plot()  # G(r) axes, not a powder pattern's
    assert ax.get_xlabel() == "r (Å)" and ax.get_ylabel().startswith("G(r)")
    assert ax.get_title().startswith("Rw")


# ---------------------------------------------------------------- errors


def test_a_powder_pattern_points_to_rietveld(nacl):
    tth = np.linspace(10, 80, 200)
    pattern = Pattern.from_arrays(tth, 1 + np.exp(-((tth - 31.7) ** 2)))
    with pytest.raises(PatternFormatError, match="'rietveld'"):
        refine_pdf(nacl, pattern)
    with pytest.raises(PatternFormatError, match="xtype 'q'"):
        make_pdf_recipe(nacl, pattern.with_wavelength(1.54).on_q())


def test_missing_qmax_names_the_argument(nacl, nacl_gr):
    bare = Pattern.from_arrays(nacl_gr.x, nacl_gr.intensity, xtype="r")
    with pytest.raises(PhysicsInputError, match=r"qmax="):
        make_pdf_recipe(nacl, bare)
    make_pdf_recipe(nacl, bare, qmax=QMAX)


def test_a_fit_range_beyond_the_data_is_refused(nacl, nacl_gr):
    with pytest.raises(PhysicsInputError, match=r"rmax=30 .*0 to 12"):
        make_pdf_recipe(nacl, nacl_gr, rmax=30.0)
    with pytest.raises(PhysicsInputError, match=r"rmin="):
        make_pdf_recipe(nacl, nacl_gr, rmin=8.0, rmax=8.05)


def test_a_diameter_below_the_cell_edge_is_refused(nacl, nacl_gr):
    with pytest.raises(PhysicsInputError, match=r"diameter=3.0 .*5.640"):
        make_pdf_recipe(nacl, nacl_gr, diameter=3.0)


def test_an_empty_structure_is_refused(nacl_gr):
    from diffpy.structure import Lattice as DiffpyLattice
    from diffpy.structure import Structure as DiffpyStructure

    empty = DiffpyStructure([], lattice=DiffpyLattice(5, 5, 5, 90, 90, 90))
    with pytest.raises(StructureError, match="no atoms"):
        make_pdf_recipe(empty, nacl_gr)
    from diffpy_mlsolve.plugins import get_refiner

    with pytest.raises(StructureError, match="no structure"):
        get_refiner("pdf").refine(None, nacl_gr)


@pytest.mark.skipif(HAS_SRREAL, reason="diffpy.srreal is installed")
def test_asking_for_srreal_without_it_says_so(nacl, nacl_gr):
    with pytest.raises(MissingBackendError, match="diffpy.srreal"):
        make_pdf_recipe(nacl, nacl_gr, calculator="srreal")
