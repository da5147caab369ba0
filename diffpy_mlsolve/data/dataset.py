"""A torch Dataset of training examples, seeded per (epoch, index).

Map-style, so the order comes from the sampler: a plain or a
``DistributedSampler`` (each rank reads its own shard); the content of
example ``i`` in epoch ``e`` depends only on (seed, e, i), never on the
number of workers or ranks.  Simulations can be reused across epochs
(``variants``) and read from an on-disk :class:`ExampleCache`.
"""

from __future__ import annotations

import torch

from diffpy_mlsolve.data.examples import ExampleBuilder

__all__ = ["DensityDataset", "worker_init"]


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: one BLAS and one torch thread each, so
    workers do not fight over the cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch.set_num_threads(1)


class DensityDataset(torch.utils.data.Dataset):
    """Examples of a structure source.

    Parameters
    ----------
    source : StructureSource
        Map-style source of StructureRecords.
    builder : ExampleBuilder
    seed : int
    variants : int, optional
        Simulated measurements per structure, reused in turn across
        epochs (epoch e uses variant e mod variants); None draws a new
        measurement every epoch.  Composition modes and sampled points
        are drawn afresh every epoch either way.
    cache : ExampleCache, optional
        Where simulations of (variant, index) are read from when present.
    """

    def __init__(
        self,
        source,
        builder: ExampleBuilder,
        *,
        seed: int = 0,
        variants: int | None = None,
        cache=None,
    ):
        self.source = source
        self.builder = builder
        self.seed = int(seed)
        self.variants = variants
        self.cache = cache
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (workers get it when they start)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def variant(self, epoch: int | None = None) -> int:
        epoch = self.epoch if epoch is None else epoch
        return epoch if self.variants is None else epoch % self.variants

    def sim_seed(self, index: int, variant: int) -> list[int]:
        return [self.seed, 0, int(variant), int(index)]

    def __getitem__(self, index: int) -> dict:
        record = self.source[index]
        variant = self.variant()
        sim = None
        if self.cache is not None:
            sim = self.cache.get(variant, index)
        if sim is None:
            sim = self.builder.simulate(record, self.sim_seed(index, variant))
        seed = [self.seed, 1, self.epoch, int(index)]
        return self.builder.assemble(record, sim, seed)
