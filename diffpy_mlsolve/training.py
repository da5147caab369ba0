"""Training of the density network: config, loop, validation, resume, DDP.

``mlsolve train --config FILE`` (YAML or JSON of :class:`TrainConfig`).
Single process on CPU or one GPU (bf16 autocast with ``amp``), or several
processes with ``torchrun`` (DistributedDataParallel, gloo on CPU, NCCL on
GPUs).  Steps are deterministic: batch ``s`` is a pure function of (seed,
s), so ``--resume`` continues exactly where a killed run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffpy_mlsolve.data.examples import ExampleSpec, collate
from diffpy_mlsolve.data.preprocess import QGrid
from diffpy_mlsolve.errors import MLSolveError
from diffpy_mlsolve.model.network import ModelConfig

__all__ = ["TrainConfig", "train", "EpochSampler", "ssim3d"]

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class TrainConfig:
    """Everything a training run needs; saved with every checkpoint."""

    train: str = str(_SHARED / "structures" / "train.csv.gz")
    val: str = str(_SHARED / "structures" / "val.csv.gz")
    systems: list | None = None
    max_atoms: int | None = 64
    limit: int | None = None
    val_limit: int = 64
    spec: ExampleSpec = field(default_factory=ExampleSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 32
    steps: int = 6000
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup: int = 200
    weight_decay: float = 0.0
    kl_weight: float = 1e-3
    scale_weight: float = 0.1
    val_every: int = 500
    variants: int | None = None
    cache_dir: str | None = None
    source_cache_dir: str | None = None
    workers: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    out: str = "runs/small"
    #: A checkpoint folder whose weights start the run (fine-tuning); its
    #: model settings must equal ``model``.  Ignored on ``--resume``.
    init: str | None = None

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MLSolveError(
                f"Unknown training settings {unknown}. Known: "
                f"{sorted(known)}."
            )
        spec = dict(data.pop("spec", {}) or {})
        if "qgrid" in spec:
            spec["qgrid"] = QGrid(**spec["qgrid"])
        if "mode_weights" in spec:
            spec["mode_weights"] = tuple(
                tuple(p) for p in spec["mode_weights"]
            )
        model = ModelConfig(**(data.pop("model", {}) or {}))
        return cls(spec=ExampleSpec(**spec), model=model, **data)

    @classmethod
    def from_file(cls, path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise MLSolveError(f"No such config file: {str(path)!r}.")
        text = path.read_text()
        if path.suffix in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        return cls.from_dict(data)


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, sharded by rank, with a start
    offset (in samples of this rank) for resuming mid-epoch."""

    def __init__(self, n, seed, epoch, rank=0, world=1, start=0):
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world, self.start = rank, world, start

    def indices(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=gen).tolist()
        per_rank = self.n // self.world
        return perm[self.rank : per_rank * self.world : self.world]

    def __iter__(self):
        return iter(self.indices()[self.start :])

    def __len__(self):
        return len(self.indices()) - self.start


def ssim3d(gt: np.ndarray, pred: np.ndarray) -> float:
    """3D SSIM as the reference protocol: skimage defaults, data range of
    the ground truth."""
    from skimage.metrics import structural_similarity

    rng = float(gt.max() - gt.min())
    return float(structural_similarity(gt, pred, data_range=rng))


def _lr_lambda(cfg: TrainConfig):
    def f(step):
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        floor = cfg.lr_min / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1)))

    return f


def _to(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def loss_terms(model, batch, cfg: TrainConfig, generator=None) -> dict:
    """L1 on the transformed density, L1 on log ρ_max, and the KL."""
    from diffpy_mlsolve.model.network import kl_divergence

    net = model.module if hasattr(model, "module") else model
    u, log_max, mu, sigma = model(batch, generator=generator)
    target = net.target(batch["density"], batch["rho_max"])
    terms = {
        "density": torch.nn.functional.l1_loss(u, target),
        "scale": torch.nn.functional.l1_loss(
            log_max, torch.log(batch["rho_max"])
        ),
        "kl": kl_divergence(mu, sigma),
    }
    terms["loss"] = (
        terms["density"]
        + cfg.scale_weight * terms["scale"]
        + cfg.kl_weight * terms["kl"]
    )
    return terms


def _distributed():
    """(rank, world) from torchrun's environment, initialising the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), world


def _sources(cfg: TrainConfig):
    from diffpy_mlsolve.data.sources import open_source

    filt = dict(systems=cfg.systems, max_atoms=cfg.max_atoms)
    if cfg.source_cache_dir:
        filt["cache_dir"] = cfg.source_cache_dir
    train = open_source(cfg.train, limit=cfg.limit, **filt)
    val = open_source(cfg.val, limit=cfg.val_limit, **filt)
    return train, val


def validation_set(source, spec: ExampleSpec, seed: int) -> list[dict]:
    """Fixed validation examples: full composition, whole target grid."""
    from diffpy_mlsolve.data.examples import ExampleBuilder

    builder = ExampleBuilder(
        dataclasses.replace(spec, points=0),
        full_grid=True,
        composition_mode="full",
    )
    return [builder(source[i], [seed, 2, i]) for i in range(len(source))]


@torch.no_grad()
def validate(model, examples: list[dict], device, batch_size=16) -> dict:
    """Mean single-sample (mean-latent) SSIM and L1 of u on the grids."""
    net = model.module if hasattr(model, "module") else model
    net.eval()
    scores = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = _to(collate(chunk), device)
        grid = chunk[0]["grid"].shape[0]
        pred = net.predict_grid(batch, grid, samples=1)[:, 0].cpu().numpy()
        for e, p in zip(chunk, pred):
            scores.append(ssim3d(e["grid"], p.astype(np.float64)))
    net.train()
    return {"ssim": float(np.mean(scores)), "n": len(scores)}


def _init_weights(model, cfg: TrainConfig) -> None:
    """Start ``model`` from the weights of the checkpoint ``cfg.init``."""
    from diffpy_mlsolve.model.checkpoint import load_checkpoint

    config, state, _ = load_checkpoint(Path(cfg.init).expanduser())
    theirs = TrainConfig.from_dict(config)
    if theirs.model != cfg.model:
        raise MLSolveError(
            f"init={cfg.init!r} holds a model "
            f"{dataclasses.asdict(theirs.model)}, but this config asks for "
            f"{dataclasses.asdict(cfg.model)}. Please copy the "
            "checkpoint's model settings into the config."
        )
    if theirs.spec.qgrid != cfg.spec.qgrid:
        raise MLSolveError(
            f"init={cfg.init!r} was trained on the Q grid "
            f"{theirs.spec.qgrid}, this config's is {cfg.spec.qgrid}. "
            "Please copy the checkpoint's spec qgrid into the config."
        )
    model.load_state_dict(state)


def train(cfg: TrainConfig, resume: bool = False, progress=True) -> Path:
    """Run (or resume) training; returns the output folder.

    Writes ``OUT/last`` (with the training state) at every validation and
    ``OUT/best`` when the validation SSIM improves.
    """
    from tqdm import tqdm

    from diffpy_mlsolve.data.dataset import DensityDataset, worker_init
    from diffpy_mlsolve.data.examples import ExampleBuilder
    from diffpy_mlsolve.device import resolve_device
    from diffpy_mlsolve.model.checkpoint import save_checkpoint
    from diffpy_mlsolve.model.network import CrystalNet

    rank, world = _distributed()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cpu":  # leave the data workers their cores
        cores = (os.cpu_count() or 1) // world
        torch.set_num_threads(max(1, cores - cfg.workers))
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    model = CrystalNet(cfg.model).to(device)
    opt = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    step, best, history = 0, -1.0, []
    if resume:
        state_path = out / "last" / "training_state.pt"
        if not state_path.is_file():
            raise MLSolveError(
                f"Nothing to resume in {str(out)!r}: no last/ checkpoint. "
                "Please start without --resume."
            )
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, best, history = state["step"], state["best"], state["history"]
    elif cfg.init:
        _init_weights(model, cfg)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    train_src, val_src = _sources(cfg)
    cache = None
    if cfg.cache_dir:
        from diffpy_mlsolve.data.cache import ExampleCache

        cache = ExampleCache(cfg.cache_dir, cfg.spec, train_src.ids)
    data = DensityDataset(
        train_src,
        ExampleBuilder(cfg.spec),
        seed=cfg.seed,
        variants=cfg.variants,
        cache=cache,
    )
    if cache is not None and cfg.variants and rank == 0:
        made = cache.fill(
            data, range(cfg.variants), max(1, cfg.workers), progress
        )
        print(f"cache: {made} shards simulated in {cfg.cache_dir}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    val_examples = (
        validation_set(val_src, cfg.spec, cfg.seed) if rank == 0 else []
    )
    per_epoch = (len(data) // world) // cfg.batch_size
    if per_epoch == 0:
        raise MLSolveError(
            f"{len(data)} training structures give no full batch of "
            f"{cfg.batch_size} per process. Please lower batch_size."
        )
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not progress or rank != 0,
        desc="train",
        unit="step",
    )
    t0, seen = time.perf_counter(), 0
    while step < cfg.steps:
        epoch, offset = divmod(step, per_epoch)
        data.set_epoch(epoch)
        sampler = EpochSampler(
            len(data), cfg.seed, epoch, rank, world, offset * cfg.batch_size
        )
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.workers,
            collate_fn=collate,
            drop_last=True,
            worker_init_fn=worker_init if cfg.workers else None,
        )
        for batch in loader:
            batch = _to(batch, device)
            gen = torch.Generator(device=device)
            gen.manual_seed(cfg.seed * 1_000_003 + step * world + rank)
            with torch.autocast(device.type, torch.bfloat16, enabled=cfg.amp):
                terms = loss_terms(model, batch, cfg, generator=gen)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            sched.step()
            step += 1
            seen += cfg.batch_size * world
            rate = seen / (time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(
                loss=f"{terms['loss'].item():.4f}",
                l1=f"{terms['density'].item():.4f}",
                ex_s=f"{rate:.0f}",
            )
            if step % cfg.val_every == 0 or step == cfg.steps:
                best = _checkpoint(
                    model,
                    opt,
                    sched,
                    cfg,
                    out,
                    step,
                    best,
                    history,
                    terms,
                    val_examples,
                    device,
                    rank,
                    world,
                    save_checkpoint,
                )
            if step >= cfg.steps:
                break
    bar.close()
    return out


def _checkpoint(
    model,
    opt,
    sched,
    cfg,
    out,
    step,
    best,
    history,
    terms,
    val_examples,
    device,
    rank,
    world,
    save,
):
    if rank == 0:
        score = validate(model, val_examples, device)
        entry = {
            "step": step,
            "val_ssim": score["ssim"],
            **{k: float(v.item()) for k, v in terms.items()},
        }
        history.append(entry)
        net = model.module if hasattr(model, "module") else model
        meta = {"step": step, "val": score, "history": history}
        state = {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "best": max(best, score["ssim"]),
            "history": history,
        }
        save(out / "last", net, cfg.to_dict(), meta, training_state=state)
        if score["ssim"] > best:
            best = score["ssim"]
            save(out / "best", net, cfg.to_dict(), meta)
        print(
            f"step {step}: val SSIM {score['ssim']:.4f} "
            f"(best {best:.4f}), loss {entry['loss']:.4f}",
            flush=True,
        )
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return best
