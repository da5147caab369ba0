"""Smooth backgrounds under powder peaks (numpy).

``chebyshev_background_fit``: iterative Chebyshev least squares that drops
points above the fit (peaks); ``snip_background``: the SNIP algorithm
(Ryan et al., Nucl. Instrum. Meth. B 34, 396 (1988); decreasing windows
after Morháč et al., Nucl. Instrum. Meth. A 401, 113 (1997)).
"""

from __future__ import annotations

import numpy as np

__all__ = ["chebyshev_background_fit", "snip_background"]

# points the Chebyshev fit uses at most (evenly spread over the pattern)
_FIT_POINTS = 1000


def chebyshev_background_fit(x, y, degree=6, clip=2.0, max_iter=100):
    """Background by clipped Chebyshev least squares (see
    :meth:`Pattern.estimate_background` for the steps)."""
    full_x = x
    if len(x) > _FIT_POINTS:  # a smooth curve needs no more points
        take = np.linspace(0, len(x) - 1, _FIT_POINTS).round().astype(int)
        x, y = x[take], y[take]
    n = len(x)
    deg = int(min(degree, n - 1))
    cheb = np.polynomial.Chebyshev
    keep = np.ones(n, dtype=bool)
    for _ in range(max(int(max_iter), 1)):
        fit = cheb.fit(x[keep], y[keep], deg, domain=[full_x[0], full_x[-1]])
        res = y - fit(x)
        kept = res[keep]
        noise = 1.4826 * np.median(np.abs(kept - np.median(kept)))
        new = res <= clip * noise
        if np.array_equal(new, keep) or new.sum() <= deg:
            break
        keep = new
    return fit(full_x)


def snip_background(x, y, width=None, smooth=5):
    """Background by SNIP clipping with decreasing windows (see
    :meth:`Pattern.estimate_background` for the steps)."""
    n = len(x)
    span = 0.02 * (x[-1] - x[0]) if width is None else float(width)
    m = int(min(round(span / np.median(np.diff(x))), (n - 1) // 2))
    k = int(min(smooth, (n - 1) // 2))
    v = np.convolve(np.pad(y, k, mode="edge"), np.ones(2 * k + 1), "valid") / (
        2 * k + 1
    )
    for p in range(max(m, 1), 0, -1):
        mean = 0.5 * (v[: -2 * p] + v[2 * p :])
        v[p:-p] = np.minimum(v[p:-p], mean)
    return v
