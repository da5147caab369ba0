"""The density network: periodic field, batch independence, checkpoints,
mean latent, σ and KL, and the target transform."""

from __future__ import annotations

import json

import pytest
import torch

from diffpy_mlsolve.data.examples import ExampleBuilder, ExampleSpec, collate
from diffpy_mlsolve.data.preprocess import QGrid
from diffpy_mlsolve.data.sources import record_from_pymatgen
from diffpy_mlsolve.errors import ModelNotAvailableError
from diffpy_mlsolve.model.checkpoint import (
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from diffpy_mlsolve.model.layers import PatternEncoder
from diffpy_mlsolve.model.network import CrystalNet, ModelConfig, kl_divergence
from diffpy_mlsolve.structures import DEFAULT_SYMPREC
from diffpy_mlsolve.training import TrainConfig

SPEC = ExampleSpec(qgrid=QGrid(0.5, 8.5, 400), density_grid=8, points=32)
CONFIG = ModelConfig(
    qpoints=400,
    width=32,
    blocks=2,
    latent=16,
    conv_channels=4,
    conv_layers=3,
    fourier_extra=16,
)


def _net(config=CONFIG, seed=0) -> CrystalNet:
    """A small net whose FiLM layers are not zero, so z matters."""
    torch.manual_seed(seed)
    net = CrystalNet(config)
    with torch.no_grad():
        for block in net.blocks:
            block.film.weight.normal_(0, 0.3)
            block.film.bias.normal_(0, 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def examples(textbook_structures):
    builder = ExampleBuilder(SPEC)
    out = []
    for seed in range(2):
        for name, s in textbook_structures.items():
            rec = record_from_pymatgen(s, name, DEFAULT_SYMPREC)
            out.append(builder(rec, [seed, len(out)]))
    return out[:16]


@pytest.fixture(scope="module")
def batch(examples):
    return collate(examples)


def _single(batch, i):
    return {k: v[i : i + 1] for k, v in batch.items()}


# ----------------------------------------------------------- periodicity
def test_decoded_field_is_periodic_in_the_cell():
    net = _net().double()
    z = torch.randn(3, CONFIG.latent, dtype=torch.float64)
    x = torch.rand(3, 64, 3, dtype=torch.float64)
    u = net.decode(z, x)
    assert u.std() > 0.01  # a field, not a constant
    for shift in ([1, -2, 3], [0, 0, -1], [5, 4, -7]):
        s = torch.tensor(shift, dtype=torch.float64)
        torch.testing.assert_close(net.decode(z, x + s), u, atol=1e-9, rtol=0)
    # in float32 too, to the rounding of x + shift
    net32 = net.float()
    x32 = x.float()
    u32 = net32.decode(z.float(), x32)
    shifted = net32.decode(z.float(), x32 + torch.tensor([1.0, -2.0, 3.0]))
    torch.testing.assert_close(shifted, u32, atol=1e-4, rtol=0)


def test_decoded_field_is_continuous_across_a_cell_face():
    net = _net()
    z = torch.randn(1, CONFIG.latent)
    yz = torch.rand(200, 2)

    def at(x):
        pts = torch.cat([torch.full((200, 1), x), yz], 1)
        return net.decode(z, pts[None])[0]

    with torch.no_grad():
        across = (at(0.999) - at(0.001)).abs().max()
        inside = max(
            (at(x - 0.001) - at(x + 0.001)).abs().max()
            for x in (0.1, 0.3, 0.5, 0.7, 0.9)
        )
        spread = at(0.5).std()
    assert across < 3 * inside
    assert across < 0.2 * spread


# ------------------------------------------------------ batch independence
def test_predictions_do_not_depend_on_the_rest_of_the_batch(batch):
    net = _net()
    assert len(batch["pattern"]) == 16
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for m in net.modules()
    )
    with torch.no_grad():
        mu, sigma = net.encode(batch)
        grids = net.predict_grid(batch, 6)
        for i in range(16):
            one = _single(batch, i)
            m1, s1 = net.encode(one)
            torch.testing.assert_close(m1[0], mu[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(s1[0], sigma[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                net.predict_grid(one, 6)[0], grids[i], atol=1e-5, rtol=1e-5
            )
    # and the inputs do matter
    assert (mu[0] - mu[1]).abs().max() > 1e-4


def test_pattern_encoder_takes_any_grid_length():
    enc = PatternEncoder(channels=4, layers=3, out=8)
    for n in (400, 2400):
        out = enc(torch.rand(2, n), torch.ones(2, n, dtype=torch.bool))
        assert out.shape == (2, 8)


# ------------------------------------------------------------ checkpoint
def test_checkpoint_round_trip(batch, tmp_path):
    net = _net()
    config = TrainConfig(model=CONFIG, spec=SPEC).to_dict()
    path = save_checkpoint(tmp_path / "ckpt", net, config, {"step": 7})
    assert {p.name for p in path.iterdir()} == {
        "config.json",
        "weights.pt",
        "meta.json",
    }
    assert not list(tmp_path.glob(".ckpt*"))  # no temporary folder left
    loaded, spec, meta = load_model(path)
    assert not loaded.training
    assert spec == SPEC
    assert loaded.config == CONFIG
    assert meta["step"] == 7
    assert meta["parameters"] == sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.predict_grid(batch, 6), net.predict_grid(batch, 6)
        )
    # saving again replaces the folder
    save_checkpoint(path, net, config, {"step": 8})
    assert json.loads((path / "meta.json").read_text())["step"] == 8


def test_incomplete_checkpoint_is_refused(tmp_path):
    config = TrainConfig(model=CONFIG, spec=SPEC).to_dict()
    path = save_checkpoint(tmp_path / "ckpt", _net(), config, {})
    (path / "weights.pt").unlink()
    with pytest.raises(ModelNotAvailableError, match="missing weights.pt"):
        load_model(path)
    with pytest.raises(ModelNotAvailableError, match="missing config.json"):
        load_checkpoint(tmp_path / "nothing")


# ----------------------------------------------------------- mean latent
def test_sample_zero_is_the_mean_latent(batch):
    net = _net()
    sub = {k: v[:3] for k, v in batch.items()}
    gen = torch.Generator().manual_seed(1)
    first = net.predict_grid(sub, 6, samples=3, generator=gen)
    gen = torch.Generator().manual_seed(2)
    again = net.predict_grid(sub, 6, samples=3, generator=gen)
    assert first.shape == (3, 3, 6, 6, 6)
    torch.testing.assert_close(first[:, 0], again[:, 0], atol=0, rtol=0)
    for s in (1, 2):
        assert (first[:, s] - first[:, 0]).abs().amax() > 1e-4
        assert (first[:, s] - again[:, s]).abs().amax() > 1e-4
    assert (first[:, 1] - first[:, 2]).abs().amax() > 1e-4
    # sample 0 is decode(mu) scaled by the predicted maximum
    with torch.no_grad():
        mu, _ = net.encode(sub)
        r = torch.arange(6) / 6
        pts = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1)
        u = net.decode(mu, pts.reshape(1, -1, 3).expand(3, -1, -1))
        rho = net.to_density(u, net.log_rho_max(mu, sub["lattice"]))
    torch.testing.assert_close(first[:, 0].reshape(3, -1), rho)
    # the same generator seed gives the same draws
    gen = torch.Generator().manual_seed(1)
    torch.testing.assert_close(
        net.predict_grid(sub, 6, samples=3, generator=gen), first
    )


# ------------------------------------------------------------- σ and KL
def test_sigma_is_positive(batch):
    net = _net()
    with torch.no_grad():
        _, sigma = net.encode(batch)
        assert (sigma > 0).all()
        net.sigma.bias.fill_(-200.0)  # softplus underflows to 0
        _, sigma = net.encode(batch)
    assert (sigma >= 1e-4).all()
    assert torch.isfinite(kl_divergence(torch.zeros_like(sigma), sigma))


def test_kl_divergence():
    mu, sigma = torch.zeros(4, 16), torch.ones(4, 16)
    assert kl_divergence(mu, sigma).item() == pytest.approx(0.0, abs=1e-7)
    assert kl_divergence(mu + 0.5, sigma).item() > 0
    assert kl_divergence(mu, 2 * sigma).item() > 0
    assert kl_divergence(mu, 0.5 * sigma).item() > 0
    # closed form in one dimension: 0.5 (mu^2 + s^2 - 1 - 2 ln s)
    one = kl_divergence(torch.tensor([[1.0]]), torch.tensor([[2.0]]))
    want = 0.5 * (1 + 4 - 1 - 2 * torch.log(torch.tensor(2.0)))
    assert one.item() == pytest.approx(want.item(), rel=1e-6)
    # summed over dimensions, averaged over the batch
    assert kl_divergence(mu + 1, sigma).item() == pytest.approx(8.0)


# ------------------------------------------------------ target transform
@pytest.mark.parametrize("transform", ["linear", "sqrt"])
def test_target_and_to_density_are_inverse(transform):
    cfg = ModelConfig(**{**CONFIG.to_dict(), "target_transform": transform})
    net = CrystalNet(cfg)
    rho_max = torch.tensor([2.5, 40.0])
    density = torch.rand(2, 50) * rho_max[:, None]
    u = net.target(density, rho_max)
    assert u.min() >= 0 and u.max() <= 1
    torch.testing.assert_close(
        net.target(rho_max[:, None], rho_max), torch.ones(2, 1)
    )
    back = net.to_density(u, torch.log(rho_max))
    torch.testing.assert_close(back, density, rtol=1e-5, atol=1e-5)
    if transform == "sqrt":
        torch.testing.assert_close(u**2, density / rho_max[:, None])
        # a negative network output is no negative density
        neg = net.to_density(-torch.ones(2, 3), torch.log(rho_max))
        assert (neg == 0).all()
