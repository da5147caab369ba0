"""Choosing the torch device once, in one place."""

from __future__ import annotations

from diffpy_mlsolve.errors import MLSolveError

__all__ = ["resolve_device"]


def resolve_device(device=None):
    """A ``torch.device`` from None/"auto" (CUDA when present, else CPU),
    "cpu", "cuda", "cuda:1" or a torch.device.  An explicit choice is
    respected; asking for CUDA where there is none is an error."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MLSolveError(
            f"device={str(device)!r} was asked for, but torch sees no CUDA "
            "GPU here. Please use device='cpu' or device='auto'."
        )
    return dev
