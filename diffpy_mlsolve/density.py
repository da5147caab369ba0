"""The :class:`Density` result type: a unit-cell electron density."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Density"]


@dataclass(frozen=True)
class Density:
    """Electron density on an N×N×N fractional grid of one cell.

    Attributes
    ----------
    values : ndarray (N, N, N)
        ρ in e/Å^3 at fractional points (i, j, k) / N, axes along a, b, c.
    lattice : ndarray (6,)
        a, b, c (Å), alpha, beta, gamma (degrees) of the cell (the
        conventional standard cell unless made otherwise).
    resolution : float or None
        d_min (Å) of the band limit: no Fourier component finer than this
        is present.
    smoothing : float
        Extra isotropic B (Å^2) added to every atom to damp truncation
        ripples (0 for none).
    label : str
        What the density is of.
    metadata : dict
        Anything else (space group, settings).
    """

    values: np.ndarray
    lattice: np.ndarray
    resolution: float | None = None
    smoothing: float = 0.0
    label: str = ""
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        vals = np.array(self.values, dtype=float)
        vals.setflags(write=False)
        lat = np.array(self.lattice, dtype=float)
        lat.setflags(write=False)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "lattice", lat)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)

    @property
    def volume(self) -> float:
        """Cell volume (Å^3)."""
        from diffpy_mlsolve.structures import cell_volume

        return float(cell_volume(self.lattice))

    @property
    def electrons(self) -> float:
        """∫ρ dV over the cell (electrons)."""
        return float(self.values.mean() * self.volume)

    def write_xsf(self, path) -> None:
        """Write an XSF file (VESTA, XCrySDen): the cell and a periodic
        3D datagrid in e/Å^3 (the first plane repeated at the far faces,
        as XSF's general grid wants)."""
        import torch

        from diffpy_mlsolve.physics.lattice import lattice_matrix

        vecs = lattice_matrix(torch.tensor(self.lattice)).numpy()
        vals = np.pad(self.values, ((0, 1), (0, 1), (0, 1)), mode="wrap")
        n = vals.shape
        lines = ["CRYSTAL", "PRIMVEC"]
        lines += [" ".join(f"{v:.8f}" for v in row) for row in vecs]
        lines += [
            "BEGIN_BLOCK_DATAGRID_3D",
            f" {self.label or 'density'}",
            " BEGIN_DATAGRID_3D_electron_density",
            f"  {n[0]} {n[1]} {n[2]}",
            "  0.0 0.0 0.0",
        ]
        lines += ["  " + " ".join(f"{v:.8f}" for v in row) for row in vecs]
        # XSF runs the first index fastest
        flat = vals.transpose(2, 1, 0).ravel()
        for i in range(0, flat.size, 6):
            lines.append(" ".join(f"{v:.6e}" for v in flat[i : i + 6]))
        lines += [" END_DATAGRID_3D", "END_BLOCK_DATAGRID_3D", ""]
        _atomic_write(path, "\n".join(lines))

    def write_ccp4(self, path) -> None:
        """Write a CCP4/MRC map (gemmi), axes a, b, c, in e/Å^3."""
        import gemmi

        grid = gemmi.FloatGrid(
            np.ascontiguousarray(self.values, dtype=np.float32)
        )
        grid.set_unit_cell(gemmi.UnitCell(*map(float, self.lattice)))
        ccp4 = gemmi.Ccp4Map()
        ccp4.grid = grid
        ccp4.update_ccp4_header()
        tmp = f"{path}.tmp"
        ccp4.write_ccp4_map(tmp)
        import os

        os.replace(tmp, path)

    def __repr__(self) -> str:
        n = "x".join(map(str, self.grid))
        res = f", d_min={self.resolution:.3f} Å" if self.resolution else ""
        return (
            f"Density({self.label or 'cell'}, grid {n}, "
            f"{self.electrons:.1f} e{res})"
        )


def _atomic_write(path, text: str) -> None:
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
