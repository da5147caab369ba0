"""Density evaluation: the reference protocol's rotations, the honest
protocol's symmetry alignment, floors, and the report contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffpy_mlsolve.evaluation import (
    apply_operation,
    best_shift,
    evaluate,
    format_report,
    honest_score,
    lattice_operations,
    random_positions_floor,
    reference_score,
    rotations24,
    ssim_psnr,
    symmetry_operations,
)
from diffpy_mlsolve.simulate import electron_density
from diffpy_mlsolve.structures import as_crystal

GRID = 24  # divisible by 2, 3, 4: every centring translation is on grid


@pytest.fixture(scope="module")
def densities():
    from textbook import textbook

    out = {}
    for name in ("NaCl", "TiO2", "Bi2Se3"):
        crystal = as_crystal(textbook()[name])
        rho = electron_density(
            crystal, grid=GRID, standardize=False, device="cpu"
        )
        out[name] = (
            crystal,
            np.asarray(rho.values, np.float64),
            lattice_operations(crystal.lattice),
        )
    return out


def test_rotations24_are_the_24_distinct_cube_rotations():
    vol = np.random.default_rng(1).random((5, 5, 5))
    rots = rotations24(vol)
    assert len(rots) == 24
    assert len({r.tobytes() for r in rots}) == 24
    assert np.array_equal(rots[0], vol)
    # proper rotations only: no mirror image of the volume is among them
    mirror = vol[::-1].tobytes()
    assert all(r.tobytes() != mirror for r in rots)


def test_ssim_psnr_follow_skimage_conventions(densities):
    _, gt, _ = densities["NaCl"]
    assert ssim_psnr(gt, gt) == (1.0, float("inf"))
    ssim, psnr = ssim_psnr(gt, gt + 0.01 * (gt.max() - gt.min()))
    assert 0.0 < ssim < 1.0  # SSIM punishes offsets in empty space
    assert psnr == pytest.approx(40.0, abs=1e-6)


def test_reference_score_of_the_truth_is_one(densities):
    _, gt, _ = densities["TiO2"]
    noise = np.random.default_rng(0).random((2,) + gt.shape)
    sc = reference_score(gt, np.stack([noise[0], gt, noise[1]]))
    assert sc["ssim"] == pytest.approx(1.0)
    assert sc["sample"] == 1 and sc["rotation"] == 0


def test_best_shift_undoes_a_circular_shift(densities):
    _, gt, _ = densities["TiO2"]
    moved = np.roll(gt, (3, -2, 5), (0, 1, 2))
    shift = best_shift(gt, moved)
    assert np.allclose(np.roll(moved, shift, (0, 1, 2)), gt)


@pytest.mark.parametrize(
    "name, count", [("NaCl", 48), ("TiO2", 16), ("Bi2Se3", 24)]
)
def test_lattice_operations_are_the_holohedry(densities, name, count):
    crystal, _, ops = densities[name]
    assert len(ops) == count
    assert np.array_equal(ops[0], np.eye(3))
    keys = {tuple(W.ravel()) for W in ops}
    assert len(keys) == count
    # the space group's point operations are among them
    for W, _ in symmetry_operations(crystal):
        assert tuple(np.rint(W).astype(int).ravel()) in keys


@pytest.mark.parametrize("name", ["NaCl", "TiO2", "Bi2Se3"])
def test_honest_score_recovers_shifts_and_symmetry_ops(densities, name):
    crystal, gt, ops = densities[name]
    moved = np.roll(gt, (3, -2, 5), (0, 1, 2))
    assert honest_score(gt, moved, ops)["ssim"] == pytest.approx(1.0)
    sym = symmetry_operations(crystal)
    # every space-group op maps the true density onto itself, on the grid
    for W, w in sym[:: max(1, len(sym) // 6)]:
        image = apply_operation(gt, W, w)
        assert np.abs(image - gt).max() < 1e-4 * gt.max()
    # a shifted copy of the truth transformed by an op is scored 1.0
    W, w = sym[len(sym) // 2]
    image = np.roll(apply_operation(gt, W, w), (1, 2, 3), (0, 1, 2))
    assert honest_score(gt, image, ops)["ssim"] == pytest.approx(1.0)


def test_apply_operation_rejects_off_grid_maps():
    vol = np.zeros((5, 5, 5))
    with pytest.raises(ValueError):
        apply_operation(vol, np.eye(3), (1 / 3, 0, 0))
    with pytest.raises(ValueError):
        apply_operation(vol, 0.5 * np.eye(3))


@pytest.mark.parametrize("name", ["TiO2", "Bi2Se3"])
def test_cube_rotation_of_a_non_cubic_density_is_not_honest(densities, name):
    """np.rot90 swapping a and c is no symmetry of a tetragonal or
    hexagonal cell: the reference protocol forgives it, the honest one
    does not."""
    _, gt, ops = densities[name]
    turned = np.rot90(gt, 1, (0, 2))
    assert reference_score(gt, turned)["ssim"] == pytest.approx(1.0)
    assert honest_score(gt, turned, ops)["ssim"] < 0.9
    # for rock salt the same rotation is a symmetry
    _, nacl, nacl_ops = densities["NaCl"]
    turned = np.rot90(nacl, 1, (0, 2))
    assert honest_score(nacl, turned, nacl_ops)["ssim"] == pytest.approx(1)


def test_lattice_ops_that_are_no_symmetry_are_forgiven(densities):
    """A 6-fold turn of R-3m Bi2Se3 (obverse -> reverse setting) gives
    the same powder pattern but another density: the honest protocol
    forgives it through the lattice ops, not through shifts alone."""
    _, gt, ops = densities["Bi2Se3"]
    six = np.array([[1, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert any(np.array_equal(six, W) for W in ops)
    turned = apply_operation(gt, six)
    assert np.abs(turned - gt).max() > 0.1 * gt.max()
    assert honest_score(gt, turned, ops)["ssim"] == pytest.approx(1.0)
    assert honest_score(gt, turned, None)["ssim"] < 0.99


def test_random_positions_floor_is_well_below_one(densities):
    crystal, gt, ops = densities["TiO2"]
    rng = np.random.default_rng(0)
    floor = random_positions_floor(crystal, GRID, rng, gt=gt, ops=ops)
    again = random_positions_floor(
        crystal, GRID, np.random.default_rng(0), ops=ops
    )
    assert floor == pytest.approx(again)  # gt given or computed: same
    for value in floor.values():
        assert 0.0 < value < 0.95


def _tiny_checkpoint(path):
    import torch

    from diffpy_mlsolve.data.examples import ExampleSpec
    from diffpy_mlsolve.model.checkpoint import save_checkpoint
    from diffpy_mlsolve.model.network import CrystalNet, ModelConfig
    from diffpy_mlsolve.training import TrainConfig

    torch.manual_seed(0)
    cfg = ModelConfig(
        conv_channels=4,
        conv_max_channels=8,
        conv_layers=3,
        pattern_features=16,
        composition_features=16,
        lattice_features=8,
        latent=8,
        fourier_dense=1,
        fourier_kmax=2,
        fourier_extra=8,
        width=16,
        blocks=1,
    )
    config = TrainConfig(spec=ExampleSpec(), model=cfg).to_dict()
    return save_checkpoint(path, CrystalNet(cfg), config, {"step": 0})


CONTRACT = (
    [
        ("n",),
        ("settings",),
        ("timing", "densities_per_second"),
        ("per_structure",),
    ]
    + [
        ("density", block, key)
        for block in ("reference", "single")
        for key in (
            "ssim_mean",
            "ssim_median",
            "frac_above_0.9",
            "psnr_mean",
            "floor_ssim_mean",
            "by_system",
        )
    ]
    + [("density", "single", "by_mode"), ("density", "control", "ssim_mean")]
)


def test_evaluate_end_to_end_report_contract(tmp_path):
    import pandas as pd
    from textbook import textbook

    names = ["NaCl", "CsCl", "TiO2", "Bi2Se3"]
    table = pd.DataFrame(
        {
            "material_id": [f"tb-{n}" for n in names],
            "cif": [textbook()[n].to(fmt="cif") for n in names],
        }
    )
    csv = tmp_path / "tiny.csv.gz"
    table.to_csv(csv, index=False)
    out = tmp_path / "report" / "report.json"
    report = evaluate(
        _tiny_checkpoint(tmp_path / "model"),
        csv,
        grid=16,
        samples=2,
        modes=("full", "none"),
        progress=False,
        out=out,
        batch_size=3,
    )
    assert report["n"] == 4
    for path in CONTRACT:
        node = report
        for key in path:
            assert key in node, path
            node = node[key]
    dens = report["density"]
    assert set(dens["single"]["by_mode"]) == {"full", "none"}
    assert dens["single"]["mode"] == "full"
    systems = {"cubic", "tetragonal", "trigonal"}
    for block in (dens["reference"], dens["single"]):
        assert set(block["by_system"]) == systems
        for sub in block["by_system"].values():
            assert {"n", "ssim_mean", "ssim_median", "frac_above_0.9"} <= set(
                sub
            )
        assert sum(b["n"] for b in block["by_system"].values()) == 4
    rows = report["per_structure"]
    assert [r["material_id"] for r in rows] == [f"tb-{n}" for n in names]
    assert [r["spacegroup"] for r in rows] == [225, 221, 136, 166]
    for row in rows:
        for key in ("ssim_reference", "ssim_single", "ssim_control"):
            assert -1.0 <= row[key] <= 1.0
        assert 0.0 < row["floor"] < 1.0
        assert 0.0 < row["floor_single"] < 1.0
        assert set(row["ssim_single_by_mode"]) == {"full", "none"}
    # 4 structures x (2 reference + 2 control + 2 modes x 1 single)
    assert report["timing"]["densities"] == 4 * 6
    assert report["timing"]["densities_per_second"] > 0
    assert json.loads(out.read_text())["n"] == 4
    assert not list(out.parent.glob(".*tmp*"))
    text = format_report(report)
    assert "reference" in text and "control" in text


def test_evaluate_takes_a_model_object_and_one_protocol(tmp_path):
    from textbook import textbook

    from diffpy_mlsolve.model.checkpoint import load_model

    model, _, _ = load_model(_tiny_checkpoint(tmp_path / "m"))
    csv = tmp_path / "one.csv"
    import pandas as pd

    pd.DataFrame(
        {"material_id": ["x"], "cif": [textbook()["CsCl"].to(fmt="cif")]}
    ).to_csv(csv, index=False)
    report = evaluate(
        model,
        csv,
        grid=12,
        samples=1,
        protocols=("honest",),
        progress=False,
    )
    assert "reference" not in report["density"]
    assert "control" not in report["density"]  # one structure: no other
    assert -1 <= report["density"]["single"]["ssim_mean"] <= 1


def test_evaluate_on_nanocrystal_gr_inputs(tmp_path, monkeypatch):
    """input="pdf": every protocol's pattern is made from a nanocrystal
    G(r) as the solver makes it (a spy on the real function counts)."""
    import pandas as pd
    from textbook import textbook

    from diffpy_mlsolve.data import examples

    made = []
    real = examples._nano_pdf_input

    def spy(crystal, rng):
        made.append(crystal)
        return real(crystal, rng)

    monkeypatch.setattr(examples, "_nano_pdf_input", spy)
    csv = tmp_path / "two.csv"
    pd.DataFrame(
        {
            "material_id": ["a", "b"],
            "cif": [textbook()[n].to(fmt="cif") for n in ("NaCl", "CsCl")],
        }
    ).to_csv(csv, index=False)
    model = _tiny_checkpoint(tmp_path / "m")
    report = evaluate(
        model, csv, grid=12, samples=1, progress=False, input="pdf"
    )
    # reference, control (the next structure's G(r)) and single, each
    assert len(made) == 2 * 3
    assert report["settings"]["input"] == "pdf"
    assert "nanopdf" in report["settings"]["input_note"]
    assert -1 <= report["density"]["single"]["ssim_mean"] <= 1
    assert "G(r)" in format_report(report)
    with pytest.raises(ValueError, match="'pxrd' or 'pdf'"):
        evaluate(model, csv, grid=12, samples=1, progress=False, input="xy")
