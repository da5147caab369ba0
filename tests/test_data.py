"""Training examples: determinism, composition modes, pattern input,
density targets, the on-disk cache and the Q binning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from diffpy_mlsolve.data.cache import ExampleCache
from diffpy_mlsolve.data.composition import MODES, composition_vector
from diffpy_mlsolve.data.conditions import sample_conditions
from diffpy_mlsolve.data.dataset import DensityDataset, worker_init
from diffpy_mlsolve.data.examples import ExampleBuilder, ExampleSpec, collate
from diffpy_mlsolve.data.preprocess import (
    QGrid,
    bin_average,
    pattern_to_input,
)
from diffpy_mlsolve.data.sources import record_from_pymatgen
from diffpy_mlsolve.errors import MLSolveError, PatternFormatError
from diffpy_mlsolve.pattern import Pattern
from diffpy_mlsolve.structures import DEFAULT_SYMPREC

QGRID = QGrid(0.5, 8.5, 400)
SPEC = ExampleSpec(qgrid=QGRID, density_grid=12, points=48)
NAMES = ("NaCl", "SrTiO3", "CaF2", "TiO2", "CsCl")
# atomic numbers
SR, TI, OX = 38, 22, 8


@pytest.fixture(scope="module")
def records(textbook_structures):
    return [
        record_from_pymatgen(textbook_structures[n], n, DEFAULT_SYMPREC)
        for n in NAMES
    ]


@pytest.fixture(scope="module")
def srtio3(records):
    return records[NAMES.index("SrTiO3")]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(
            np.asarray(a[k]), np.asarray(b[k]), err_msg=k
        )


# ------------------------------------------------------------ determinism
def test_example_is_a_function_of_record_and_seed(srtio3):
    builder = ExampleBuilder(SPEC)
    first = builder(srtio3, [7, 1], [7, 2])
    _same(first, builder(srtio3, [7, 1], [7, 2]))
    other = builder(srtio3, [8, 1], [7, 2])
    assert not np.array_equal(first["pattern"], other["pattern"])


def _batches(dataset, workers, order):
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=2,
        sampler=order,
        num_workers=workers,
        worker_init_fn=worker_init,
        collate_fn=collate,
    )
    return list(loader)


def test_workers_do_not_change_the_batches(records):
    data = DensityDataset(records, ExampleBuilder(SPEC), seed=3)
    data.set_epoch(2)
    order = [3, 1, 0, 4]
    serial = _batches(data, 0, order)
    parallel = _batches(data, 2, order)
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # the batch holds the records of the sampler's order
    want = [records[i].crystal.lattice[0] for i in order[:2]]
    np.testing.assert_allclose(serial[0]["cell"][:, 0], want, rtol=1e-6)


def test_epochs_redraw_points_and_modes_but_reuse_the_simulation(records):
    data = DensityDataset(records, ExampleBuilder(SPEC), seed=0, variants=1)
    epochs = []
    for epoch in range(4):
        data.set_epoch(epoch)
        epochs.append([data[i] for i in range(len(records))])
    for i in range(len(records)):
        first = epochs[0][i]
        for later in (e[i] for e in epochs[1:]):
            for k in ("pattern", "mask", "rho_max", "electrons", "lattice"):
                np.testing.assert_array_equal(first[k], later[k], err_msg=k)
            assert not np.array_equal(first["points"], later["points"])
    modes = {int(e[i]["comp_mode"]) for e in epochs for i in range(5)}
    assert len(modes) >= 2
    # without variants every epoch is a new measurement
    fresh = DensityDataset(records, ExampleBuilder(SPEC), seed=0)
    fresh.set_epoch(1)
    assert not np.array_equal(fresh[0]["pattern"], epochs[0][0]["pattern"])


# ------------------------------------------------------------ composition
def test_full_composition_of_srtio3(srtio3):
    c = srtio3.crystal
    vec = composition_vector(c.numbers, c.occupancy, "full")
    assert vec.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(vec[[SR, TI, OX]], [0.2, 0.2, 0.6], atol=1e-6)
    assert np.count_nonzero(vec) == 3


def test_elements_drop1_and_none(srtio3):
    c = srtio3.crystal
    vec = composition_vector(c.numbers, c.occupancy, "elements")
    np.testing.assert_allclose(vec[[SR, TI, OX]], [1 / 3] * 3, atol=1e-6)
    assert np.count_nonzero(vec) == 3
    dropped = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        vec = composition_vector(c.numbers, c.occupancy, "drop1", rng)
        kept = set(np.flatnonzero(vec))
        assert len(kept) == 2 and kept < {SR, TI, OX}
        np.testing.assert_allclose(vec[sorted(kept)], [0.5, 0.5])
        dropped |= {SR, TI, OX} - kept
    assert dropped == {SR, TI, OX}  # any element can be the one left out
    none = composition_vector(c.numbers, c.occupancy, "none")
    assert not none.any()


def test_builder_fixed_mode_sets_the_one_hot_index(srtio3):
    for mode in MODES:
        ex = ExampleBuilder(SPEC, composition_mode=mode)(srtio3, 0)
        assert int(ex["comp_mode"]) == MODES.index(mode)
        assert ex["composition"].sum() == pytest.approx(
            0.0 if mode == "none" else 1.0, abs=1e-6
        )


# ---------------------------------------------------------- pattern input
def _q(tth, wavelength):
    return 4 * math.pi * math.sin(math.radians(tth) / 2) / wavelength


@pytest.mark.parametrize("sim_seed", [0, 1, 2, 3, 4])
def test_pattern_input_covers_the_measured_q_range(srtio3, sim_seed):
    grid = QGrid(0.3, 12.3, 600)
    spec = dataclasses.replace(SPEC, qgrid=grid)
    sim = ExampleBuilder(spec).simulate(srtio3, sim_seed)
    values, mask = sim["pattern"], sim["mask"]
    assert values.shape == mask.shape == (grid.npoints,)
    assert not values[~mask].any()
    assert values[mask].max() == pytest.approx(1.0)
    cond = sample_conditions(np.random.default_rng(sim_seed))
    lam = cond.wavelength.wavelength
    qlo, qhi = (_q(t, lam) for t in cond.tth_range)
    centres = grid.centres
    covered = centres[mask]
    # one contiguous run of bins, from qlo to qhi within a bin
    assert np.all(np.diff(np.flatnonzero(mask)) == 1)
    assert covered[0] == pytest.approx(max(qlo, centres[0]), abs=grid.step)
    assert covered[-1] == pytest.approx(min(qhi, centres[-1]), abs=grid.step)


def test_noiseless_mode_has_no_noise(srtio3):
    spec = dataclasses.replace(SPEC, condition_mode="noiseless")
    builder = ExampleBuilder(spec)
    a, b = builder.simulate(srtio3, 1), builder.simulate(srtio3, 2)
    np.testing.assert_array_equal(a["pattern"], b["pattern"])
    cond = sample_conditions(np.random.default_rng(5), "noiseless")
    assert cond.counts is None and cond.background is None
    assert cond.crystallite_size is None and cond.strain is None
    assert cond.zero_shift == 0 and cond.preferred_orientation is None
    # realistic patterns of the same structure are noisy: they differ
    real = ExampleBuilder(SPEC)
    assert not np.array_equal(
        real.simulate(srtio3, 1)["pattern"],
        real.simulate(srtio3, 2)["pattern"],
    )


def test_realistic_conditions_span_instruments():
    draws = [sample_conditions(np.random.default_rng(s)) for s in range(200)]
    names = {d.wavelength.name for d in draws}
    assert {"CuKa", "MoKa", "sync"} <= names and len(names) >= 5
    doublets = [d for d in draws if d.wavelength.wavelength2 is not None]
    assert doublets and all(d.wavelength.ratio == 0.5 for d in doublets)
    sync = [
        d.wavelength.wavelength for d in draws if d.wavelength.name == "sync"
    ]
    assert sync and 0.2 <= min(sync) and max(sync) <= 1.0
    counts = np.array([d.counts for d in draws])
    assert counts.min() >= 1e3 and counts.max() <= 1e6
    assert counts.max() / counts.min() > 100  # spans the range
    sizes = [d.crystallite_size for d in draws if d.crystallite_size]
    assert sizes and min(sizes) >= 30 and max(sizes) <= 2000
    assert any(d.crystallite_size is None for d in draws)
    for d in draws:
        lo, hi = d.tth_range
        assert 0 < lo < hi <= 180
        assert _q(hi, d.wavelength.wavelength) <= 15 + 1e-6


# -------------------------------------------------------- density targets
@pytest.mark.parametrize("name", ["NaCl", "SrTiO3", "TiO2"])
def test_density_targets_sample_the_grid(records, name):
    rec = records[NAMES.index(name)]
    spec = dataclasses.replace(SPEC, density_grid=16, points=64)
    ex = ExampleBuilder(spec, full_grid=True)(rec, 3)
    grid = ex["grid"]
    assert grid.shape == (16, 16, 16)
    idx = np.rint(ex["points"] * 16).astype(int)
    np.testing.assert_allclose(ex["points"] * 16, idx, atol=1e-5)
    assert idx.min() >= 0 and idx.max() <= 15
    np.testing.assert_array_equal(
        ex["density"], grid[idx[:, 0], idx[:, 1], idx[:, 2]]
    )
    assert ex["rho_max"] == grid.max()
    c = rec.crystal
    assert ex["electrons"] == pytest.approx(c.electrons)
    assert grid.mean() * c.volume == pytest.approx(c.electrons, rel=5e-3)


def test_electron_counts_of_textbook_cells(records):
    # NaCl: 4 x (11 + 17) = 112 e; SrTiO3: 38 + 22 + 3 x 8 = 84 e
    count = {r.id: r.crystal.electrons for r in records}
    assert count["NaCl"] == pytest.approx(112)
    assert count["SrTiO3"] == pytest.approx(84)


# ------------------------------------------------------------------ cache
@pytest.fixture
def cached(records, tmp_path):
    data = DensityDataset(records, ExampleBuilder(SPEC), seed=1, variants=2)
    ids = [r.id for r in records]
    cache = ExampleCache(tmp_path / "cache", SPEC, ids, shard_size=2)
    return data, cache, ids


def test_cache_holds_the_simulations(cached, records):
    data, cache, _ = cached
    assert cache.shards() == 3
    assert cache.get(0, 0) is None
    assert cache.fill(data, range(2), progress=False) == 6
    for variant in range(2):
        for i, rec in enumerate(records):
            got = cache.get(variant, i)
            want = data.builder.simulate(rec, data.sim_seed(i, variant))
            assert got["pattern"].dtype == np.float16
            np.testing.assert_array_equal(got["mask"], want["mask"])
            for k in ("pattern", "grid"):
                top = np.abs(want[k]).max()
                np.testing.assert_allclose(
                    got[k].astype(np.float32), want[k], atol=1e-3 * top
                )


def test_cache_resumes_and_rebuilds_only_missing_shards(cached):
    data, cache, ids = cached
    cache.fill(data, range(2), progress=False)
    assert cache.fill(data, range(2), progress=False) == 0
    lost = cache.shard_path(1, 1)
    stamps = {
        p: p.stat().st_mtime_ns
        for p in cache.root.rglob("shard_*.npz")
        if p != lost
    }
    lost.unlink()
    # a shard a killed run left half written is not a shard
    leftover = lost.with_name(lost.name + ".tmp12345.npz")
    leftover.write_bytes(b"half a shard")
    fresh = ExampleCache(cache.root, SPEC, ids, shard_size=2)
    assert fresh.get(1, 2) is None
    assert fresh.fill(data, range(2), progress=False) == 1
    assert lost.is_file()
    assert fresh.get(1, 2) is not None
    for p, t in stamps.items():
        assert p.stat().st_mtime_ns == t, p
    assert not [p for p in cache.root.rglob("*.tmp*") if p != leftover]


def test_cache_refuses_another_spec_or_source(cached):
    _, cache, ids = cached
    other = dataclasses.replace(SPEC, density_grid=16)
    with pytest.raises(MLSolveError, match="another example spec"):
        ExampleCache(cache.root, other, ids, shard_size=2)
    with pytest.raises(MLSolveError, match="other structures"):
        ExampleCache(cache.root, SPEC, ids[::-1], shard_size=2)


def test_dataset_with_cache_gives_the_same_examples(cached, records):
    data, cache, _ = cached
    cache.fill(data, range(2), progress=False)
    with_cache = DensityDataset(
        records, data.builder, seed=1, variants=2, cache=cache
    )
    for epoch in (0, 1, 2):
        data.set_epoch(epoch)
        with_cache.set_epoch(epoch)
        for i in range(len(records)):
            a, b = data[i], with_cache[i]
            assert a.keys() == b.keys()
            for k in a:
                top = float(np.abs(a[k]).max()) or 1.0
                np.testing.assert_allclose(
                    np.asarray(b[k], float),
                    np.asarray(a[k], float),
                    atol=1e-3 * top,
                    err_msg=k,
                )


# ------------------------------------------------------------ Q binning
def test_bin_average_keeps_the_area_of_a_narrow_peak():
    grid = QGrid(1.0, 5.0, 200)  # bins of 0.02 Å^-1
    q = np.arange(0.5, 5.5, 0.0004)
    centre, sigma = 3.0013, 0.006  # narrower than one bin
    y = np.exp(-0.5 * ((q - centre) / sigma) ** 2)
    area = sigma * math.sqrt(2 * math.pi)
    values, mask = bin_average(q, y, grid)
    assert mask.all()
    assert values.sum() * grid.step == pytest.approx(area, rel=1e-3)
    # sampling at the bin centres instead would not keep it
    point = np.interp(grid.centres, q, y).sum() * grid.step
    assert abs(point - area) / area > 0.05


def test_pattern_to_input_rejects_a_pdf_and_a_pattern_off_the_grid():
    r = np.linspace(1, 20, 300)
    pdf = Pattern.from_arrays(r, np.sin(r), xtype="r")
    with pytest.raises(PatternFormatError, match="PDF G"):
        pattern_to_input(pdf, QGRID)
    q = np.linspace(20, 25, 300)
    far = Pattern.from_arrays(q, 1 + np.exp(-((q - 22) ** 2)), xtype="q")
    with pytest.raises(PatternFormatError, match="outside the model's grid"):
        pattern_to_input(far, QGRID)


# --------------------------------------------------------- nanocrystal PDFs
def test_pdf_conditions_cover_what_the_issue_names():
    """Particles of 1.5-10 nm and bulk, Qmax 15-30 Å^-1, Qdamp and Qbroad
    as instruments give them, G(r) to 15-30 Å, noise; a seed fixes them
    and a particle is never smaller than the cell."""
    from diffpy_mlsolve.data.conditions import sample_pdf_conditions

    draws = [
        sample_pdf_conditions(np.random.default_rng(s), min_diameter=20.0)
        for s in range(400)
    ]
    sizes = np.array([c.diameter for c in draws if c.diameter is not None])
    assert 0.05 < sum(c.diameter is None for c in draws) / 400 < 0.3
    assert sizes.min() >= 20.0 and sizes.max() <= 100.0
    assert np.median(sizes) < 50.0  # log-uniform: small particles common
    for key, lo, hi in [
        ("qmax", 15, 30),
        ("qdamp", 0.01, 0.06),
        ("qbroad", 0, 0.02),
        ("rmax", 15, 30),
        ("noise", 0.002, 0.02),
    ]:
        values = np.array([getattr(c, key) for c in draws])
        assert lo <= values.min() and values.max() <= hi, key
        assert values.max() - values.min() > 0.8 * (hi - lo), key
    again = sample_pdf_conditions(np.random.default_rng(3), 20.0)
    assert again == draws[3]
    with pytest.raises(ValueError, match="sample_pdf_conditions"):
        sample_conditions(np.random.default_rng(0), "nanopdf")


def test_nanopdf_examples_are_what_the_solver_makes_of_a_gr(records):
    """In the "nanopdf" mode the input is the G(r) of a nanocrystal turned
    into the network's input as the solver turns one (its intensities
    fitted in r, rendered as a sharp powder pattern): rock-salt NaCl's
    strongest bin is its 200 line, and a seed fixes the example."""
    nacl = records[NAMES.index("NaCl")]
    spec = dataclasses.replace(SPEC, condition_mode="nanopdf")
    builder = ExampleBuilder(spec)
    a = builder.simulate(nacl, 4)
    _same(a, builder.simulate(nacl, 4))
    values, mask = a["pattern"], a["mask"]
    assert mask.any() and values[mask].max() == pytest.approx(1.0)
    q200 = 2 * math.pi * 2 / float(nacl.crystal.lattice[0])
    assert abs(QGRID.centres[np.argmax(values)] - q200) < 0.1
    assert not np.array_equal(
        values, ExampleBuilder(SPEC).simulate(nacl, 4)["pattern"]
    )
