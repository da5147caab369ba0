"""From a measured pattern, composition and cell to candidate densities.

The model-facing half of the crystalnet solver: the inputs are prepared
exactly as in training (:mod:`diffpy_mlsolve.data.preprocess`), then the
network decodes one density per latent sample: candidate 1 from the mean
latent, the others from z = μ + ε σ.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from diffpy_mlsolve.data.composition import (
    MODES,
    VECTOR_SIZE,
    parse_composition,
)
from diffpy_mlsolve.data.examples import lattice_features
from diffpy_mlsolve.data.preprocess import pattern_to_input
from diffpy_mlsolve.errors import ModelNotAvailableError, StructureError

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PDF_MODEL",
    "DensityPredictor",
    "composition_input",
    "default_model",
]

#: The model shipped inside the package (a checkpoint folder).
DEFAULT_MODEL = Path(__file__).parent / "weights" / "crystalnet-default"

#: The shipped model fine-tuned on nanocrystal G(r) (configs/nanopdf.yaml).
DEFAULT_PDF_MODEL = Path(__file__).parent / "weights" / "crystalnet-nanopdf"


def default_model(xtype: str = "tth") -> Path:
    """The shipped checkpoint for a pattern of ``xtype``: the G(r) model
    for "r" where it is installed, else :data:`DEFAULT_MODEL`."""
    if xtype == "r" and (DEFAULT_PDF_MODEL / "weights.pt").is_file():
        return DEFAULT_PDF_MODEL
    return DEFAULT_MODEL


def composition_input(composition, mode: str = "full") -> np.ndarray:
    """The composition vector of a formula, a {element: amount} mapping,
    or None (mode "none").  ``mode="elements"`` keeps only which elements
    are present."""
    vec = np.zeros(VECTOR_SIZE, np.float32)
    if composition is None or mode == "none":
        return vec
    if isinstance(composition, Mapping):
        text = "".join(f"{el}{amt}" for el, amt in composition.items())
    else:
        text = str(composition)
    amounts = parse_composition(text)
    if mode == "full":
        total = sum(amounts.values())
        for z, amt in amounts.items():
            vec[z] = amt / total
    elif mode == "elements":
        for z in amounts:
            vec[z] = 1.0 / len(amounts)
    else:
        raise StructureError(
            f"composition mode must be 'full', 'elements' or 'none', got "
            f"{mode!r}."
        )
    return vec


class DensityPredictor:
    """A trained network with the input conventions it was trained with.

    Parameters
    ----------
    weights : path, optional
        A checkpoint folder; None takes the shipped one for ``xtype``
        (:func:`default_model`).
    device : torch.device
    xtype : str
        The kind of pattern it will read ("r": a G(r)); used only when
        ``weights`` is None.
    """

    def __init__(self, weights=None, device="cpu", xtype="tth"):
        from diffpy_mlsolve.model.checkpoint import load_model

        path = Path(weights) if weights is not None else default_model(xtype)
        if weights is None and not (path / "weights.pt").is_file():
            raise ModelNotAvailableError(
                "No trained CrystalNet model is shipped in this install "
                f"({path} is missing). Please train one with 'mlsolve "
                "train' and pass weights=FOLDER."
            )
        self.path = path
        self.device = torch.device(device)
        self.model, self.spec, self.meta = load_model(path, self.device)

    def batch(self, pattern, composition, lattice, mode="full") -> dict:
        """The network's input batch (size 1) for one measurement."""
        values, mask = pattern_to_input(pattern, self.spec.qgrid)
        comp = composition_input(composition, mode)
        if composition is None:
            mode = "none"
        arrays = {
            "pattern": values[None],
            "mask": mask[None],
            "composition": comp[None],
            "comp_mode": np.array([MODES.index(mode)]),
            "lattice": lattice_features(lattice)[None],
        }
        return {
            k: torch.as_tensor(v, device=self.device)
            for k, v in arrays.items()
        }

    def predict(
        self,
        batch: dict,
        lattice,
        n: int,
        grid=None,
        seed=0,
        *,
        pattern=None,
        latent_steps: int = 0,
    ):
        """``n`` candidate densities (Density) of one input batch.

        With ``latent_steps`` > 0 the latents are first refined against
        ``pattern`` (:func:`~diffpy_mlsolve.model.latent.refine_latents`);
        each density's metadata then holds the pattern R factor before
        and after.
        """
        from diffpy_mlsolve.density import Density
        from diffpy_mlsolve.physics.density import dstar_cutoff

        grid = int(grid or self.spec.density_grid)
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        z = self.model.sample_latents(batch, n, generator=gen)[:, 0]
        fit = None
        if latent_steps:
            from diffpy_mlsolve.model.latent import refine_latents

            fit = refine_latents(
                self.model, batch, pattern, lattice, z, steps=latent_steps
            )
            z = fit.z
        lat = batch["lattice"].expand(len(z), -1)
        rho = self.model.decode_grid(z, lat, grid)
        rho = rho.cpu().numpy().astype(np.float64)
        d_min = float(1 / dstar_cutoff(lattice, grid)[0])
        extra = [{} for _ in rho]
        if fit is not None:
            extra = [
                {
                    "latent_rfactor_before": float(b),
                    "latent_rfactor_after": float(a),
                    "latent_steps": fit.steps,
                }
                for b, a in zip(fit.r_before, fit.r_after)
            ]
        return [
            Density(
                r,
                np.asarray(lattice, float),
                resolution=d_min,
                label=f"candidate {i + 1}",
                metadata={
                    "latent": "mean" if i == 0 else f"sample {i}",
                    "model": str(self.path),
                    "target_grid": int(self.spec.density_grid),
                    **extra[i],
                },
            )
            for i, r in enumerate(rho)
        ]
