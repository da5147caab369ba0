"""The crystalnet solver end to end with a (tiny, untrained) checkpoint:
inputs as the user gives them, candidate densities, and the files."""

from __future__ import annotations

import numpy as np
import pytest

import diffpy_mlsolve as ms
from diffpy_mlsolve.errors import (
    OutputExistsError,
    PhysicsInputError,
    WavelengthError,
)
from diffpy_mlsolve.model.checkpoint import save_checkpoint
from diffpy_mlsolve.model.network import CrystalNet, ModelConfig
from diffpy_mlsolve.training import TrainConfig

SMALL = ModelConfig(
    width=32,
    blocks=1,
    latent=16,
    conv_channels=4,
    conv_layers=3,
    fourier_extra=8,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    cfg = TrainConfig(model=SMALL)
    return save_checkpoint(path, CrystalNet(SMALL), cfg.to_dict(), {})


@pytest.fixture(scope="module")
def nacl_pattern(textbook_structures):
    return ms.simulate_pxrd(
        textbook_structures["NaCl"], "CuKa1", counts=1e5, seed=0
    )


def _by_sample(res):
    return {c.info.get("density_sample", c.rank): c for c in res.candidates}


def test_solve_returns_ranked_candidates(checkpoint, nacl_pattern):
    solver = ms.get_solver("crystalnet", device="cpu", weights=checkpoint)
    cell = (5.64, 5.64, 5.64, 90, 90, 90)
    # the network's densities only (no charge flipping)
    res = solver.solve(
        nacl_pattern, "NaCl", cell, n_candidates=3, grid=16, phasing=None
    )
    assert [c.rank for c in res.candidates] == [1, 2, 3]
    for cand in res.candidates:
        assert cand.density.values.shape == (16, 16, 16)
        np.testing.assert_allclose(cand.density.lattice, cell)
        if cand.failed is None:  # atoms in the ratio of the composition
            elements = [a.element for a in cand.structure]
            assert elements.count("Na") == elements.count("Cl") > 0
            assert cand.spacegroup and cand.pattern_rfactor is not None
        else:  # an untrained model's density may give no structure
            assert cand.structure is None and "peaks" in cand.failed
    # usable candidates come first, ordered by their score
    usable = [c for c in res.candidates if c.failed is None]
    assert res.candidates[: len(usable)] == tuple(usable)
    by_sample = _by_sample(res)
    assert sorted(by_sample) == [1, 2, 3]
    first, second = (by_sample[i].density.values for i in (1, 2))
    assert not np.allclose(first, second)  # mean latent vs a sample
    again = solver.solve(
        nacl_pattern, "NaCl", cell, n_candidates=1, grid=16, phasing=None
    )
    np.testing.assert_array_equal(again.candidates[0].density.values, first)


def test_2theta_pattern_without_wavelength_is_refused(
    checkpoint, nacl_pattern
):
    bare = ms.Pattern.from_arrays(nacl_pattern.x, nacl_pattern.intensity)
    solver = ms.get_solver("crystalnet", weights=checkpoint)
    with pytest.raises(WavelengthError, match="wavelength"):
        solver.solve(bare, "NaCl", (5.64, 5.64, 5.64, 90, 90, 90))


def test_write_maps_and_report(checkpoint, nacl_pattern, tmp_path):
    import json

    import gemmi

    solver = ms.get_solver("crystalnet", weights=checkpoint)
    res = solver.solve(
        nacl_pattern,
        "NaCl",
        (5.64, 5.64, 5.64, 90, 90, 90),
        n_candidates=2,
        grid=12,
        phasing=None,
    )
    out = res.write(tmp_path / "res")
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"][0]["density_maps"] == [
        "density_01.map",
        "density_01.xsf",
    ]
    ccp4 = gemmi.read_ccp4_map(str(out / "density_01.map"))
    assert ccp4.grid.unit_cell.a == pytest.approx(5.64)
    values = res.candidates[0].density.values
    np.testing.assert_allclose(
        np.array(ccp4.grid, copy=False), values, rtol=1e-5, atol=1e-5
    )
    xsf = (out / "density_01.xsf").read_text().split("\n")
    start = xsf.index(" BEGIN_DATAGRID_3D_electron_density")
    assert xsf[start + 1].split() == ["13", "13", "13"]
    assert float(xsf[start + 6].split()[0]) == pytest.approx(
        values[0, 0, 0], rel=1e-5, abs=1e-6
    )
    with pytest.raises(OutputExistsError):
        res.write(tmp_path / "res")


def test_latent_refinement_lowers_the_pattern_misfit(nacl_pattern):
    # the shipped model: an untrained one barely depends on its latent
    solver = ms.get_solver("crystalnet", device="cpu")
    cell = (5.64, 5.64, 5.64, 90, 90, 90)
    res = solver.solve(
        nacl_pattern,
        "NaCl",
        cell,
        n_candidates=1,
        grid=16,
        latent_steps=6,
        phasing=None,
    )
    meta = res.candidates[0].density.metadata
    assert meta["latent_steps"] == 6
    assert meta["latent_rfactor_after"] < meta["latent_rfactor_before"] - 0.005
    assert res.settings["latent_steps"] == 6


def test_charge_flipping_candidates_join_and_are_labelled(
    checkpoint, nacl_pattern
):
    solver = ms.get_solver("crystalnet", device="cpu", weights=checkpoint)
    cell = (5.64, 5.64, 5.64, 90, 90, 90)
    res = solver.solve(
        nacl_pattern, "NaCl", cell, n_candidates=2, grid=16, centring="auto"
    )
    assert len(res.candidates) == 2
    assert res.settings["phasing"] == "flip"
    # NaCl's F-centring is found in the intensities and imposed
    assert res.settings["centring"] == "F"
    sources = {c.info.get("density_from", "") for c in res.candidates}
    # even an untrained network's maps, flipped on the data, solve NaCl
    best = res.best
    assert "charge flipping" in best.info["density_from"], sources
    assert best.spacegroup == "Fm-3m"
    # sites chosen by the fit: every candidate carries its profile Rwp,
    # never below the extraction's own, and the ranking follows it
    assert res.settings["site_search"] is True
    profiles = [c.info["profile_rwp"] for c in res.candidates]
    assert all(
        p >= c.info["profile_rwp_floor"] - 1e-9
        for p, c in zip(profiles, res.candidates)
    )
    assert best.info["profile_rwp"] == min(profiles)
    # each candidate says which sites won: the search in P1, the peak
    # heights or whole orbits of a group the map shows
    for c in res.candidates:
        how = c.info["sites_from"]
        assert how in ("search", "peak heights") or how.startswith(
            "orbits of "
        ), how
    with pytest.raises(ms.PhysicsInputError, match="phasing"):
        solver.solve(nacl_pattern, "NaCl", cell, phasing="magic")
    for bad in (-1, 1.5):
        with pytest.raises(ms.PhysicsInputError, match="map_groups"):
            solver.solve(nacl_pattern, "NaCl", cell, map_groups=bad)
    with pytest.raises(ms.PhysicsInputError, match="centring"):
        solver.solve(nacl_pattern, "NaCl", cell, centring="P")
    with pytest.raises(ms.PhysicsInputError, match="hexagonal axes"):
        solver.solve(nacl_pattern, "NaCl", cell, centring="R")
    # the ablation: flipping from random phases only, no network maps
    rand = solver.solve(
        nacl_pattern,
        "NaCl",
        cell,
        n_candidates=2,
        grid=16,
        phasing="flip-random",
    )
    froms = {c.info.get("density_from") for c in rand.candidates}
    assert all(
        f.startswith("charge flipping from random phases") for f in froms
    ), froms
    assert rand.best.spacegroup == "Fm-3m"
    # the ablation of the site search: heights only, the quick R factor
    plain = solver.solve(
        nacl_pattern, "NaCl", cell, n_candidates=2, grid=16, site_search=False
    )
    assert plain.settings["site_search"] is False
    assert all("profile_rwp" not in c.info for c in plain.candidates)
    assert {c.info["sites_from"] for c in plain.candidates} == {"peak heights"}
    assert plain.best.spacegroup == "Fm-3m"


def test_powder_starts_are_flipped_re_divided_and_in_map_groups(
    textbook_structures, nacl_pattern
):
    """Each start gives an equal-shares map; a powder start also a
    re-divided one (600 cycles) and that map flipped in the groups it
    shows, all on a grid holding every space-group translation; a G(r)
    start (no re-division, no groups) keeps the plain map on 32."""
    from diffpy_mlsolve.phasing import extract_intensities
    from diffpy_mlsolve.simulate import electron_density
    from diffpy_mlsolve_plugins.crystalnet import REPARTITION_CYCLES, _phased

    st = textbook_structures["NaCl"]
    cell = (5.64, 5.64, 5.64, 90, 90, 90)
    refl = extract_intensities(nacl_pattern, cell)
    start = electron_density(st, grid=16)
    maps = _phased([start], refl, cell, "flip", repartition=True, groups=2)
    assert [m.metadata["repartition"] for m in maps[:2]] == [False, True]
    assert maps[1].metadata["iterations"] == REPARTITION_CYCLES
    assert maps[1].metadata["start"].endswith("overlaps re-divided")
    grouped = maps[2:]
    assert 1 <= len(grouped) <= 2
    assert all("map_symmetry" in m.metadata for m in grouped)
    assert all(m.values.shape == (36, 36, 36) for m in maps)
    plain = _phased([start], refl, cell, "flip")
    assert len(plain) == 1 and not plain[0].metadata["repartition"]
    assert plain[0].values.shape == (32, 32, 32)


def test_latent_refinement_keeps_the_callers_model_and_best_latents(
    checkpoint, nacl_pattern
):
    import torch

    from diffpy_mlsolve.model.latent import refine_latents
    from diffpy_mlsolve.model.predict import DensityPredictor

    pred = DensityPredictor(checkpoint, "cpu")
    cell = (5.64, 5.64, 5.64, 90, 90, 90)
    batch = pred.batch(nacl_pattern, "NaCl", cell)
    frozen = next(pred.model.parameters())
    frozen.requires_grad_(False)  # the caller froze one parameter
    z = torch.randn(2, SMALL.latent)
    fit = refine_latents(
        pred.model, batch, nacl_pattern, cell, z, steps=4, lr=0.5, grid=12
    )
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in list(pred.model.parameters())[1:])
    # a large step may overshoot: each sample keeps its best latent
    assert np.all(fit.r_after <= fit.r_before + 1e-12)
    assert fit.z.shape == z.shape


def test_refine_top_refines_only_the_best(checkpoint, nacl_pattern):
    """refine_top=1: Rietveld (real pyobjcryst) on the solver's best
    candidate only, which then ranks first."""
    pytest.importorskip("pyobjcryst")
    solver = ms.get_solver("crystalnet", device="cpu", weights=checkpoint)
    cell = (5.64, 5.64, 5.64, 90, 90, 90)
    res = solver.solve(
        nacl_pattern,
        "NaCl",
        cell,
        n_candidates=2,
        grid=24,
        map_groups=0,
        refine="rietveld",
        refine_top=1,
    )
    refined = [c for c in res.candidates if c.refinement is not None]
    assert len(refined) == 1 and res.candidates[0] is refined[0]
    assert 0 < refined[0].rwp < 0.2
    for bad in (0, 1.5, True):
        with pytest.raises(PhysicsInputError, match="refine_top"):
            solver.solve(nacl_pattern, "NaCl", cell, refine_top=bad)
