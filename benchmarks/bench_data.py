"""Throughput of the training-data pipeline against the training step.

    .venv/bin/python benchmarks/bench_data.py [--n 96] [--device cpu]

Prints, measured in this run on N cubic/trigonal structures (<= 64 atoms
in the conventional cell) of ../shared/data/structures/val.csv.gz:
1. examples per second of one process (one thread) with 32^3 and 50^3
   density targets, realistic conditions;
2. examples per second through a DataLoader with 1 and 2 workers, and the
   largest resident memory of a worker;
3. examples per second read back from the on-disk cache;
4. examples per second of one training step of the default small model
   (batch 32, 512 points) on this machine, and whether the data keep up.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import warnings

import torch
from _shared import STRUCTURES

from diffpy_mlsolve.data.cache import ExampleCache
from diffpy_mlsolve.data.dataset import DensityDataset, worker_init
from diffpy_mlsolve.data.examples import ExampleBuilder, ExampleSpec, collate
from diffpy_mlsolve.data.sources import open_source
from diffpy_mlsolve.model.network import CrystalNet
from diffpy_mlsolve.training import TrainConfig, loss_terms

TABLE = STRUCTURES / "val.csv.gz"


def rate_single(source, spec, n):
    builder = ExampleBuilder(spec)
    builder(source[0], [0, 0])
    t0 = time.perf_counter()
    for i in range(n):
        builder(source[i % len(source)], [0, i])
    return n / (time.perf_counter() - t0)


def rate_loader(dataset, workers, batches, batch_size=32):
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init if workers else None,
        shuffle=False,
    )
    t0, seen = time.perf_counter(), 0
    for i, batch in enumerate(loader):
        seen += len(batch["pattern"])
        if i + 1 >= batches:
            break
    return seen / (time.perf_counter() - t0)


def rate_train_step(device, threads, steps=5):
    torch.set_num_threads(threads)
    cfg = TrainConfig()
    model = CrystalNet(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    b, p = 32, cfg.spec.points
    batch = {
        "pattern": torch.rand(b, cfg.spec.qgrid.npoints),
        "mask": torch.ones(b, cfg.spec.qgrid.npoints, dtype=torch.bool),
        "composition": torch.rand(b, 99),
        "comp_mode": torch.zeros(b, dtype=torch.long),
        "lattice": torch.rand(b, 6),
        "points": torch.rand(b, p, 3),
        "density": torch.rand(b, p),
        "rho_max": torch.full((b,), 100.0),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = loss_terms(model, batch, cfg)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return b / min(times[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=96, help="structures (96)")
    ap.add_argument("--device", default="cpu", help="for the train step")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = open_source(
            TABLE, systems=["cubic", "trigonal"], max_atoms=64, limit=args.n
        )
    n = len(source)
    print(f"{n} structures, {os.cpu_count()} cores, torch {torch.__version__}")

    print("\n1. one process, one thread")
    for grid in (32, 50):
        r = rate_single(source, ExampleSpec(density_grid=grid), n)
        print(f"   {grid}^3 targets: {r:7.1f} examples/s")

    print("\n2. DataLoader (32^3 targets, batches of 32)")
    ds = DensityDataset(source, ExampleBuilder(ExampleSpec()), seed=0)
    for workers in (1, 2):
        r = rate_loader(ds, workers, batches=max(1, n // 32))
        print(f"   {workers} worker(s): {r:7.1f} examples/s")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"   largest worker resident memory: {rss:.0f} MB")

    print("\n3. from the on-disk cache (simulations reused)")
    with tempfile.TemporaryDirectory() as tmp:
        cache = ExampleCache(tmp, ds.builder.spec, source.ids, shard_size=32)
        t0 = time.perf_counter()
        cache.fill(ds, [0], workers=2, progress=False)
        fill = n / (time.perf_counter() - t0)
        cached = DensityDataset(
            source, ds.builder, seed=0, variants=1, cache=cache
        )
        r = rate_loader(cached, 0, batches=max(1, n // 32))
        print(f"   filling with 2 workers: {fill:7.1f} examples/s")
        print(f"   reading (main process): {r:7.1f} examples/s")

    print("\n4. one training step of the default model (batch 32)")
    dev = torch.device(args.device)
    threads = 1 if dev.type == "cpu" else torch.get_num_threads()
    step = rate_train_step(dev, threads)
    print(f"   {dev.type}, {threads} thread(s): {step:7.1f} examples/s")
    live = rate_single(source, ExampleSpec(), 16)
    for name, rate in (("on-the-fly, one worker", live), ("cache", r)):
        verdict = "keeps up" if rate >= step else "does not keep up"
        print(f"   {name}: {rate:7.1f} examples/s, {verdict}")


if __name__ == "__main__":
    main()
