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

No trained model is shipped yet, so :meth:`CrystalNetSolver.solve` checks
its inputs and then says so instead of returning made-up candidates.
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

    def solve(
        self, pattern, composition, lattice, n_candidates: int = 5, **kw
    ) -> SolveResult:
        """Propose ``n_candidates`` structures for ``pattern``.

        Parameters
        ----------
        pattern : Pattern
            The measured powder pattern.
        composition : str or Mapping
            The cell contents, e.g. ``"NaCl"``.
        lattice : sequence of 6 floats
            a, b, c in Å and alpha, beta, gamma in degrees.
        n_candidates : int
            How many candidates to return.

        Raises
        ------
        ModelNotAvailableError
            Always, for now: no trained CrystalNet model is shipped yet.
        """
        self.check_inputs(pattern, composition, lattice, n_candidates)
        if self.weights is not None:
            raise ModelNotAvailableError(
                f"Cannot load the checkpoint {str(self.weights)!r} yet: "
                "CrystalNet checkpoints arrive with issue D (training and "
                "weights); see the README."
            )
        raise ModelNotAvailableError(
            "No trained CrystalNet model is shipped yet, so the crystalnet "
            "solver cannot predict. Training and shipped weights arrive "
            "with issue D; see the README. The simulators (simulate_pxrd, "
            "electron_density) work without a model."
        )
