"""A checkpoint is a folder: ``config.json`` (the resolved training
config, with the model and example specs), ``weights.pt`` (the model's
state dict), ``meta.json`` (step, scores, versions) and, for resuming
only, ``training_state.pt``.  Folders are written next to their target
and renamed into place, so a kill never leaves a half checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from diffpy_mlsolve.errors import ModelNotAvailableError

__all__ = ["save_checkpoint", "load_checkpoint", "load_model"]


def save_checkpoint(
    path, model, config: dict, meta: dict, training_state=None
) -> Path:
    """Write a checkpoint folder atomically (replacing an old one)."""
    from diffpy_mlsolve.version import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, tmp / "weights.pt")
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    meta = dict(meta)
    meta.update(
        {
            "diffpy_mlsolve": __version__,
            "torch": torch.__version__,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    )
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if training_state is not None:
        torch.save(training_state, tmp / "training_state.pt")
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)
    return path


def load_checkpoint(path) -> tuple[dict, dict, dict]:
    """(config, state_dict, meta) of a checkpoint folder."""
    path = Path(path)
    need = [path / n for n in ("config.json", "weights.pt", "meta.json")]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise ModelNotAvailableError(
            f"{str(path)!r} is not a diffpy-mlsolve checkpoint (missing "
            f"{', '.join(missing)}). Please give a folder written by "
            "'mlsolve train'."
        )
    config = json.loads((path / "config.json").read_text())
    meta = json.loads((path / "meta.json").read_text())
    state = torch.load(path / "weights.pt", map_location="cpu")
    return config, state, meta


def load_model(path, device="cpu"):
    """(CrystalNet in eval mode, ExampleSpec, meta) from a checkpoint."""
    from diffpy_mlsolve.training import TrainConfig

    config, state, meta = load_checkpoint(path)
    cfg = TrainConfig.from_dict(config)
    from diffpy_mlsolve.model.network import CrystalNet

    model = CrystalNet(cfg.model)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, cfg.spec, meta
