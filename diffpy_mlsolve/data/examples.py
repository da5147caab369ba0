"""One training example from one structure and one seed.

An example holds what the solver is given (the pattern on the model's Q
grid with its coverage mask, the composition in one of four modes, the
cell) and what it must predict (the electron density of the conventional
cell at sampled fractional points, or on the whole grid).  Every random
choice comes from ``numpy.random.default_rng(seed)``, so an example is a
pure function of (structure, seeds): the same on any machine and with any
number of data-loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffpy_mlsolve.data.composition import MODES, composition_vector
from diffpy_mlsolve.data.conditions import sample_conditions
from diffpy_mlsolve.data.preprocess import (
    QGrid,
    pattern_to_input,
)
from diffpy_mlsolve.simulate import electron_density, simulate_pxrd

__all__ = ["ExampleSpec", "ExampleBuilder", "lattice_features", "collate"]


@dataclass(frozen=True)
class ExampleSpec:
    """What examples look like; saved with a model, as it fixes the inputs.

    Attributes
    ----------
    qgrid : QGrid
        The model's Q grid.
    density_grid : int
        Points per edge of the target density grid.
    points : int
        Fractional points sampled per example for training (0: none).
    peak_fraction : float
        Share of the points drawn with probability ∝ sqrt(ρ) (near atoms);
        the rest are uniform over the grid nodes.
    condition_mode : {"realistic", "noiseless", "nanopdf"}
        "nanopdf": the input is a nanocrystal's G(r)
        (:func:`~diffpy_mlsolve.data.conditions.sample_pdf_conditions`)
        turned into the network's input as the solver turns one: its
        Bragg intensities fitted (:func:`~diffpy_mlsolve.pdf_intensities.
        pdf_intensities`, with the drawn Qdamp given as a calibration
        gives it and the diameter fitted as at solve time)
        and rendered as a sharp powder pattern
        (:func:`~diffpy_mlsolve.pdf_intensities.equivalent_powder`).
    mode_weights : dict
        Probability of each composition mode.
    """

    qgrid: QGrid = field(default_factory=QGrid)
    density_grid: int = 32
    points: int = 512
    peak_fraction: float = 0.0
    condition_mode: str = "realistic"
    mode_weights: tuple[tuple[str, float], ...] = (
        ("full", 0.55),
        ("elements", 0.2),
        ("drop1", 0.15),
        ("none", 0.1),
    )

    def mode_probabilities(self) -> np.ndarray:
        weights = dict(self.mode_weights)
        p = np.array([weights.get(m, 0.0) for m in MODES], float)
        return p / p.sum()


def lattice_features(lattice) -> np.ndarray:
    """Cell as the network sees it: a, b, c / 10 Å and cos of the angles."""
    lat = np.asarray(lattice, float)
    return np.concatenate(
        [lat[:3] / 10.0, np.cos(np.radians(lat[3:6]))]
    ).astype(np.float32)


class ExampleBuilder:
    """Turns (StructureRecord, seeds) into a dict of numpy arrays.

    Two steps, so the expensive one can be cached on disk:
    :meth:`simulate` (the pattern under random conditions and the density
    grid, from ``sim_seed``) and :meth:`assemble` (composition mode and
    sampled points, from ``seed``; cheap, so drawn afresh every epoch).

    Parameters
    ----------
    spec : ExampleSpec
    full_grid : bool
        Also return the whole target grid (evaluation).
    composition_mode : str, optional
        Fix the composition mode instead of drawing it.
    """

    def __init__(
        self,
        spec: ExampleSpec = ExampleSpec(),
        *,
        full_grid=False,
        composition_mode: str | None = None,
    ):
        self.spec = spec
        self.full_grid = full_grid
        if composition_mode is not None and composition_mode not in MODES:
            raise ValueError(f"composition_mode must be one of {MODES}")
        self.composition_mode = composition_mode

    def simulate(self, record, sim_seed) -> dict:
        """Pattern input, mask and density grid of one measurement."""
        spec = self.spec
        crystal = record.crystal
        rng = np.random.default_rng(sim_seed)
        if spec.condition_mode == "nanopdf":
            pattern = _nano_pdf_input(crystal, rng)
        else:
            cond = sample_conditions(rng, spec.condition_mode)
            pattern = simulate_pxrd(
                crystal, device="cpu", **cond.simulate_kwargs()
            )
        values, mask = pattern_to_input(pattern, spec.qgrid)
        rho = electron_density(
            crystal, grid=spec.density_grid, standardize=False, device="cpu"
        )
        return {
            "pattern": values,
            "mask": mask,
            "grid": rho.values.astype(np.float32),
        }

    def assemble(self, record, sim: dict, seed) -> dict:
        """The example: simulation plus composition and sampled points."""
        spec = self.spec
        rng = np.random.default_rng(seed)
        crystal = record.crystal
        if self.composition_mode is None:
            mode = int(rng.choice(len(MODES), p=spec.mode_probabilities()))
        else:
            mode = MODES.index(self.composition_mode)
        grid = np.asarray(sim["grid"], np.float32)
        out = {
            "pattern": np.asarray(sim["pattern"], np.float32),
            "mask": np.asarray(sim["mask"], bool),
            "composition": composition_vector(
                crystal.numbers, crystal.occupancy, MODES[mode], rng
            ),
            "comp_mode": np.int64(mode),
            "lattice": lattice_features(crystal.lattice),
            "cell": crystal.lattice.astype(np.float32),
            "rho_max": np.float32(grid.max()),
            "electrons": np.float32(crystal.electrons),
            "spacegroup": np.int64(record.spacegroup or 0),
        }
        if spec.points:
            idx = _sample_nodes(grid, spec.points, spec.peak_fraction, rng)
            out["points"] = (idx / grid.shape[0]).astype(np.float32)
            out["density"] = grid[idx[:, 0], idx[:, 1], idx[:, 2]]
        if self.full_grid:
            out["grid"] = grid
        return out

    def __call__(self, record, sim_seed, seed=None) -> dict:
        seed = sim_seed if seed is None else seed
        return self.assemble(record, self.simulate(record, sim_seed), seed)


def _nano_pdf_input(crystal, rng):
    """The powder pattern the solver makes of a nanocrystal's G(r)
    under conditions drawn from ``rng``."""
    from diffpy_mlsolve.data.conditions import sample_pdf_conditions
    from diffpy_mlsolve.pdf_intensities import (
        equivalent_powder,
        pdf_intensities,
    )
    from diffpy_mlsolve.simulate import simulate_pdf

    lattice = np.asarray(crystal.lattice, float)
    cond = sample_pdf_conditions(rng, min_diameter=float(lattice[:3].max()))
    gr = cond.noisy(
        simulate_pdf(crystal, device="cpu", **cond.simulate_kwargs())
    )
    # Qdamp as a calibration gives it (the solver fits it where a .gr
    # header lacks it); the diameter is fitted as the solver fits it
    return equivalent_powder(
        pdf_intensities(gr, tuple(lattice), qdamp=cond.qdamp)
    )


def _sample_nodes(grid, points, peak_fraction, rng) -> np.ndarray:
    """Grid-node indices (points, 3): uniform, plus a share ∝ sqrt(ρ)."""
    n = grid.shape[0]
    k = int(round(points * peak_fraction))
    idx = rng.integers(0, n, size=(points - k, 3))
    if k:
        w = np.sqrt(np.clip(grid.ravel().astype(np.float64), 0, None))
        flat = rng.choice(w.size, size=k, p=w / w.sum())
        idx = np.concatenate(
            [idx, np.stack(np.unravel_index(flat, grid.shape), 1)]
        )
    return idx


def collate(examples: list[dict]) -> dict:
    """Stack example dicts into a batch of torch tensors."""
    return {
        k: torch.as_tensor(np.stack([e[k] for e in examples]))
        for k in examples[0]
    }
