"""The CrystalNet solver: pattern -> electron density -> candidate atoms.

The method of Guo et al., npj Comput. Mater. 10 (2024), "CrystalNet":

1. encode the pattern, composition and lattice into a latent mean and
   standard deviation;
2. draw one latent sample per candidate;
3. decode each sample into a periodic electron density (e/Å^3) on a
   fractional grid of the conventional cell;
4. pick atom sites from the density, assign elements from the composition
   and symmetrise with spglib;
5. rank the candidates by how well their simulated pattern matches the
   data.

Steps 1-3 run here (:mod:`diffpy_mlsolve.model.predict`); without a
shipped or given model :meth:`CrystalNetSolver.solve` raises
:class:`ModelNotAvailableError` instead of returning made-up candidates.
Steps 4-5 arrive with the site-picking issue: until then candidates hold
densities, no atoms, and say so in ``failed``.
"""

from __future__ import annotations

from pathlib import Path

from diffpy_mlsolve.errors import ModelNotAvailableError
from diffpy_mlsolve.solver import DensitySolver, SolveResult

__all__ = ["CrystalNetSolver"]


class CrystalNetSolver(DensitySolver):
    """Structure solution with the CrystalNet density network.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N"} or None
        Where the network runs; "auto" takes a CUDA GPU when there is one.
    weights : str, Path or None
        A checkpoint folder (the resolved config and the weights); None
        takes the shipped model.

    Raises
    ------
    ModelNotAvailableError
        When ``weights`` is given but is not an existing folder.
    """

    requires = ("torch",)
    install_hint = "pip install torch (see https://pytorch.org)"

    def __init__(self, device: str | None = "auto", weights=None):
        super().__init__(device=device)
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_dir():
                what = "a file, not a folder" if path.is_file() else "missing"
                raise ModelNotAvailableError(
                    f"The checkpoint folder {str(path)!r} is {what}. Please "
                    "pass weights= the folder a training run wrote (its "
                    "config and weights), or leave weights=None for the "
                    "shipped model."
                )
            weights = path
        self.weights = weights
        self._predictor = None

    def solve(
        self,
        pattern,
        composition,
        lattice,
        n_candidates: int = 5,
        *,
        composition_mode: str = "full",
        grid: int | None = None,
        seed: int = 0,
        **kw,
    ) -> SolveResult:
        """Propose ``n_candidates`` electron densities for ``pattern``.

        Parameters
        ----------
        pattern : Pattern
            The measured powder pattern (2θ with its wavelength, Q or d).
        composition : str or Mapping
            The cell contents, e.g. ``"NaCl"``.
        lattice : sequence of 6 floats
            a, b, c in Å and alpha, beta, gamma in degrees of the
            conventional standard cell.
        n_candidates : int
            Candidate 1 is the mean latent, the others latent samples.
        composition_mode : {"full", "elements"}
            "elements" uses only which elements are present.
        grid : int, optional
            Density grid points per edge (default: the model's).
        seed : int
            Seed of the latent samples.

        Returns
        -------
        SolveResult
            Candidates carry their Density; atom sites (``structure``)
            arrive with the site-picking step and are None until then,
            with the reason in ``failed``.

        Raises
        ------
        ModelNotAvailableError
            If no trained model is shipped and none was given.
        """
        from diffpy_mlsolve.model.predict import DensityPredictor
        from diffpy_mlsolve.solver import Candidate

        cell = self.check_inputs(pattern, composition, lattice, n_candidates)
        predictor = self._predictor or DensityPredictor(
            self.weights, self.torch_device
        )
        self._predictor = predictor
        batch = predictor.batch(pattern, composition, cell, composition_mode)
        densities = predictor.predict(batch, cell, n_candidates, grid, seed)
        why = "site picking from densities is not implemented yet"
        candidates = tuple(
            Candidate(rank=i + 1, density=d, failed=why)
            for i, d in enumerate(densities)
        )
        return SolveResult(
            candidates=candidates,
            inputs={
                "pattern": getattr(pattern, "source", "") or "<arrays>",
                "composition": str(composition),
                "lattice": cell,
                "composition_mode": composition_mode,
            },
            settings={
                "solver": "crystalnet",
                "weights": str(predictor.path),
                "device": str(predictor.device),
                "n_candidates": n_candidates,
                "seed": seed,
                "model_meta": {
                    k: predictor.meta.get(k) for k in ("step", "val")
                },
            },
        )
