"""Neutral-atom X-ray form factors f0(s) from the Waasmaier-Kirfel table.

Source: D. Waasmaier and A. Kirfel, Acta Cryst. A51, 416-431 (1995), as
shipped by xraydb (maintained, in its SQLite database).  We prefer it to
the Cromer-Mann 4-Gaussian fit because its five Gaussians plus constant
are accurate to sin(θ)/λ = 6 Å^-1 (Cromer-Mann: 2 Å^-1), which covers
Mo, Ag and synchrotron data and the 50^3 density grids of small cells.

f0(s) = Σ_{i=1..5} a_i exp(-b_i s^2) + c,   s = sin(θ)/λ = Q / 4π  (Å^-1)

Anomalous dispersion (f', f'') is not included: patterns and densities
obey Friedel's law.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from diffpy_mlsolve.errors import PhysicsInputError

__all__ = ["wk_table", "form_factor_coefficients", "form_factors"]

MAX_Z = 98


@lru_cache(maxsize=1)
def wk_table() -> np.ndarray:
    """Coefficients (MAX_Z + 1, 11): a1..a5, b1..b5, c; NaN where absent."""
    import xraydb

    db = xraydb.get_xraydb()
    table = db.tables["Waasmaier"]
    rows = db.query(table).all()
    out = np.full((MAX_Z + 1, 11), np.nan)
    for row in rows:
        r = row._mapping
        if r["ion"] != r["element"]:
            continue  # ions are not used: neutral atoms only
        z = int(r["atomic_number"])
        if z > MAX_Z:
            continue
        a = _floats(r["scale"])
        b = _floats(r["exponents"])
        out[z, :5] = a
        out[z, 5:10] = b
        out[z, 10] = float(r["offset"])
    return out


def _floats(text) -> list[float]:
    return [float(v) for v in str(text).strip("[] ").split(",")]


def form_factor_coefficients(numbers, dtype=torch.float32, device=None):
    """Tensor (..., 11) of coefficients for atomic numbers ``numbers``.

    Raises
    ------
    PhysicsInputError
        If an element has no tabulated form factor (Z > 98).
    """
    z = np.asarray(numbers.cpu() if torch.is_tensor(numbers) else numbers)
    table = wk_table()
    bad = sorted({int(v) for v in z.ravel() if v < 1 or v > MAX_Z})
    if not bad:
        bad = sorted({int(v) for v in z.ravel() if np.isnan(table[int(v), 0])})
    if bad:
        raise PhysicsInputError(
            f"No X-ray form factor for atomic number(s) {bad}: the "
            f"Waasmaier-Kirfel table covers Z = 1-{MAX_Z}. Please remove "
            "or replace those elements."
        )
    return torch.as_tensor(table[z.astype(int)], dtype=dtype, device=device)


def form_factors(coeffs: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """f0 for every (reflection, atom) pair.

    Parameters
    ----------
    coeffs : Tensor (B, n, 11)
        From :func:`form_factor_coefficients`.
    s2 : Tensor (B, H)
        (sin θ / λ)^2 = (|d*| / 2)^2 in Å^-2.

    Returns
    -------
    Tensor (B, H, n)
    """
    a = coeffs[..., None, :, 0:5]  # (B, 1, n, 5)
    b = coeffs[..., None, :, 5:10]
    c = coeffs[..., None, :, 10]
    g = torch.exp(-b * s2[..., :, None, None])  # (B, H, n, 5)
    return (a * g).sum(-1) + c
