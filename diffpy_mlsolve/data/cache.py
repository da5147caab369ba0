"""An on-disk cache of simulated measurements, for when simulation is the
bottleneck of training.

Layout: ``ROOT/manifest.json`` (what the cache is of: the example spec
and a digest of the structure ids) and ``ROOT/v<variant>/shard_<k>.npz``,
each holding the pattern input, mask and density grid (float16) of
``shard_size`` consecutive structures.  Shards are written to a temporary
file and renamed, so a killed run leaves no half shard; :meth:`fill`
skips shards that exist, so it resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from diffpy_mlsolve.data.dataset import worker_init
from diffpy_mlsolve.errors import MLSolveError

__all__ = ["ExampleCache"]

_KEYS = ("pattern", "mask", "grid")
# the fields of ExampleSpec a simulation depends on (points, composition
# modes and the like are drawn afresh at read time)
_SIMULATION_FIELDS = ("qgrid", "density_grid", "condition_mode")


def _digest(ids) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class ExampleCache:
    """Simulations of (variant, index) stored in sharded .npz files.

    Parameters
    ----------
    root : path
        The cache folder (created if needed).
    spec : ExampleSpec
        The examples' spec; a cache of another spec is refused.
    ids : sequence of str
        The structure ids of the source, in order; likewise checked.
    shard_size : int
        Structures per shard file.
    """

    def __init__(self, root, spec, ids, shard_size: int = 256):
        self.root = Path(root)
        self.shard_size = int(shard_size)
        self.n = len(ids)
        sim = {k: asdict(spec)[k] for k in _SIMULATION_FIELDS}
        self.key = {
            "spec": json.loads(json.dumps(sim, default=str)),
            "ids": _digest(ids),
            "n": self.n,
            "shard_size": self.shard_size,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / "manifest.json"
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != self.key:
                raise MLSolveError(
                    f"The cache in {str(self.root)!r} was made for other "
                    "structures or another example spec. Please use a new "
                    "cache folder (or delete this one)."
                )
        else:
            _atomic_write_text(manifest, json.dumps(self.key, indent=1))
        self._loaded: OrderedDict = OrderedDict()

    def shard_path(self, variant: int, shard: int) -> Path:
        return self.root / f"v{variant:03d}" / f"shard_{shard:05d}.npz"

    def shards(self) -> int:
        return -(-self.n // self.shard_size)

    def get(self, variant: int, index: int) -> dict | None:
        """The cached simulation, or None when its shard is not there."""
        shard, pos = divmod(int(index), self.shard_size)
        key = (variant, shard)
        data = self._loaded.get(key)
        if data is None:
            path = self.shard_path(variant, shard)
            if not path.exists():
                return None
            with np.load(path) as z:
                data = {k: z[k] for k in _KEYS}
            self._loaded[key] = data
            if len(self._loaded) > 4:
                self._loaded.popitem(last=False)
        return {k: data[k][pos] for k in _KEYS}

    def fill(self, dataset, variants, workers: int = 0, progress=True):
        """Simulate and write every missing shard of ``variants``.

        Parameters
        ----------
        dataset : DensityDataset
            Gives the builder, the source and the seeds.
        variants : iterable of int
        workers : int
            DataLoader worker processes.
        """
        from tqdm import tqdm

        todo = [
            (v, s)
            for v in variants
            for s in range(self.shards())
            if not self.shard_path(v, s).exists()
        ]
        jobs = _ShardJobs(dataset, todo, self.shard_size, self.n)
        loader = torch.utils.data.DataLoader(
            jobs,
            batch_size=None,
            num_workers=workers,
            worker_init_fn=worker_init,
        )
        bar = tqdm(
            loader,
            total=len(todo),
            desc="cache",
            unit="shard",
            disable=not progress,
        )
        for (variant, shard), arrays in zip(todo, bar):
            path = self.shard_path(variant, shard)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        return len(todo)


class _ShardJobs(torch.utils.data.Dataset):
    """One item per shard to simulate (runs in DataLoader workers)."""

    def __init__(self, dataset, todo, shard_size, n):
        self.dataset, self.todo = dataset, todo
        self.shard_size, self.n = shard_size, n

    def __len__(self):
        return len(self.todo)

    def __getitem__(self, i):
        variant, shard = self.todo[i]
        ds = self.dataset
        stop = min(self.n, (shard + 1) * self.shard_size)
        sims = [
            ds.builder.simulate(ds.source[j], ds.sim_seed(j, variant))
            for j in range(shard * self.shard_size, stop)
        ]
        return {
            "pattern": np.stack([s["pattern"] for s in sims]).astype(
                np.float16
            ),
            "mask": np.stack([s["mask"] for s in sims]),
            "grid": np.stack([s["grid"] for s in sims]).astype(np.float16),
        }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
