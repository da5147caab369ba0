"""Training: a loss that falls, train() end to end, exact resume, DDP on
CPU, the config file and the epoch sampler."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from pymatgen.core import Lattice, Structure

from diffpy_mlsolve import training
from diffpy_mlsolve.data.examples import ExampleBuilder, ExampleSpec, collate
from diffpy_mlsolve.data.preprocess import QGrid
from diffpy_mlsolve.data.sources import record_from_pymatgen
from diffpy_mlsolve.errors import MLSolveError
from diffpy_mlsolve.model.network import CrystalNet, ModelConfig
from diffpy_mlsolve.structures import DEFAULT_SYMPREC
from diffpy_mlsolve.training import (
    EpochSampler,
    TrainConfig,
    loss_terms,
    train,
)

REPO = Path(__file__).resolve().parents[1]
SPEC = ExampleSpec(qgrid=QGrid(0.5, 8.5, 400), density_grid=12, points=48)
MODEL = ModelConfig(
    qpoints=400,
    width=32,
    blocks=2,
    latent=16,
    conv_channels=4,
    conv_layers=3,
    fourier_extra=16,
)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """One torch thread: tiny models run far faster so, and train() sizes
    its threads from os.cpu_count()."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def structures(textbook_structures):
    si = Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(5.431), ["Si"], [[0.125] * 3]
    )
    return {**textbook_structures, "Si": si}


@pytest.fixture(scope="module")
def table(structures, tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "structures.csv"
    rows = [
        {"material_id": name, "cif": s.to(fmt="cif")}
        for name, s in structures.items()
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(table, out, **kw) -> TrainConfig:
    base = dict(
        train=str(table),
        val=str(table),
        val_limit=3,
        spec=SPEC,
        model=MODEL,
        batch_size=2,
        steps=6,
        val_every=3,
        warmup=2,
        workers=0,
        device="cpu",
        out=str(out),
    )
    base.update(kw)
    return TrainConfig(**base)


def _meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


# ----------------------------------------------------- train on one batch
def test_loss_falls_on_one_batch(structures):
    builder = ExampleBuilder(SPEC)
    names = ["NaCl", "SrTiO3", "TiO2", "CaF2"]
    batch = collate(
        [
            builder(record_from_pymatgen(structures[n], n, DEFAULT_SYMPREC), i)
            for i, n in enumerate(names)
        ]
    )
    cfg = TrainConfig(model=MODEL, spec=SPEC)
    torch.manual_seed(0)
    net = CrystalNet(MODEL)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def loss(step):
        gen = torch.Generator().manual_seed(step)
        return loss_terms(net, batch, cfg, generator=gen)

    start = {k: v.item() for k, v in loss(0).items()}
    for step in range(60):
        terms = loss(step)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    end = {k: v.item() for k, v in loss(0).items()}
    assert end["loss"] < 0.7 * start["loss"]
    assert end["density"] < 0.7 * start["density"]
    assert start["loss"] == pytest.approx(
        start["density"]
        + cfg.scale_weight * start["scale"]
        + cfg.kl_weight * start["kl"],
        rel=1e-6,
    )


# ------------------------------------------------------------- end to end
def test_train_writes_checkpoints_and_resumes(table, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = _config(table, out)
    assert train(cfg, progress=False) == out
    first = capsys.readouterr().out
    assert "step 3:" in first and "step 6:" in first
    for name in ("last", "best"):
        assert (out / name / "weights.pt").is_file()
    assert (out / "last" / "training_state.pt").is_file()
    assert not (out / "best" / "training_state.pt").exists()
    meta = _meta(out / "last")
    assert meta["step"] == 6
    assert [h["step"] for h in meta["history"]] == [3, 6]
    for h in meta["history"]:
        assert -1 <= h["val_ssim"] <= 1
        assert h["loss"] > 0
    assert meta["val"]["n"] == 3
    best = _meta(out / "best")
    assert best["val"]["ssim"] == max(h["val_ssim"] for h in meta["history"])
    saved = json.loads((out / "last" / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == cfg

    train(dataclasses.replace(cfg, steps=9), resume=True, progress=False)
    resumed = capsys.readouterr().out
    assert "step 9:" in resumed
    assert "step 3:" not in resumed and "step 6:" not in resumed
    meta = _meta(out / "last")
    assert meta["step"] == 9
    assert [h["step"] for h in meta["history"]] == [3, 6, 9]


def test_init_starts_from_a_checkpoint_and_checks_the_model(table, tmp_path):
    base = tmp_path / "base"
    train(_config(table, base, steps=3), progress=False)
    start = torch.load(base / "last" / "weights.pt")
    # a learning rate of 1e-12: three Adam steps move no weight visibly
    still = dict(steps=3, lr=1e-12, lr_min=1e-12)
    cfg = _config(table, tmp_path / "tuned", init=str(base / "last"), **still)
    train(cfg, progress=False)
    tuned = torch.load(tmp_path / "tuned" / "last" / "weights.pt")
    assert start.keys() == tuned.keys()
    assert all(torch.allclose(start[k], tuned[k], atol=1e-8) for k in start)
    # without init the same run keeps its own fresh weights
    train(_config(table, tmp_path / "fresh", seed=1, **still), progress=False)
    fresh = torch.load(tmp_path / "fresh" / "last" / "weights.pt")
    assert not all(torch.allclose(start[k], fresh[k]) for k in start)
    other = dataclasses.replace(MODEL, width=MODEL.width * 2)
    with pytest.raises(MLSolveError, match="copy the checkpoint's model"):
        train(dataclasses.replace(cfg, model=other), progress=False)
    qgrid = dataclasses.replace(SPEC.qgrid, qmax=SPEC.qgrid.qmax + 1)
    spec = dataclasses.replace(SPEC, qgrid=qgrid)
    with pytest.raises(MLSolveError, match="spec qgrid"):
        train(dataclasses.replace(cfg, spec=spec), progress=False)


def test_resume_needs_a_checkpoint(table, tmp_path):
    with pytest.raises(MLSolveError, match="Nothing to resume"):
        train(_config(table, tmp_path / "empty"), resume=True)


class _Killed(Exception):
    pass


def test_resume_is_exact(table, tmp_path, monkeypatch):
    straight = _config(table, tmp_path / "straight", steps=8, val_every=4)
    train(straight, progress=False)

    # the same run, killed right after its step-4 checkpoint (mid-epoch:
    # 5 batches per epoch), then resumed
    killed = dataclasses.replace(straight, out=str(tmp_path / "killed"))
    real = training._checkpoint

    def checkpoint_then_die(*args):
        best = real(*args)
        if args[5] == 4:  # step
            raise _Killed
        return best

    monkeypatch.setattr(training, "_checkpoint", checkpoint_then_die)
    with pytest.raises(_Killed):
        train(killed, progress=False)
    monkeypatch.setattr(training, "_checkpoint", real)
    assert _meta(tmp_path / "killed" / "last")["step"] == 4
    train(killed, resume=True, progress=False)

    a = torch.load(tmp_path / "straight" / "last" / "weights.pt")
    b = torch.load(tmp_path / "killed" / "last" / "weights.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (
        _meta(tmp_path / "straight" / "last")["history"]
        == _meta(tmp_path / "killed" / "last")["history"]
    )


# -------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(table, tmp_path):
    out = tmp_path / "ddp"
    cfg = _config(table, out, steps=2, val_every=2)
    config = tmp_path / "ddp.json"
    config.write_text(json.dumps(cfg.to_dict()))
    script = tmp_path / "run_train.py"
    script.write_text(
        "import sys\n"
        "import torch.distributed as dist\n"
        "from diffpy_mlsolve.training import TrainConfig, train\n"
        "train(TrainConfig.from_file(sys.argv[1]), progress=False)\n"
        "dist.destroy_process_group()\n"
    )
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--standalone",
            str(script),
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = _meta(out / "last")
    assert meta["step"] == 2
    assert [h["step"] for h in meta["history"]] == [2]
    assert (out / "best" / "weights.pt").is_file()
    # one checkpoint line: only rank 0 validates and saves
    assert done.stdout.count("step 2:") == 1


# ----------------------------------------------------------------- config
def test_config_from_yaml_and_json(tmp_path):
    data = {
        "train": "synthetic:10",
        "steps": 12,
        "systems": ["cubic"],
        "spec": {
            "density_grid": 16,
            "qgrid": {"qmin": 0.5, "qmax": 8.5, "npoints": 400},
            "mode_weights": [["full", 1.0]],
        },
        "model": {"width": 32, "target_transform": "sqrt"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.json").write_text(json.dumps(data))
    a = TrainConfig.from_file(tmp_path / "c.yaml")
    b = TrainConfig.from_file(tmp_path / "c.json")
    assert a == b
    assert a.steps == 12 and a.systems == ["cubic"]
    assert a.spec.qgrid == QGrid(0.5, 8.5, 400)
    assert a.spec.mode_weights == (("full", 1.0),)
    assert a.model.width == 32 and a.model.target_transform == "sqrt"
    assert a.batch_size == TrainConfig().batch_size  # defaults fill in
    assert TrainConfig.from_dict(a.to_dict()) == a


def test_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: 3\nbogus: 1\nlearning_rate: 0.1\n")
    with pytest.raises(
        MLSolveError, match=r"Unknown training settings \['bogus', "
    ) as err:
        TrainConfig.from_file(path)
    assert "learning_rate" in str(err.value)
    with pytest.raises(MLSolveError, match="No such config file"):
        TrainConfig.from_file(tmp_path / "missing.yaml")


def test_repository_small_config_loads():
    cfg = TrainConfig.from_file(REPO / "configs" / "small.yaml")
    assert cfg.systems == ["cubic", "trigonal"]
    assert cfg.spec.density_grid == 32 and cfg.spec.points == 512
    assert cfg.model.width == 256 and cfg.variants == 4
    assert cfg.val_every < cfg.steps
    raw = yaml.safe_load((REPO / "configs" / "small.yaml").read_text())
    assert cfg.steps == raw["steps"] and cfg.lr == raw["lr"]


def test_repository_nanopdf_config_fine_tunes_the_shipped_model():
    from diffpy_mlsolve.model.checkpoint import load_checkpoint

    cfg = TrainConfig.from_file(REPO / "configs" / "nanopdf.yaml")
    assert cfg.spec.condition_mode == "nanopdf"
    config, _, _ = load_checkpoint(REPO / cfg.init)
    assert TrainConfig.from_dict(config).model == cfg.model


# ---------------------------------------------------------------- sampler
@pytest.mark.parametrize("n", [10, 11])
def test_epoch_sampler_shards(n):
    ranks = [EpochSampler(n, 3, 1, rank, 2).indices() for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == n // 2
    assert not set(ranks[0]) & set(ranks[1])
    assert len(set(ranks[0]) | set(ranks[1])) == 2 * (n // 2)
    again = EpochSampler(n, 3, 1, 0, 2)
    assert list(again) == ranks[0]
    assert EpochSampler(n, 3, 2, 0, 2).indices() != ranks[0]
    one = EpochSampler(n, 3, 1)
    assert sorted(one) == list(range(n))
    late = EpochSampler(n, 3, 1, 0, 2, start=2)
    assert list(late) == ranks[0][2:]
    assert len(late) == n // 2 - 2


def test_bf16_autocast_step_runs_on_cpu(tmp_path):
    """``amp: true`` (bf16 autocast) trains on the CPU as on a GPU."""
    import torch

    from diffpy_mlsolve.model.network import CrystalNet, ModelConfig
    from diffpy_mlsolve.training import TrainConfig, loss_terms

    cfg = TrainConfig(amp=True)
    small = ModelConfig(
        width=16,
        blocks=1,
        latent=8,
        conv_channels=4,
        conv_layers=2,
        fourier_extra=4,
    )
    model = CrystalNet(small)
    b, p = 2, 16
    batch = {
        "pattern": torch.rand(b, 200),
        "mask": torch.ones(b, 200, dtype=torch.bool),
        "composition": torch.rand(b, 99),
        "comp_mode": torch.zeros(b, dtype=torch.long),
        "lattice": torch.rand(b, 6),
        "points": torch.rand(b, p, 3),
        "density": torch.rand(b, p),
        "rho_max": torch.full((b,), 10.0),
    }
    with torch.autocast("cpu", torch.bfloat16):
        terms = loss_terms(model, batch, cfg)
    terms["loss"].backward()
    grads = [q.grad for q in model.parameters() if q.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
