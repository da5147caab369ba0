"""Entry-point discovery, the plugin contract and the solver result types."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import diffpy_mlsolve
from diffpy_mlsolve import plugins
from diffpy_mlsolve.errors import (
    MissingBackendError,
    ModelNotAvailableError,
    OutputExistsError,
    PluginError,
    PluginValidationError,
    StructureError,
)
from diffpy_mlsolve.solver import (
    Candidate,
    DensitySolver,
    RefinementResult,
    SolveResult,
)

ROOT = Path(__file__).resolve().parents[1]
NACL = (5.64, 5.64, 5.64, 90.0, 90.0, 90.0)


def _setup_entry_points() -> dict[str, list[str]]:
    """The ``entry_points=`` literal of setup.py, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py declares no entry_points")


def _declared():
    for group, specs in _setup_entry_points().items():
        for spec in specs:
            name, value = (part.strip() for part in spec.split("="))
            yield group, name, value


@pytest.fixture(autouse=True)
def fresh_discovery():
    """Every test starts and ends with an empty discovery cache."""
    plugins.refresh()
    yield
    plugins.refresh()


@pytest.fixture
def fake_dists(tmp_path, monkeypatch):
    """Install fake distributions on sys.path for one test.

    Returns a function ``install(dist, module, source, entry_points,
    version="1.0")`` that writes ``module.py`` and a
    ``dist-version.dist-info`` folder declaring ``entry_points``
    (group -> {name: "module:attr"}).
    """
    modules = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(dist, module, source, entry_points, version="1.0"):
        (tmp_path / f"{module}.py").write_text(
            textwrap.dedent(source), encoding="utf-8"
        )
        info = tmp_path / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
            encoding="utf-8",
        )
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{name} = {value}" for name, value in eps.items()]
            lines.append("")
        (info / "entry_points.txt").write_text(
            "\n".join(lines), encoding="utf-8"
        )
        modules.append(module)
        plugins.refresh()

    yield install
    for module in modules:
        sys.modules.pop(module, None)


FANCY_SOLVER = """
    class FancySolver:
        def __init__(self, beam="x-ray"):
            self.beam = beam

        def solve(self, pattern, composition, lattice, n_candidates=5):
            return ("fancy", pattern, self.beam)
"""


# -- setup.py and the first-party plugins -------------------------------


@pytest.mark.parametrize(
    "group, name, value", list(_declared()), ids=lambda v: str(v)
)
def test_setup_entry_points_resolve(group, name, value):
    if (
        group == "console_scripts"
        and not (ROOT / "diffpy_mlsolve" / "cli.py").exists()
    ):
        pytest.xfail("diffpy_mlsolve/cli.py is not written yet")
    obj = importlib.metadata.EntryPoint(name, value, group).load()
    assert callable(obj)
    # the installed metadata is what discovery reads: it must match setup.py
    installed = {
        (ep.group, ep.name): ep.value
        for ep in importlib.metadata.distribution(
            "diffpy-mlsolve"
        ).entry_points
    }
    assert installed.get((group, name)) == value, (
        "The installed entry points differ from setup.py; please rerun "
        "pip install -e ."
    )


def test_first_party_plugins_are_discovered():
    found = {(i.kind, i.name): i for i in plugins.available_plugins()}
    for kind, name in [
        ("solver", "crystalnet"),
        ("refiner", "rietveld"),
        ("refiner", "pdf"),
    ]:
        info = found[(kind, name)]
        assert plugins.normalize_name(info.distribution) == "diffpy-mlsolve"
        assert info.version == diffpy_mlsolve.__version__
        assert info.error == ""
        assert info.value.startswith("diffpy_mlsolve_plugins.")
    assert [i.kind for i in plugins.available_plugins("solver")] == [
        "solver"
    ] * len(plugins.available_plugins("solver"))


def test_refiner_backend_flags_follow_find_spec():
    found = {i.name: i for i in plugins.available_plugins("refiner")}
    has_objcryst = importlib.util.find_spec("pyobjcryst") is not None
    assert found["rietveld"].backend_ok is has_objcryst
    if not has_objcryst:
        assert "libobjcryst-dev" in found["rietveld"].backend_hint


def test_crystalnet_is_honest_about_a_missing_model(tmp_path, monkeypatch):
    from diffpy_mlsolve.model import predict
    from diffpy_mlsolve.pattern import Pattern
    from diffpy_mlsolve_plugins.crystalnet import CrystalNetSolver

    pattern = Pattern.from_arrays(
        np.linspace(10, 80, 500),
        np.exp(-((np.linspace(10, 80, 500) - 31.7) ** 2) / 0.01) + 0.01,
        wavelength=1.5406,
    )
    solver = diffpy_mlsolve.get_solver("crystalnet", device="cpu")
    assert isinstance(solver, CrystalNetSolver)
    assert isinstance(solver, DensitySolver)
    assert solver.device == "cpu"
    monkeypatch.setattr(predict, "DEFAULT_MODEL", tmp_path / "absent")
    with pytest.raises(ModelNotAvailableError, match="No trained CrystalNet"):
        solver.solve(pattern, "NaCl", NACL, n_candidates=2)
    (tmp_path / "empty").mkdir()
    other = diffpy_mlsolve.get_solver(
        "crystalnet", device="cpu", weights=tmp_path / "empty"
    )
    with pytest.raises(ModelNotAvailableError, match="not a diffpy-mlsolve"):
        other.solve(pattern, "NaCl", NACL, n_candidates=2)


@pytest.mark.parametrize(
    "composition, lattice, n, error, match",
    [
        ("", NACL, 5, StructureError, "composition is empty"),
        ("NaCl", (5.64, 5.64), 5, StructureError, "six numbers"),
        ("NaCl", (0, 1, 1, 90, 90, 90), 5, StructureError, "six numbers"),
        ("NaCl", NACL, 0, ValueError, "at least 1"),
    ],
)
def test_crystalnet_checks_inputs_first(composition, lattice, n, error, match):
    solver = plugins.get_solver("crystalnet")
    with pytest.raises(error, match=match):
        solver.solve(object(), composition, lattice, n_candidates=n)


def test_a_gr_takes_the_shipped_pdf_model_where_installed(
    tmp_path, monkeypatch
):
    from diffpy_mlsolve.model import predict

    assert predict.default_model("tth") == predict.DEFAULT_MODEL
    # shipped beside the powder model (package data)
    assert predict.default_model("r") == predict.DEFAULT_PDF_MODEL
    monkeypatch.setattr(predict, "DEFAULT_PDF_MODEL", tmp_path / "absent")
    assert predict.default_model("r") == predict.DEFAULT_MODEL
    (tmp_path / "pdf").mkdir()
    (tmp_path / "pdf" / "weights.pt").write_bytes(b"")
    monkeypatch.setattr(predict, "DEFAULT_PDF_MODEL", tmp_path / "pdf")
    assert predict.default_model("r") == tmp_path / "pdf"
    assert predict.default_model("q") == predict.DEFAULT_MODEL


def test_crystalnet_weights_must_be_a_folder(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="missing"):
        plugins.get_solver("crystalnet", weights=tmp_path / "nope")
    solver = plugins.get_solver("crystalnet", weights=tmp_path)
    assert solver.weights == tmp_path


def test_bad_device_is_refused():
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        plugins.get_solver("crystalnet", device="tpu")


@pytest.mark.parametrize("name", ["rietveld", "pdf"])
def test_first_party_refiners_refuse_no_structure(name):
    from diffpy_mlsolve.errors import MLSolveError

    refiner = plugins.get_refiner(name)
    with pytest.raises(MLSolveError, match="structure"):
        refiner.refine(None, None)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(PluginError, match=r"Known solvers: crystalnet"):
        plugins.get_solver("nosuch")
    with pytest.raises(PluginError, match=r"Known refiners: pdf, rietveld"):
        plugins.get_refiner("nosuch")
    with pytest.raises(PluginError, match="is a refiner: please use"):
        plugins.get_solver("rietveld")


def test_plugins_import_stays_light():
    code = (
        "import sys, diffpy_mlsolve, diffpy_mlsolve.plugins as p\n"
        "heavy = ('torch', 'pymatgen', 'pyobjcryst', 'diffpy.srfit')\n"
        "assert not [m for m in heavy if m in sys.modules], sys.modules\n"
        "assert {i.name for i in p.available_plugins()} >= "
        "{'crystalnet', 'rietveld', 'pdf'}\n"
        "p.get_solver('crystalnet'); p.get_refiner('rietveld')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- third-party plugins ------------------------------------------------


def test_third_party_solver_is_found_and_built(fake_dists):
    fake_dists(
        "thirdparty_pkg",
        "thirdparty_solver",
        FANCY_SOLVER,
        {plugins.SOLVER_GROUP: {"fancy": "thirdparty_solver:FancySolver"}},
    )
    info = {i.name: i for i in plugins.available_plugins("solver")}["fancy"]
    assert info.distribution == "thirdparty_pkg"
    assert info.version == "1.0"
    assert info.kind == "solver"
    assert info.ok
    solver = diffpy_mlsolve.get_solver("fancy", beam="neutron")
    assert type(solver).__name__ == "FancySolver"
    assert solver.solve("pat", "NaCl", NACL) == ("fancy", "pat", "neutron")
    assert "crystalnet" in {i.name for i in plugins.available_plugins()}


def test_broken_plugin_is_a_warning_not_a_crash(fake_dists):
    fake_dists(
        "broken_pkg",
        "broken_solver",
        "import no_such_dependency_xyz\n",
        {plugins.SOLVER_GROUP: {"broken": "broken_solver:Solver"}},
    )
    with pytest.warns(plugins.PluginLoadWarning, match=r"'broken'.*xyz"):
        infos = plugins.available_plugins()
    broken = {i.name: i for i in infos}["broken"]
    assert "ModuleNotFoundError" in broken.error and not broken.ok
    assert plugins.get_solver("crystalnet") is not None
    with pytest.raises(PluginError, match="could not be imported"):
        plugins.get_solver("broken")


def test_a_broken_duplicate_does_not_block_a_working_plugin(fake_dists):
    fake_dists(
        "broken_pkg",
        "broken_shadow",
        "raise RuntimeError('boom')\n",
        {plugins.SOLVER_GROUP: {"crystalnet": "broken_shadow:Solver"}},
    )
    with pytest.warns(plugins.PluginLoadWarning, match="boom"):
        solver = plugins.get_solver("crystalnet")
    assert type(solver).__name__ == "CrystalNetSolver"


def test_duplicate_names_name_both_distributions(fake_dists):
    for dist in ("thirdparty_a", "thirdparty_b"):
        fake_dists(
            dist,
            f"{dist}_mod",
            FANCY_SOLVER,
            {plugins.SOLVER_GROUP: {"fancy": f"{dist}_mod:FancySolver"}},
        )
    with pytest.raises(PluginValidationError) as info:
        plugins.get_solver("fancy")
    assert "thirdparty_a" in str(info.value)
    assert "thirdparty_b" in str(info.value)
    # an explicit choice resolves it, by PEP 503 name
    chosen = plugins.get_solver("fancy", distribution="thirdparty-b")
    assert type(chosen).__module__ == "thirdparty_b_mod"
    with pytest.raises(PluginError, match="declared by: thirdparty_a"):
        plugins.get_solver("fancy", distribution="other")


def test_a_third_party_cannot_silently_shadow_crystalnet(fake_dists):
    fake_dists(
        "shadow_pkg",
        "shadow_mod",
        FANCY_SOLVER,
        {plugins.SOLVER_GROUP: {"crystalnet": "shadow_mod:FancySolver"}},
    )
    with pytest.raises(PluginValidationError, match="shadow_pkg"):
        plugins.get_solver("crystalnet")
    ours = plugins.get_solver("crystalnet", distribution="diffpy-mlsolve")
    assert type(ours).__name__ == "CrystalNetSolver"


@pytest.mark.parametrize(
    "source, match",
    [
        ("class Solver:\n    pass\n", "has no solve"),
        ("def Solver(pattern):\n    return pattern\n", "not a class"),
        (
            "class Solver:\n    def solve(self):\n        pass\n",
            "does not take solve",
        ),
        (
            "from diffpy_mlsolve.solver import DensitySolver\n"
            "class Solver(DensitySolver):\n    pass\n",
            "abstract: solve",
        ),
    ],
)
def test_wrong_shaped_plugin_is_refused(fake_dists, source, match):
    fake_dists(
        "shapeless_pkg",
        "shapeless_mod",
        source,
        {plugins.SOLVER_GROUP: {"shapeless": "shapeless_mod:Solver"}},
    )
    with pytest.raises(PluginValidationError, match=match) as info:
        plugins.get_solver("shapeless")
    assert "'shapeless'" in str(info.value)
    assert "shapeless_pkg" in str(info.value)


FAKE_REFINER = """
    import numpy as np
    from diffpy_mlsolve.solver import RefinementResult, Refiner

    class NeedsBackend(Refiner):
        requires = ("no_such_module_xyz",)
        install_hint = "Please run pip install no-such-module-xyz."

        def refine(self, structure, pattern, **settings):
            import no_such_module_xyz  # noqa: F401

    class Echo(Refiner):
        def refine(self, structure, pattern, **settings):
            x = np.linspace(1, 2, 5)
            return RefinementResult(
                structure=structure, rwp=0.1, x=x, yobs=2 * x,
                ycalc=x, settings=dict(settings, pattern=pattern),
            )
"""


def test_missing_backend_gives_the_install_hint(fake_dists):
    fake_dists(
        "refiner_pkg",
        "refiner_mod",
        FAKE_REFINER,
        {plugins.REFINER_GROUP: {"needy": "refiner_mod:NeedsBackend"}},
    )
    info = {i.name: i for i in plugins.available_plugins("refiner")}
    assert info["needy"].backend_ok is False
    assert "no-such-module-xyz" in info["needy"].backend_hint
    with pytest.raises(MissingBackendError, match="no-such-module-xyz"):
        plugins.get_refiner("needy")
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        plugins.get_refiner("needy")


def test_candidate_refine_goes_through_the_plugin(fake_dists):
    from diffpy.structure import Atom, Lattice, Structure

    fake_dists(
        "refiner_pkg",
        "echo_mod",
        FAKE_REFINER,
        {plugins.REFINER_GROUP: {"echo": "echo_mod:Echo"}},
    )
    stru = Structure([Atom("Na", [0, 0, 0])], lattice=Lattice(*NACL))
    cand = Candidate(rank=1, structure=stru)
    result = cand.refine("echo", "my-pattern", scale=2.0)
    assert isinstance(result, RefinementResult)
    assert result.structure is stru
    assert result.settings == {"scale": 2.0, "pattern": "my-pattern"}
    np.testing.assert_allclose(result.ydiff, result.x)
    with pytest.raises(ValueError):
        result.yobs[0] = 1.0  # results are read-only
    with pytest.raises(StructureError, match="no structure"):
        Candidate(rank=2, failed="no peaks").refine("echo", None)


# -- result types -------------------------------------------------------


def _nacl():
    from diffpy.structure import Atom, Lattice, Structure

    return Structure(
        [Atom("Na", [0, 0, 0]), Atom("Cl", [0.5, 0.5, 0.5])],
        lattice=Lattice(*NACL),
    )


def _result():
    return SolveResult(
        candidates=(
            Candidate(rank=2, structure=_nacl(), spacegroup="Pm-3m"),
            Candidate(rank=1, failed="no density peaks"),
            Candidate(rank=3, structure=_nacl(), pattern_rfactor=0.3),
        ),
        inputs={"composition": "NaCl", "lattice": np.array(NACL)},
        settings={"solver": "test", "device": "cpu"},
    )


def test_best_skips_failed_candidates():
    res = _result()
    assert [c.rank for c in res.candidates] == [1, 2, 3]
    assert res.best.rank == 2
    with pytest.raises(StructureError, match="no density peaks"):
        SolveResult(
            candidates=(Candidate(rank=1, failed="no density peaks"),)
        ).best


def test_write_files_and_report(tmp_path):
    out = _result().write(tmp_path / "run")
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "best.cif",
        "candidate_02.cif",
        "candidate_03.cif",
        "report.json",
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["best_rank"] == 2
    assert report["inputs"]["lattice"] == list(NACL)
    assert report["versions"]["diffpy_mlsolve"] == diffpy_mlsolve.__version__
    assert [c["cif"] for c in report["candidates"]] == [
        None,
        "candidate_02.cif",
        "candidate_03.cif",
    ]
    assert report["candidates"][0]["failed"] == "no density peaks"
    from diffpy.structure import loadStructure

    back = loadStructure(str(out / "best.cif"))
    assert sorted(a.element for a in back) == ["Cl", "Na"]
    assert back.lattice.a == pytest.approx(5.64)


def test_write_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="force=True"):
        _result().write(out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (out / "candidate_09.cif").write_text("stale")
    _result().write(out, force=True)
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" in names and "report.json" in names
    assert "candidate_09.cif" not in names


def test_candidate_to_pymatgen():
    pmg = Candidate(rank=1, structure=_nacl()).to_pymatgen()
    assert pmg.composition.reduced_formula == "NaCl"
    assert pmg.lattice.a == pytest.approx(5.64)
