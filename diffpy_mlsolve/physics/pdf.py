"""X-ray pair distribution function G(r) of a periodic crystal, in torch.

Pure tensor-in/tensor-out kernels: differentiable with respect to the
lattice parameters and the fractional coordinates, on any device, in
float32 or float64, without I/O.  The user layer is
:func:`diffpy_mlsolve.simulate.simulate_pdf`.

The convention is that of diffpy.pdffit2 (``PdfFit.calc`` with scattering
type ``"X"``) and diffpy.srreal::

    G(r) = 1/(N r) Σ_i Σ_j (f_i f_j / <f>^2) T_ij(r) − 4π r ρ0

with the sum over every atom i of the cell and every atom j of the
crystal (j ≠ i), weights ``f_i = occ_i Z_i`` (pdffit2's X-ray scattering
factor is the atomic number, the form factor at Q = 0), ``N = Σ occ_i``,
``<f> = Σ occ_i Z_i / N`` and number density ``ρ0 = N / V``.  Each pair
gives a normalised Gaussian

    T_ij(r) = exp(−(r − r_ij)^2 / (2 σ_ij^2)) / (sqrt(2π) σ_ij)

with ``σ_ij^2 = (U_i + U_j) (1 − δ1/r_ij − δ2/r_ij^2 + Qbroad^2 r_ij^2)``
(isotropic ``U = B / 8π^2``; pdffit2 skips a pair whose bracket is not
positive).  G is multiplied by the Q-resolution envelope
``exp(−(Qdamp r)^2 / 2)``, then band-limited at Qmax (the termination
ripples of a finite Q range): the sine transform of G,
``F(Q) = ∫ G(r) sin(Qr) dr``, is cut at Qmax and transformed back,
``G_t(r) = (2/π) ∫_0^Qmax F(Q) sin(Qr) dQ``.  A spherical particle of
diameter D multiplies the result by its characteristic function
``γ0(r) = 1 − 3r/(2D) + r^3/(2D^3)`` for r < D and 0 beyond (srfit's
``SphericalCF``, pdffit2's ``spdiameter``).

Algorithm of :func:`pdf_of_crystal`
-----------------------------------
1. Enumerate the image translations that can hold a neighbour within the
   cutoff, sized by the perpendicular heights of the cell, and keep each
   unordered pair once (i < j over all images, i = j over half of them,
   weight 2), found in chunks without gradient and recomputed with
   gradient from the lattice matrix (:func:`lattice_matrix`).
2. Evaluate each Gaussian within ±5 σ on a fine uniform grid from r = 0
   to rmax plus six Qmax ripples (pdffit2's extension) and scatter-add
   it, in chunks; the backward pass (written out analytically) redoes
   the windows chunk by chunk, so memory stays bounded.
3. Form G, apply the Qdamp envelope, band-limit with an FFT of the odd
   extension of G (a discrete sine transform), interpolate linearly onto
   the requested r grid (exact where the grids coincide), then apply the
   particle envelope and the scale.

Differences from pdffit2, all below its own accuracy: pdffit2 low-passes
G zero-extended below r = 0 (this uses the odd extension, as the sine
transform implies) and applies ``spdiameter`` before the Qmax cutoff
(this applies it after, as srfit's ``SphericalCF`` does, so a particle's
G is exactly zero beyond D).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from diffpy_mlsolve.errors import PhysicsInputError
from diffpy_mlsolve.physics.lattice import cell_volume, lattice_matrix

__all__ = [
    "PairDistances",
    "pair_distances",
    "pdf_of_crystal",
    "sphere_envelope",
]

_U_FROM_B = 1.0 / (8.0 * math.pi**2)
#: Finest step (Å) of the internal grid the Gaussians are sampled on.
FINE_STEP = 0.01
#: Width of the r extension (in Qmax ripples, 2π/Qmax each) computed
#: beyond rmax before the Qmax cutoff, as in pdffit2.
N_RIPPLES = 6
#: Half width of each Gaussian window, in σ (pdffit2 uses 5).
PEAK_SIGMAS = 5.0
#: Pairs closer than this (Å) are left out, as in pdffit2 (sites that
#: share a position, e.g. a mixed-occupancy site, are not a pair).
MIN_PAIR_DISTANCE = 0.1
#: Elements per chunk in the pair search and the Gaussian sums.
CHUNK_ELEMENTS = 1 << 22
#: Pairs whose distances and widths agree to this (Å) share one Gaussian
#: when no gradient is needed.
MERGE_QUANTUM = 1e-9


class PairDistances(NamedTuple):
    """Atom pairs of a periodic crystal.

    Attributes
    ----------
    i, j : Tensor of int64, shape (m,)
        Site indices in the cell; j is taken in the periodic image shifted
        by ``shift``.
    r : Tensor, shape (m,)
        Pair distances in Å, differentiable with respect to the lattice
        and the coordinates.
    shift : Tensor of int64, shape (m, 3)
        The lattice translation of atom j, in cells.
    """

    i: torch.Tensor
    j: torch.Tensor
    r: torch.Tensor
    shift: torch.Tensor


def _check_cell(lattice: torch.Tensor) -> None:
    if lattice.shape != (6,):
        raise PhysicsInputError(
            "The lattice must be six numbers (a, b, c in Å, alpha, beta, "
            f"gamma in degrees), got shape {tuple(lattice.shape)}."
        )
    lat = lattice.detach().double().cpu()
    if not bool(torch.isfinite(lat).all()) or bool((lat[:3] <= 0).any()):
        raise PhysicsInputError(
            f"The lattice {lat.tolist()} must have finite, positive lengths "
            "a, b, c (Å). Please check the cell."
        )
    if float(cell_volume(lat)) < 1e-6:
        raise PhysicsInputError(
            f"The lattice {lat.tolist()} has no volume. Please check the "
            "cell angles (degrees)."
        )


def _translations(mat: torch.Tensor, rcut: float) -> torch.Tensor:
    """Integer cell shifts (t, 3) that can hold a neighbour within rcut.

    A pair ``x_j − x_i + n`` with fractional differences in (−1, 1) lies
    within ``rcut`` only if ``|n_k| <= rcut / h_k + 1`` for each
    perpendicular height ``h_k`` of the cell, and only if
    ``|n @ L| <= rcut + d`` with ``d`` the longest cell diagonal.
    """
    m64 = mat.detach().double().cpu()
    heights = 1.0 / torch.linalg.norm(torch.linalg.inv(m64), dim=0)
    reach = [int(math.ceil(rcut / float(h))) + 1 for h in heights]
    axes = [torch.arange(-k, k + 1, dtype=torch.float64) for k in reach]
    shifts = torch.cartesian_prod(*axes).reshape(-1, 3)
    signs = torch.tensor(
        [[1.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1]],
        dtype=torch.float64,
    )
    diagonal = float(torch.linalg.norm(signs @ m64, dim=1).max())
    keep = torch.linalg.norm(shifts @ m64, dim=1) <= rcut + diagonal
    return shifts[keep].round().long()


def _positive(shifts: torch.Tensor) -> torch.Tensor:
    """Whether each shift's first non-zero component is positive."""
    x, y, z = shifts.unbind(-1)
    return (x > 0) | ((x == 0) & ((y > 0) | ((y == 0) & (z > 0))))


def _half_pairs(
    frac: torch.Tensor, mat: torch.Tensor, rcut: float, rmin: float
) -> PairDistances:
    """Each unordered pair with rmin < r_ij <= rcut once (i <= j)."""
    n, device = frac.shape[0], frac.device
    with torch.no_grad():
        iu, ju = torch.triu_indices(n, n, device=device)
        same = iu == ju
        dcart = (frac[ju] - frac[iu]) @ mat
        shifts = _translations(mat, rcut).to(device)
        positive = _positive(shifts)
        tcart = shifts.to(mat.dtype) @ mat
        step = max(1, CHUNK_ELEMENTS // (3 * iu.shape[0]))
        found_p, found_t = [], []
        for start in range(0, shifts.shape[0], step):
            stop = min(start + step, shifts.shape[0])
            d = dcart[:, None, :] + tcart[None, start:stop, :]
            r2 = (d * d).sum(-1)
            keep = (r2 <= rcut * rcut) & (r2 > rmin * rmin)
            keep &= ~same[:, None] | positive[None, start:stop]
            p, t = keep.nonzero(as_tuple=True)
            found_p.append(p)
            found_t.append(t + start)
        p, t = torch.cat(found_p), torch.cat(found_t)
        i, j, shift = iu[p], ju[p], shifts[t]
    d = (frac[j] - frac[i] + shift.to(frac.dtype)) @ mat
    return PairDistances(i, j, torch.linalg.norm(d, dim=-1), shift)


def pair_distances(
    lattice: torch.Tensor,
    frac: torch.Tensor,
    rmax: float,
    *,
    rmin: float = 0.0,
) -> PairDistances:
    """All atom pairs of a periodic crystal within a distance.

    Parameters
    ----------
    lattice : Tensor, shape (6,)
        a, b, c in Å and alpha, beta, gamma in degrees.
    frac : Tensor, shape (n, 3)
        Fractional coordinates (wrapped into [0, 1) here).
    rmax : float
        Largest pair distance kept, in Å.
    rmin : float
        Pairs must be longer than this, in Å (an atom with itself at zero
        offset is never a pair).

    Returns
    -------
    PairDistances
        ``(i, j, r, shift)`` for every ordered pair, i in the cell and j
        over the periodic images, with ``rmin < r_ij <= rmax`` where
        ``r_ij = |(x_j + shift − x_i) @ L|``.  Each unordered pair appears
        twice, as (i, j, n) and (j, i, −n).  Gradients flow to
        ``lattice`` and ``frac``.

    Raises
    ------
    PhysicsInputError
        For ``rmax <= 0``, a bad cell or no atoms.
    """
    lattice, frac = _as_cell(lattice, frac)
    if not rmax > 0:
        raise PhysicsInputError(
            f"rmax must be positive (Å), got {rmax}. Please give the "
            "largest pair distance wanted."
        )
    half = _half_pairs(
        torch.remainder(frac, 1.0), lattice_matrix(lattice), rmax, rmin
    )
    return PairDistances(
        torch.cat([half.i, half.j]),
        torch.cat([half.j, half.i]),
        torch.cat([half.r, half.r]),
        torch.cat([half.shift, -half.shift]),
    )


def _as_cell(lattice, frac):
    ref = next(
        (
            x
            for x in (lattice, frac)
            if torch.is_tensor(x) and x.is_floating_point()
        ),
        None,
    )
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    lattice = torch.as_tensor(lattice, dtype=dtype, device=device)
    frac = torch.as_tensor(frac, dtype=dtype, device=device)
    _check_cell(lattice)
    if frac.ndim != 2 or frac.shape[-1] != 3:
        raise PhysicsInputError(
            "Fractional coordinates must have shape (n, 3), got "
            f"{tuple(frac.shape)}."
        )
    if frac.shape[0] == 0:
        raise PhysicsInputError(
            "The structure has no atoms. Please give at least one site."
        )
    if not bool(torch.isfinite(frac.detach()).all()):
        raise PhysicsInputError(
            "Fractional coordinates contain NaN or infinity. Please fix "
            "the sites."
        )
    return lattice, frac


def sphere_envelope(r: torch.Tensor, diameter) -> torch.Tensor:
    """Characteristic function of a sphere of diameter D.

    Parameters
    ----------
    r : Tensor
        Distances in Å.
    diameter : float or Tensor
        Particle diameter D in Å (> 0); a tensor passes gradients.

    Returns
    -------
    Tensor
        ``γ0(r) = 1 − 3r/(2D) + r^3/(2D^3)`` for ``r < D`` and 0 beyond
        (Kodama et al., Acta Cryst. A 62, 444 (2006); srfit's
        ``sphericalCF``, pdffit2's ``spdiameter``).
    """
    d = torch.as_tensor(diameter, dtype=r.dtype, device=r.device)
    if not bool((d.detach() > 0).all()):
        raise PhysicsInputError(
            f"The particle diameter must be positive (Å), got "
            f"{d.detach().cpu().tolist()}. Please pass diameter=None for a "
            "bulk crystal."
        )
    x = r / d
    return torch.where(x < 1.0, 1.0 - 1.5 * x + 0.5 * x**3, 0.0 * x)


def _check_grid(r: torch.Tensor) -> None:
    if r.ndim != 1 or r.shape[0] < 2:
        raise PhysicsInputError(
            "The r grid must be a 1-D array of at least two points (Å), "
            f"got shape {tuple(r.shape)}."
        )
    rd = r.detach()
    if not bool(torch.isfinite(rd).all()):
        raise PhysicsInputError("The r grid contains NaN or infinity.")
    if not bool((rd[1:] > rd[:-1]).all()):
        raise PhysicsInputError(
            "The r grid must be strictly increasing (Å). Please sort it "
            "and drop repeated points."
        )
    if float(rd[0]) < 0:
        raise PhysicsInputError(
            f"The r grid must not go below 0 Å, got rmin = {float(rd[0])}."
        )


def _check_settings(qmax, qdamp, qbroad, diameter):
    if qmax is not None and not qmax >= 0:
        raise PhysicsInputError(
            f"qmax must be positive (Å^-1), got {qmax}. Please pass "
            "qmax=None (or 0) for a PDF without termination ripples."
        )
    for name, value in (("qdamp", qdamp), ("qbroad", qbroad)):
        if not float(value) >= 0:
            raise PhysicsInputError(
                f"{name} must be >= 0 (Å^-1), got {value}."
            )
    if diameter is not None and not bool(
        (torch.as_tensor(diameter).detach() > 0).all()
    ):
        raise PhysicsInputError(
            f"The particle diameter must be positive (Å), got {diameter}. "
            "Please pass diameter=None for a bulk crystal."
        )


def _fine_step(r: torch.Tensor) -> float:
    """Internal grid step: a divisor of a uniform grid's step <= 0.01 Å.

    A grid counts as uniform up to float32 rounding of its points; the
    linear interpolation onto ``r`` then moves by a negligible fraction of
    a step.  Other grids, and grids finer than 0.001 Å, are interpolated
    from a 0.005 Å grid.
    """
    diffs = torch.diff(r.detach().double().cpu())
    step = float(diffs.mean())
    uniform = float((diffs - step).abs().max()) <= 1e-3 * step
    if uniform and step >= 0.1 * FINE_STEP:
        return step / math.ceil(step / FINE_STEP - 1e-9)
    return 0.5 * FINE_STEP


def _window(rij, sigma, step: float, half: int, offsets):
    """Grid indices k (p, w) and x = (r_k − r_ij)/σ of each pair's window.

    ``r_k = (k − half)·step``; the window holds the ``2·half + 1`` grid
    points nearest r_ij.
    """
    k0 = torch.round(rij / step).long()
    x0 = ((k0 - half).to(rij.dtype) * step - rij) / sigma
    x = torch.addcmul(x0[:, None], offsets[None, :], (step / sigma)[:, None])
    return k0[:, None] + offsets.long(), x


def _padded_size(rij, step: float, half: int, n_fine: int) -> int:
    """Grid points :class:`_GaussianSum` needs so that no pair's window
    leaves the grid and the ``n_fine`` points from ``half`` on are there.

    The last window's centre is rounded exactly as :func:`_window` rounds
    it (in the pairs' dtype): a float32 distance such as 5.095 Å over a
    0.01 Å step rounds one point higher in torch than in Python floats,
    which put that window's end past a grid sized in Python floats (an
    IndexError mid-evaluation).
    """
    kmax = int(torch.round(rij.detach().max() / step))
    return max(kmax + 2 * half + 1, n_fine + half)


class _GaussianSum(torch.autograd.Function):
    """Σ_p a_p exp(−(r_k − r_p)^2 / 2σ_p^2) / (sqrt(2π) σ_p) on a grid.

    Only the ``2·half + 1`` grid points nearest each r_p are evaluated,
    in chunks; the backward pass recomputes the windows chunk by chunk,
    so memory stays bounded by the chunk size (once differentiable).
    The output holds ``r_k = (k − half)·step`` for k in [0, size); the
    caller makes ``size`` large enough that no window leaves it.
    """

    @staticmethod
    def forward(ctx, rij, sigma, amp, size: int, step: float, half: int):
        ctx.save_for_backward(rij, sigma, amp)
        ctx.grid = (size, step, half)
        offsets = torch.arange(2 * half + 1, device=rij.device)
        offsets = offsets.to(rij.dtype)
        chunk = max(1, CHUNK_ELEMENTS // (2 * half + 1))
        out = torch.zeros(size, dtype=rij.dtype, device=rij.device)
        norm = amp / (math.sqrt(2.0 * math.pi) * sigma)
        for start in range(0, rij.shape[0], chunk):
            part = slice(start, start + chunk)
            k, x = _window(rij[part], sigma[part], step, half, offsets)
            g = x.square_().mul_(-0.5).exp_().mul_(norm[part, None])
            out.scatter_add_(0, k.reshape(-1), g.reshape(-1))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        rij, sigma, amp = ctx.saved_tensors
        size, step, half = ctx.grid
        offsets = torch.arange(2 * half + 1, device=rij.device)
        offsets = offsets.to(rij.dtype)
        chunk = max(1, CHUNK_ELEMENTS // (2 * half + 1))
        s0, s1, s2 = (torch.empty_like(rij) for _ in range(3))
        for start in range(0, rij.shape[0], chunk):
            part = slice(start, start + chunk)
            k, x = _window(rij[part], sigma[part], step, half, offsets)
            ge = grad_out[k].mul_(torch.exp(-0.5 * x * x))
            s0[part] = ge.sum(1)
            ge.mul_(x)
            s1[part] = ge.sum(1)
            s2[part] = ge.mul_(x).sum(1)
        inv = 1.0 / (math.sqrt(2.0 * math.pi) * sigma)
        c = amp * inv / sigma
        # φ = a e^{−x²/2}/(√(2π)σ), x = (r_k − r)/σ:
        # ∂φ/∂r = φ x/σ, ∂φ/∂σ = φ (x² − 1)/σ, ∂φ/∂a = φ/a
        return c * s1, c * (s2 - s0), inv * s0, None, None, None


def _merge_equal(rij, sigma, amp):
    """One Gaussian per distinct (r_ij, σ_ij), its amplitudes summed.

    A symmetric cell repeats each distance many times (Al12Mo, Im-3:
    about 50 pairs a distance within 40 Å; HfZn2, Fd-3m: about 500), and
    equal Gaussians add up to one.  Keys are rounded to
    :data:`MERGE_QUANTUM`, far below any grid step, so G(r) is unchanged
    to rounding.  Used without gradients only (it would detach them).
    """
    if rij.shape[0] < 2:
        return rij, sigma, amp
    q = MERGE_QUANTUM
    kr = torch.round(rij.detach().double() / q).long()
    ks = torch.round(sigma.detach().double() / q).long()
    ks = torch.unique(ks, return_inverse=True)[1]
    widths = int(ks.max()) + 1
    if (int(kr.max()) + 1) * widths >= 1 << 62:  # keys would overflow
        return rij, sigma, amp
    keys, inv = torch.unique(kr * widths + ks, return_inverse=True)
    m = keys.shape[0]
    if m == rij.shape[0]:
        return rij, sigma, amp
    return (
        rij.new_empty(m).scatter_(0, inv, rij),
        sigma.new_empty(m).scatter_(0, inv, sigma),
        amp.new_zeros(m).index_add_(0, inv, amp),
    )


def _terminate(g: torch.Tensor, step: float, qmax: float) -> torch.Tensor:
    """Band-limit G(r) on r_k = k·step (G(0) = 0) to |Q| < qmax.

    The FFT of the odd extension of G, zero-padded to at least four
    times its length, is a discrete sine transform:
    ``G_t = (2/π) ∫_0^qmax sin(Qr) ∫ G(r') sin(Qr') dr' dQ``.
    """
    m = g.shape[0]
    size = 1 << int(math.ceil(math.log2(4 * m)))
    pad = g.new_zeros(size - 2 * m + 1)
    odd = torch.cat([g, pad, -g[1:].flip(0)])
    spectrum = torch.fft.rfft(odd)
    q = torch.arange(spectrum.shape[0], device=g.device) * (
        2.0 * math.pi / (size * step)
    )
    spectrum = spectrum * (q < qmax)
    return torch.fft.irfft(spectrum, n=size)[:m]


def pdf_of_crystal(
    lattice,
    frac,
    numbers,
    occupancy,
    biso,
    r,
    *,
    qmax: float | None,
    qdamp: float = 0.0,
    qbroad: float = 0.0,
    diameter=None,
    scale: float = 1.0,
    delta1: float = 0.0,
    delta2: float = 0.0,
) -> torch.Tensor:
    """X-ray PDF G(r) of a periodic crystal (diffpy.pdffit2 convention).

    ``G(r) = s γ0(r) [B_Qmax (1/(N r) Σ_ij f_i f_j/<f>^2 T_ij(r)
    − 4π r ρ0) e^{−(Qdamp r)^2/2}]`` as written out in the module
    docstring, with ``B_Qmax`` the band limit at Qmax.

    Parameters
    ----------
    lattice : Tensor, shape (6,)
        a, b, c in Å and alpha, beta, gamma in degrees.  Its dtype and
        device (or those of ``frac``) are those of the result.
    frac : Tensor, shape (n, 3)
        Fractional coordinates.
    numbers : array of int, shape (n,)
        Atomic numbers Z; the X-ray weight of a site is ``occ·Z``
        (pdffit2's X-ray scattering factor is Z).
    occupancy : array, shape (n,)
        Site occupancies (0, 1].
    biso : array or Tensor, shape (n,)
        Isotropic displacement parameters B in Å^2 (U = B / 8π^2).
    r : array or Tensor, shape (m,)
        Strictly increasing distances in Å (>= 0) to evaluate G on.
    qmax : float or None
        Largest Q of the data in Å^-1; None or 0 computes the PDF without
        termination ripples.
    qdamp : float
        Q-resolution damping in Å^-1: envelope ``exp(−(qdamp r)^2/2)``.
    qbroad : float
        Q-resolution peak broadening in Å^-1:
        ``σ_ij^2 → σ_ij^2 (1 + qbroad^2 r_ij^2)``.
    diameter : float, Tensor or None
        Diameter D (Å) of a spherical particle; multiplies G by
        ``γ0(r) = 1 − 3r/(2D) + r^3/(2D^3)`` for r < D and 0 beyond.
    scale : float
        Overall scale factor s.
    delta1, delta2 : float
        pdffit2's correlated-motion sharpening in Å and Å^2:
        ``σ_ij^2 → σ_ij^2 (1 − δ1/r_ij − δ2/r_ij^2 + qbroad^2 r_ij^2)``.

    Returns
    -------
    Tensor, shape (m,)
        G(r) in Å^-2.

    Raises
    ------
    PhysicsInputError
        For a bad cell, no atoms, an r grid that is not increasing, a
        negative qmax, qdamp or qbroad, or a diameter <= 0.
    """
    lattice, frac = _as_cell(lattice, frac)
    dtype, device = lattice.dtype, lattice.device
    n = frac.shape[0]

    def as_site_array(x, name):
        x = torch.as_tensor(x, device=device).to(dtype)
        if x.shape != (n,):
            raise PhysicsInputError(
                f"{name} must have one value per site, shape ({n},), got "
                f"{tuple(x.shape)}."
            )
        return x

    z = as_site_array(numbers, "numbers")
    occ = as_site_array(occupancy, "occupancy")
    u = as_site_array(biso, "biso") * _U_FROM_B
    r = torch.as_tensor(r, device=device).to(dtype)
    _check_grid(r)
    _check_settings(qmax, qdamp, qbroad, diameter)
    if bool((occ.detach() <= 0).any()) or bool((z.detach() < 1).any()):
        raise PhysicsInputError(
            "Occupancies must be > 0 and atomic numbers >= 1. Please drop "
            "empty sites."
        )
    if bool((u.detach() < 0).any()):
        raise PhysicsInputError("biso must be >= 0 Å^2.")
    qmax = float(qmax) if qmax else 0.0

    # 1. pairs up to the extended range plus the widest peak's tail
    step = _fine_step(r)
    rext = float(r[-1].detach()) + (
        N_RIPPLES * 2.0 * math.pi / qmax if qmax > 0 else 0.0
    )
    n_fine = int(math.ceil(rext / step)) + 2
    umax = float(u.detach().max())
    corr_max = max(1.0, 1.0 + (qbroad * (rext + 1.0)) ** 2)
    corr_max -= min(0.0, delta1) / MIN_PAIR_DISTANCE
    corr_max -= min(0.0, delta2) / MIN_PAIR_DISTANCE**2
    sigma_est = math.sqrt(max(2.0 * umax * corr_max, step * step))
    frac = torch.remainder(frac, 1.0)
    mat = lattice_matrix(lattice)
    pairs = _half_pairs(
        frac, mat, rext + PEAK_SIGMAS * sigma_est, MIN_PAIR_DISTANCE
    )

    # 2. Gaussians on the fine grid
    npart = occ.sum()
    fz = occ * z
    favg = fz.sum() / npart
    rij = pairs.r
    corr = 1.0 - delta1 / rij - delta2 / (rij * rij) + (qbroad * rij) ** 2
    sigma2 = (u[pairs.i] + u[pairs.j]) * corr
    sigma = torch.sqrt(torch.clamp(sigma2, min=step * step))
    amp = 2.0 * fz[pairs.i] * fz[pairs.j] / (favg * favg)
    amp = torch.where(corr > 0, amp, 0.0)
    if not (rij.requires_grad or sigma.requires_grad or amp.requires_grad):
        rij, sigma, amp = _merge_equal(rij, sigma, amp)
    ppp = torch.zeros(n_fine, dtype=dtype, device=device)
    if rij.shape[0] > 0:
        half = int(math.ceil(PEAK_SIGMAS * float(sigma.detach().max()) / step))
        size = _padded_size(rij, step, half, n_fine)
        padded = _GaussianSum.apply(rij, sigma, amp, size, step, half)
        ppp = padded[half : half + n_fine]

    # 3. G, envelopes, band limit, onto the requested grid
    rf = torch.arange(n_fine, device=device, dtype=dtype) * step
    rho0 = npart / torch.det(mat)
    inv_r = torch.where(rf > 0, 1.0 / torch.clamp(rf, min=step), 0.0)
    g = ppp * inv_r / npart - 4.0 * math.pi * rho0 * rf
    if qdamp > 0:
        g = g * torch.exp(-0.5 * (qdamp * rf) ** 2)
    if qmax > 0:
        g = _terminate(g, step, qmax)
    pos = r.detach().double() / step
    k0 = torch.clamp(torch.floor(pos).long(), 0, n_fine - 2)
    w = (pos - k0.double()).clamp(0.0, 1.0).to(dtype)
    out = g[k0] * (1.0 - w) + g[k0 + 1] * w
    if diameter is not None:
        out = out * sphere_envelope(r, diameter)
    return scale * out
