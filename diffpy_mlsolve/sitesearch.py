"""Atom sites chosen by how well they fit the measured pattern.

Peak heights alone pick the wrong light atoms where a map is
pseudo-symmetric: in rutile RuO2 the Ru atoms sit on an I-centred
lattice, the flipped maps show O at the true sites and at their
I-translates with about equal height, and the height-based assignment
takes either.  The fit to the data tells them apart, provided the figure
of merit sees light atoms.  The quick R factor
(:func:`diffpy_mlsolve.rfactor.pattern_rfactor`, one peak width for the
whole pattern) does not on size- and strain-broadened data: its profile
misfit swamps them (RuO2: 0.0351 for a wrong O arrangement, 0.0346 for
the true structure).

:class:`ProfileScorer` therefore scores a structure through the profile
the intensity extraction fitted (:func:`diffpy_mlsolve.phasing.
group_profiles`): the structure's |F|^2 summed over each overlap group,
rendered with that profile, with a scale, one overall B and the
background refitted.  Its floor is the extraction's own Rwp; a structure
that reproduces every group intensity reaches it (RuO2: floor 0.0234,
true structure 0.0251, the wrong arrangement above 0.0268).

:func:`search_sites` starts from the height-based assignment and climbs:
each site may move to another density peak (no closer to another site
than ``min_distance`` and than :data:`~diffpy_mlsolve.atoms.
CONTACT_FLOOR` times the sum of their atomic radii), two sites of
different elements may swap, and when neither helps two sites move
together, whenever that lowers the profile Rwp.  Each trial changes
one or two terms of F: one site is scored against every peak at once.

:func:`search_orbits` makes the same moves with whole orbits of a space
group the map shows instead of single sites, so the search cannot break
the symmetry into a P1 overfit (the network's RbSmO2 density shows R-3m
at agreement 0.98 while the P1 search ends 20 % above the truth's Rwp).

:func:`refine_positions` then refines a symmetrised structure's
asymmetric unit against the same figure, each site kept on its Wyckoff
position and atoms kept apart by a repulsion: without it, two atoms
of a large P1 cell merge to fit the |F|^2 as one heavier scatterer
(Sr2YSbO6 from a 3 nm G(r): contacts of 0.005 of the radii's sum).

:class:`PDFScorer` is the same figure for a G(r): the G(r) Rw through
the envelope the intensity fit found, so the same searches solve from
a PDF (:func:`scorer_for` picks the scorer for a set of reflections).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from diffpy_mlsolve.errors import PhysicsInputError

__all__ = [
    "PDFScorer",
    "ProfileScorer",
    "orbit_pool",
    "refine_positions",
    "search_orbits",
    "scorer_for",
    "search_sites",
]

#: Changes of the overall B (Å^2, added to the sites' B) the scorer tries.
B_SHIFTS = (-0.8, -0.4, 0.0, 0.5, 1.0, 2.0, 3.0)
#: Scans (one site against every peak of the pool) per search, at most:
#: this many per atom, and at least :data:`MIN_SCANS` (room for the pair
#: moves of a small cell such as the rutile test's; U3Si, 16 atoms,
#: reached the true structure's Rwp within 16 from the network's first
#: density).
SCANS_PER_ATOM = 6
MIN_SCANS = 60
#: Peaks (highest first) a site may move to: this many per atom, plus 24.
POOL_PER_ATOM = 2
#: Steps of the search for ways to fill the counts with orbits.
_FILL_STEPS = 4000
#: :class:`PDFScorer`'s groups: reflections within this phase (radians)
#: of each other at the largest r, and at most this many groups.
PDF_SHELL_PHASE = 0.1
PDF_MAX_SHELLS = 3000
#: A structure whose reflections miss the extracted ones by more than
#: this fraction of its |F|^2 is in another cell.
_UNMATCHED = 0.05
#: A normal matrix filled above this fraction is kept dense: a G(r)'s
#: sines overlap everywhere, and there BLAS beats a sparse product
#: (834 groups, 200 structures at once: 39 against 76 ms)
DENSE_FILL = 0.25
#: Weight of the repulsion in :func:`refine_positions`: a pair 10 %
#: inside its limit adds 0.1, 30 % inside 0.9.  Weaker, merging wins: at
#: 1.0 two Ru of a trial 1.1-1.8 Å apart, where the data have one Pb, end
#: at 0.37 of their radii's sum (0.006 without it).
REPULSION = 10.0


def _quadratic_form(m):
    """v -> vᵀ M v for a fixed symmetric matrix ``m`` (numpy or scipy
    sparse) as a differentiable torch function of a float64 vector: the
    product in numpy/scipy, the gradient 2 M v kept from it (RuOF4's
    3,154 groups, M 15 % filled: torch's sparse product with its
    gradient took 120 ms, scipy's product 1.3 ms)."""
    import torch

    class Quadratic(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            mv = torch.as_tensor(np.asarray(m @ v.detach().numpy()))
            ctx.save_for_backward(mv)
            return v.detach() @ mv

        @staticmethod
        def backward(ctx, grad):
            (mv,) = ctx.saved_tensors
            return 2.0 * grad * mv

    return Quadratic.apply


class ProfileScorer:
    """Profile Rwp of structures against the pattern intensities were
    extracted from.

    Parameters
    ----------
    reflections : Reflections
        From :func:`diffpy_mlsolve.phasing.extract_intensities` (it keeps
        the fitted profile, the weights and the radiation lines).
    background_order : int
        Chebyshev background terms refitted with the scale.

    Raises
    ------
    PhysicsInputError
        For reflections without a fitted powder profile (e.g. those fitted
        to a PDF).
    """

    def __init__(self, reflections, background_order: int = 8):
        from diffpy_mlsolve.phasing import _chebyshev

        a = self._profiles(reflections)  # raises without a profile
        curves = reflections.curves
        x = np.asarray(curves["x"], float)
        y = np.asarray(curves["yobs"], float)
        sw = np.sqrt(np.asarray(curves["weights"], float))
        background = _chebyshev(x, background_order) * sw[:, None]
        if not background_order:  # no background: nothing projected out
            background = background[:, :0]
        obs = reflections.observed
        self.reflections = reflections
        self.hkl = reflections.hkl[obs].astype(float)
        self.group = reflections.group[obs]
        self.ngroups = reflections.ngroups
        self.s2 = 0.25 * reflections.dstar[obs] ** 2  # (sin θ/λ)^2
        self.members = np.bincount(self.group, minlength=self.ngroups)
        from scipy import sparse

        q, _ = np.linalg.qr(background)
        yw = y * sw
        yp = yw - q @ (q.T @ yw)  # data with the background projected out
        aw = sparse.csc_matrix(a * sw[:, None])  # peaks are truncated
        # Rwp^2 of mean group intensities v with the best scale s >= 0 and
        # the background projected out: (|yp|^2 - (c·v)^2 / |P aw v|^2) /
        # Σ w y^2, where |P aw v|^2 = vᵀ (awᵀ aw) v - |qᵀ aw v|^2
        self._c = np.asarray(aw.T @ yp).ravel()
        m = (aw.T @ aw).tocsr()
        dense = m.nnz > DENSE_FILL * m.shape[0] * m.shape[1]
        self._m = m.toarray() if dense else m
        self._bq = np.asarray((aw.T @ q).T)
        self._yp2 = float(yp @ yp)
        self._den = float(yw @ yw) or 1.0
        order = np.argsort(reflections.dstar[obs], kind="stable")
        self._dstar = reflections.dstar[obs][order]
        self._dgroup = self.group[order]
        self._f0: dict = {}
        # reflections -> group sums
        from scipy import sparse

        self._sum = sparse.csr_matrix(
            (
                np.ones(len(self.group)),
                (self.group, np.arange(len(self.group))),
            ),
            shape=(self.ngroups, len(self.group)),
        )

    @staticmethod
    def _profiles(reflections) -> np.ndarray:
        """(P, G) each overlap group's curve with unit |F|^2 per member
        (:func:`~diffpy_mlsolve.phasing.group_profiles`)."""
        from diffpy_mlsolve.phasing import group_profiles

        return group_profiles(reflections)

    @property
    def floor(self) -> float:
        """The extraction's Rwp: no structure fits better."""
        return float(self.reflections.rwp)

    # ------------------------------------------------------------ core
    def rwp_of_groups(self, g: np.ndarray) -> np.ndarray:
        """Rwp of summed |F|^2 per overlap group: ``g`` (G,) gives a
        float, ``g`` (G, K) the (K,) Rwp of K structures."""
        v = g / np.maximum(self.members, 1).reshape(-1, *([1] * (g.ndim - 1)))
        cv = self._c @ v
        bv = self._bq @ v
        vmv = (v * (self._m @ v)).sum(0) - (bv * bv).sum(0)
        ok = (cv > 0) & (vmv > 0)
        fit = np.where(ok, cv**2 / np.where(ok, vmv, 1.0), 0.0)
        r = np.sqrt(np.maximum(self._yp2 - fit, 0.0) / self._den)
        return float(r) if g.ndim == 1 else r

    def rwp_of_many(self, f: np.ndarray) -> np.ndarray:
        """(K,) Rwp of K sets of structure factors, ``f`` (H, K): the
        plain form; the search's scans use :meth:`rwp_of_moves`."""
        return self.rwp_of_groups(self._sum @ (np.abs(f) ** 2))

    def group_norms(self, table: np.ndarray) -> np.ndarray:
        """(G, K) Σ |t|^2 over each overlap group of each column of
        ``table`` (H, K): the constant part of :meth:`rwp_of_moves`."""
        return self._sum @ (np.abs(table) ** 2)

    def rwp_of_moves(self, base, table, norms) -> np.ndarray:
        """(K,) Rwp of ``base`` (H,) plus each column of ``table`` (H, K),
        ``norms`` its :meth:`group_norms`; the same as
        ``rwp_of_many(base[:, None] + table)`` without forming the sums:
        a group's Σ |b + t|^2 is Σ |b|^2 + Σ |t|^2 + 2 Re Σ b* t, one
        sparse product (about 2× faster with the ~10^5 reflections of a
        large cell's G(r): ``benchmarks/bench_site_search.py``)."""
        from scipy import sparse

        s = self._sum
        weighted = sparse.csr_matrix(
            (np.conj(base)[s.indices], s.indices, s.indptr), shape=s.shape
        )
        g = norms + 2.0 * (weighted @ table).real
        g += (s @ (np.abs(base) ** 2))[:, None]
        return self.rwp_of_groups(g)

    def rwp_of_f(self, f: np.ndarray) -> float:
        """Rwp of structure factors ``f`` at the observed reflections."""
        g = np.bincount(
            self.group, weights=np.abs(f) ** 2, minlength=self.ngroups
        )
        return self.rwp_of_groups(g)

    def form_factor(self, element: str, biso: float) -> np.ndarray:
        """f(s) exp(-B s^2) of ``element`` at the observed reflections."""
        key = (element, round(float(biso), 6))
        if key not in self._f0:
            self._f0[key] = self.form_factor_at(element, self.s2, biso)
        return self._f0[key]

    @staticmethod
    def form_factor_at(element: str, s2, biso: float = 0.0) -> np.ndarray:
        """f(s) exp(-B s^2) of ``element`` at (sin θ/λ)^2 = ``s2``."""
        import torch
        from pymatgen.core import Element

        from diffpy_mlsolve.physics.formfactors import (
            form_factor_coefficients,
            form_factors,
        )

        s2 = np.asarray(s2, float)
        coeffs = form_factor_coefficients(
            torch.tensor([Element(element).Z]), torch.float64
        )
        f = form_factors(coeffs, torch.as_tensor(s2)).numpy().reshape(-1)
        return f * np.exp(-biso * s2)

    def match_groups(self, dstar) -> np.ndarray:
        """The overlap group of each |d*| (-1 where no extracted
        reflection lies within 2e-4 relative)."""
        ds = np.asarray(dstar, float)
        ref = self._dstar
        j = np.clip(np.searchsorted(ref, ds), 1, max(len(ref) - 1, 1))
        left = np.abs(ds - ref[j - 1]) <= np.abs(ds - ref[j])
        j = np.where(left, j - 1, j)
        hit = np.abs(ref[j] - ds) <= 2e-4 * np.maximum(ds, 1e-9)
        return np.where(hit, self._dgroup[j], -1)

    def torch_rwp(self):
        """Rwp of group sums as a differentiable torch function."""
        import torch

        c = torch.as_tensor(self._c)
        bq = torch.as_tensor(self._bq)
        members = torch.as_tensor(np.maximum(self.members, 1), dtype=c.dtype)
        yp2, den = self._yp2, self._den
        quadratic = _quadratic_form(self._m)

        def rwp(g):
            v = g / members
            cv = c @ v
            bv = bq @ v
            vmv = quadratic(v) - bv @ bv
            fit = torch.clamp(cv, min=0) ** 2 / torch.clamp(vmv, min=1e-300)
            return torch.sqrt(torch.clamp(yp2 - fit, min=0) / den)

        return rwp

    def element_terms(
        self, frac, elements: Sequence[str], biso: float
    ) -> dict:
        """Element -> (H, n) the contribution to F of each of the sites
        ``frac`` (n, 3) were it that element: the phases once for all."""
        frac = np.asarray(frac, float).reshape(-1, 3)
        phase = np.exp(2j * np.pi * (self.hkl @ frac.T))
        return {
            e: self.form_factor(e, biso)[:, None] * phase
            for e in set(elements)
        }

    def _best_shift(self, rwp_at) -> tuple:
        """(Rwp, change of the overall B) of the best of :data:`B_SHIFTS`
        for ``rwp_at(change)``."""
        return min((rwp_at(d), d) for d in B_SHIFTS)

    def best_b(self, frac, elements, biso: float = 1.0) -> tuple:
        """(Rwp, B) for the sites with their best overall B change
        (:meth:`_best_shift`) added to ``biso``."""
        frac = np.asarray(frac, float).reshape(-1, 3)
        phase = np.exp(2j * np.pi * (self.hkl @ frac.T))
        elements = np.asarray(elements)
        # F = Σ_e f_e(B) Σ_(sites of e) phase: the phases once, not per B
        sums = {e: phase[:, elements == e].sum(1) for e in set(elements)}
        r, d = self._best_shift(
            lambda d: self.rwp_of_f(
                sum(self.form_factor(e, biso + d) * v for e, v in sums.items())
            )
        )
        return r, biso + d

    # ------------------------------------------------------ structures
    def structure_f2(self, crystal) -> tuple:
        """(|d*|, |F|^2) of a crystal's reflections up to the extracted
        ones' |d*| (one of each Friedel pair), with this scorer's form
        factors (:meth:`form_factor_at`)."""
        import torch
        from pymatgen.core import Element

        from diffpy_mlsolve.physics.reflections import reflections_within

        dmax = float(self.reflections.dstar_max)
        cell = torch.as_tensor(np.asarray(crystal.lattice, float))[None]
        hkl, dstar, mask = reflections_within(cell, dmax * 1.001)
        keep = mask[0].numpy()
        hkl = hkl.numpy()[keep].astype(float)
        ds = dstar[0].numpy()[keep]
        s2 = 0.25 * ds**2
        frac = np.asarray(crystal.frac, float)
        numbers = np.asarray(crystal.numbers, int)
        biso = np.asarray(crystal.biso, float)
        occ = np.asarray(crystal.occupancy, float)
        f = np.zeros(len(ds), complex)
        for z, b in set(zip(numbers.tolist(), biso.tolist())):
            at = (numbers == z) & (biso == b)
            amp = self.form_factor_at(Element.from_Z(z).symbol, s2, b)
            phase = np.exp(2j * np.pi * (hkl @ frac[at].T))
            f += amp * (phase @ occ[at])
        return ds, np.abs(f) ** 2

    def rwp(self, structure) -> float:
        """Profile Rwp of ``structure`` (any setting of the data's cell),
        with the best overall B change from :data:`B_SHIFTS`.

        Its reflections are matched to the extracted ones by |d*|, so a
        standardised cell (axes permuted, another origin) scores as the
        data's own.

        Raises
        ------
        PhysicsInputError
            When the structure's reflections do not fall on the data's:
            another cell.
        """
        from diffpy_mlsolve.structures import as_crystal

        ds, f2 = self.structure_f2(as_crystal(structure, standardize=False))
        group = self.match_groups(ds)
        hit = group >= 0
        # the range of the reflections fitted to the pattern: those below
        # its first angle, or beyond its last by more than two peak
        # widths, were listed but not fitted (Ba5P4, a 36-atom cell, lost
        # 7 % of its intensity past the last and was refused)
        inside = (ds >= self._dstar[0] * (1 - 2e-4)) & (
            ds <= self._dstar[-1] * (1 + 2e-4)
        )
        lost = float(f2[inside & ~hit].sum())
        if lost > _UNMATCHED * max(float(f2[inside].sum()), 1e-30):
            raise PhysicsInputError(
                "The structure's reflections do not fall on those extracted "
                f"from the pattern ({lost / f2[inside].sum():.0%} of its "
                "intensity elsewhere): it is not in the pattern's cell."
            )
        g = np.zeros(self.ngroups)
        np.add.at(g, group[hit], f2[hit])
        s2 = np.zeros(self.ngroups)
        np.maximum.at(s2, self.group, self.s2)
        return self._best_shift(
            lambda d: self.rwp_of_groups(g * np.exp(-2 * d * s2))
        )[0]


class PDFScorer(ProfileScorer):
    """G(r) Rw of structures against a PDF's intensity fit.

    The same figure as :class:`ProfileScorer` with the G(r) in place of
    the powder profile: equal weights (Rw = sqrt(Σ (Gobs − Gcalc)^2 /
    Σ Gobs^2)), no background (G(r)'s baseline belongs to the
    reflections), atoms scattering as the PDF convention has it, f = Z
    (times the Debye-Waller factor), and each reflection's sine
    sin(Q r) / Q with the Qdamp and particle envelope
    :func:`~diffpy_mlsolve.pdf_intensities.pdf_intensities` fitted.

    Its groups are not the fit's: those share one |F|^2 among
    reflections up to about π / (2 × the signal's extent) apart in Q,
    which lets a free fit reach the noise but makes a structure's own
    |F|^2 miss by a quarter turn of phase at the far end (a true NaCl
    particle at Rw 0.22).  Here a group holds reflections within
    :data:`PDF_SHELL_PHASE` radians at the largest r (equal |d*| in a
    cubic cell), each with its own sine.  The overall B is fitted
    continuously: at Qmax 25 Å^-1, 0.1 Å^2 moves Rw by about 0.02.

    Raises
    ------
    PhysicsInputError
        For reflections not fitted to a G(r).
    """

    def __init__(self, reflections):
        from dataclasses import replace

        from diffpy_mlsolve.pdf_intensities import _bins, sine_columns

        curves = reflections.curves
        if "envelope" not in curves:
            raise PhysicsInputError(
                "These reflections carry no G(r) envelope (they were not "
                "fitted to a PDF by pdf_intensities)."
            )
        r = np.asarray(curves["x"], float)
        q = 2 * math.pi * np.asarray(reflections.dstar, float)
        order = np.argsort(q, kind="stable")
        width = max(
            PDF_SHELL_PHASE / float(r[-1]),
            (q.max() - q.min()) / PDF_MAX_SHELLS,
        )
        shell = np.empty(len(q), int)
        shell[order] = _bins(q[order], width)
        design = sine_columns(r, q, shell)
        design *= np.asarray(curves["envelope"], float)[:, None]
        super().__init__(
            replace(reflections, group=shell, curves=dict(curves, a=design)),
            background_order=0,
        )

    @staticmethod
    def _profiles(reflections) -> np.ndarray:
        return reflections.curves["a"]

    @property
    def floor(self) -> float:
        """The intensity fit's Rw: a reference, not a bound (its wider
        groups share |F|^2 equally; a structure's own can fit better)."""
        return float(self.reflections.rwp)

    @staticmethod
    def form_factor_at(element: str, s2, biso: float = 0.0) -> np.ndarray:
        """Z exp(-B s^2) of ``element`` at (sin θ/λ)^2 = ``s2``."""
        from pymatgen.core import Element

        return Element(element).Z * np.exp(-biso * np.asarray(s2, float))

    def _best_shift(self, rwp_at) -> tuple:
        """The grid's best B change, then refined within its
        neighbours."""
        from scipy.optimize import minimize_scalar

        r, d = super()._best_shift(rwp_at)
        opt = minimize_scalar(
            rwp_at,
            bounds=(d - 0.5, d + 0.5),
            method="bounded",
            options={"xatol": 0.01},
        )
        return min((r, d), (float(opt.fun), float(opt.x)))


def scorer_for(reflections) -> ProfileScorer:
    """The scorer of structures against the data ``reflections`` were
    fitted to: :class:`PDFScorer` for a G(r)'s
    (:func:`~diffpy_mlsolve.pdf_intensities.pdf_intensities`),
    :class:`ProfileScorer` for a powder pattern's."""
    if "envelope" in reflections.curves:
        return PDFScorer(reflections)
    return ProfileScorer(reflections)


def search_sites(
    scorer: ProfileScorer,
    peaks,
    rows,
    elements,
    lattice,
    *,
    min_distance: float = 0.9,
    biso: float = 1.0,
    max_scans: int | None = None,
) -> tuple[list[int], list[str], float]:
    """Move sites between density peaks and swap elements while the
    profile Rwp drops.

    Single moves first: each site to the peak that fits best, two sites
    of different elements swapped.  When none helps, pairs: each site to
    one of its three best other peaks together with the best move of any
    other site (symmetry-related atoms often have to move together: in
    rutile the O on a twofold axis come in pairs).

    Parameters
    ----------
    scorer : ProfileScorer
    peaks : Peaks
        The density's peaks, highest first, in the data's cell.
    rows : sequence of int
        The peaks the sites start on (one per atom).
    elements : sequence of str
        Each site's element.
    lattice : (a, b, c, alpha, beta, gamma)
    min_distance : float
        No two sites closer (Å); nor closer than
        :data:`~diffpy_mlsolve.atoms.CONTACT_FLOOR` times the sum of
        their atomic radii (:func:`~diffpy_mlsolve.atoms.contact_limits`).
    biso : float
        The sites' B (Å^2); the overall B change that fits best at the
        start is kept through the search.
    max_scans : int, optional
        At most this many scans (one site against every peak of the
        pool); default :data:`SCANS_PER_ATOM` per atom, at least
        :data:`MIN_SCANS`.

    Returns
    -------
    (rows, elements, Rwp) of the best sites found.
    """
    from diffpy_mlsolve.atoms import (
        _lattice_matrix,
        _pair_distances,
        contact_limits,
    )

    rows, elements = [int(r) for r in rows], list(elements)
    limit = contact_limits(elements, min_distance)
    n = len(rows)
    if max_scans is None:
        max_scans = max(MIN_SCANS, SCANS_PER_ATOM * n)
    pool = np.array(
        sorted(set(range(min(len(peaks), POOL_PER_ATOM * n + 24))) | set(rows))
    )
    where = {int(p): k for k, p in enumerate(pool)}
    frac = np.asarray(peaks.frac, float)[pool]
    dist = _pair_distances(frac, _lattice_matrix(lattice))
    at = [where[r] for r in rows]  # pool index of each site
    scans, b = [0], None
    for _ in range(3):  # the overall B refitted to the sites found
        best, b_now = scorer.best_b(frac[at], elements, biso)
        if b_now == b:
            break
        b = b_now
        table = scorer.element_terms(frac, elements, b)
        f = sum(table[e][:, k] for e, k in zip(elements, at))
        at, f, best = _climb(
            scorer,
            table,
            dist,
            at,
            elements,
            f,
            best,
            scans,
            limit,
            max_scans,
        )
    return [int(pool[k]) for k in at], elements, best


def _climb(
    scorer,
    table,
    dist,
    at,
    elements,
    f,
    best,
    scans,
    limit,
    max_scans,
    mult=None,
    self_dist=None,
):
    """The moves of :func:`search_sites` until none helps; ``elements``
    is changed in place.  No site moves or swaps to closer than
    ``limit[e1][e2]`` (Å) to another (``self_dist``: each pool entry's
    shortest distance between its own images, if not a lattice
    translation).  With ``mult`` (the multiplicity of each pool
    entry, for :func:`search_orbits`) a site moves only to an entry of
    its own multiplicity, and two sites swap elements only when theirs
    are equal, so every element keeps its count."""
    n = len(at)
    norms = {e: scorer.group_norms(t) for e, t in table.items()}

    def clashes(at_now, i, e, rows=slice(None)):
        """Per pool entry (of ``rows``): would site i, of element e,
        clash there."""
        others = [j for j in range(n) if j != i]
        near = dist[rows]
        out = np.zeros(len(near), bool)
        if others:
            lim = np.array([limit[e][elements[j]] for j in others])
            out |= (near[:, [at_now[j] for j in others]] < lim).any(1)
        if self_dist is not None:
            out |= self_dist[rows] < limit[e][e]
        return out

    def scan(f_now, at_now, i):
        """(R of moving site i to each pool entry, as a vector)."""
        scans[0] += 1
        e = elements[i]
        base = f_now - table[e][:, at_now[i]]
        r = scorer.rwp_of_moves(base, table[e], norms[e])
        r[clashes(at_now, i, e)] = np.inf
        if mult is not None:
            r[mult != mult[at_now[i]]] = np.inf
        r[at_now] = np.inf
        return r, base

    def single(f_now, at_now, r_now, sites):
        """The first improving move of one of ``sites`` (in turn)."""
        for i in sites:
            if scans[0] >= max_scans:
                break
            r, base = scan(f_now, at_now, i)
            k = int(np.argmin(r))
            if r[k] < r_now - 1e-7:
                return k, i, base + table[elements[i]][:, k], float(r[k])
        return None

    last = n - 1  # single moves go round the sites from the last moved
    while scans[0] < max_scans:
        turn = [(last + 1 + j) % n for j in range(n)]
        move = single(f, at, best, turn)
        if move is not None:
            k, last, f, best = move
            at[last] = k
            continue
        swapped = False
        for i in range(n):
            for k in range(i + 1, n):
                if elements[i] == elements[k] or (
                    mult is not None and mult[at[i]] != mult[at[k]]
                ):
                    continue
                ei, ek = elements[i], elements[k]
                elements[i], elements[k] = ek, ei
                clash = (
                    clashes(at, i, ek, [at[i]])[0]
                    or clashes(at, k, ei, [at[k]])[0]
                )
                elements[i], elements[k] = ei, ek
                if clash:
                    continue
                trial = (
                    f
                    - table[ei][:, at[i]]
                    - table[ek][:, at[k]]
                    + table[ek][:, at[i]]
                    + table[ei][:, at[k]]
                )
                r = scorer.rwp_of_f(trial)
                if r < best - 1e-7:
                    best, f = r, trial
                    elements[i], elements[k] = ek, ei
                    swapped = True
        if swapped:
            continue
        # pairs: a site to one of its two best other peaks, then the
        # best move of another site of the same element
        paired = None
        for i in range(n):
            if paired is not None or scans[0] >= max_scans:
                break
            r, base = scan(f, at, i)
            partners = [
                j for j in range(n) if j != i and elements[j] == elements[i]
            ]
            for k in np.argsort(r)[:2]:
                if not np.isfinite(r[k]) or scans[0] >= max_scans:
                    break
                at_try = at[:i] + [int(k)] + at[i + 1 :]
                f_try = base + table[elements[i]][:, k]
                move = single(f_try, at_try, best, partners)
                if move is not None:
                    k2, i2, f_new, r_new = move
                    at_try[i2] = k2
                    paired = (at_try, f_new, r_new)
                    break
        if paired is None:
            break
        at, f, best = paired
    return at, f, best


def orbit_pool(frac, rotations, translations, lattice, *, snap: float = 0.6):
    """The orbits of points under a space group's operations.

    Each point is first moved onto the special position it is within
    ``snap`` Å of (the mean of its images under the operations that move
    it less than that, twice), then expanded.

    Returns
    -------
    list of ndarray (m, 3)
        Each point's orbit (its m distinct images, the point first).
    """
    from diffpy_mlsolve.symmetry import _matrix

    matrix = _matrix(tuple(float(v) for v in lattice))
    rot = np.asarray(rotations, float)
    tr = np.asarray(translations, float)
    out = []
    for x in np.asarray(frac, float).reshape(-1, 3):
        for _ in range(2):
            shift = np.einsum("kij,j->ki", rot, x) + tr - x
            shift -= np.round(shift)
            near = np.linalg.norm(shift @ matrix, axis=1) < snap
            x = np.mod(x + shift[near].mean(0), 1.0)
        images = np.mod(np.einsum("kij,j->ki", rot, x) + tr, 1.0)
        orbit = [x]
        for y in images:
            d = (y - np.array(orbit) + 0.5) % 1.0 - 0.5
            if np.linalg.norm(d @ matrix, axis=1).min() > 0.05:
                orbit.append(y)
        out.append(np.array(orbit))
    return out


def search_orbits(
    scorer: ProfileScorer,
    peaks,
    contents,
    heights,
    rotations,
    translations,
    lattice,
    *,
    min_distance: float = 0.9,
    biso: float = 1.0,
    starts: int = 4,
    max_scans: int | None = None,
):
    """Whole orbits of a space group chosen among a density's peaks by the
    profile Rwp.

    The density's peaks (in the group's frame: the map averaged in it,
    its origin at the group's) become orbits (:func:`orbit_pool`; those
    whose images come closer than ``min_distance`` are dropped, as are
    repeats).  Each element's count is filled exactly with orbits, the
    heaviest element first, orbits whose height fits the element's
    (``heights``, one common scale) preferred; up to ``starts`` fillings
    with different multiplicities are each improved by the moves of
    :func:`search_sites` (an orbit to another of its multiplicity, two of
    equal multiplicity swapping elements, pairs), the overall B refitted.

    Parameters
    ----------
    scorer : ProfileScorer
    peaks : Peaks
        Highest first.
    contents : Mapping
        Element -> atoms in the cell.
    heights : Mapping
        Element -> expected peak height
        (:func:`~diffpy_mlsolve.atoms.expected_heights`).
    rotations, translations : ndarray (S, 3, 3), (S, 3)
        The group's operations in the peaks' frame.
    lattice : (a, b, c, alpha, beta, gamma)
    min_distance, biso
        As in :func:`search_sites`.
    starts : int
        Fillings searched.
    max_scans : int, optional
        Scans per filling; default as in :func:`search_sites`.

    Returns
    -------
    list of (frac (n, 3), elements, heights, Rwp)
        Every atom of the orbits each filling ended on (distinct ends,
        lowest Rwp first: a filling whose free coordinates are off in
        the map can end higher and refine lowest); empty when no filling
        of the counts exists.
    """
    from diffpy_mlsolve.atoms import _lattice_matrix, contact_limits

    natoms = int(sum(contents.values()))
    pool_size = min(len(peaks), POOL_PER_ATOM * natoms + 24)
    orbits = orbit_pool(
        np.asarray(peaks.frac, float)[:pool_size],
        rotations,
        translations,
        lattice,
        snap=0.6 * min_distance,
    )
    height = np.asarray(peaks.height, float)[:pool_size]
    matrix = _lattice_matrix(lattice)
    keep, reps, self_dist = [], [], []
    for k, orb in enumerate(orbits):
        own = _min_distance(orb[:1], orb[1:], matrix)
        if len(orb) > natoms or own < min_distance:
            continue
        if reps and _min_distance(orb[:1], np.vstack(reps), matrix) < 0.05:
            continue  # the orbit of a higher peak
        keep.append(k)
        reps.append(orb)
        self_dist.append(own)
    if not keep:
        return []
    orbits = [orbits[k] for k in keep]
    height = height[keep]
    self_dist = np.array(self_dist)
    limit = contact_limits(contents, min_distance)
    mult = np.array([len(o) for o in orbits])
    dist = np.array(
        [[_min_distance(a[:1], b, matrix) for b in orbits] for a in orbits]
    )
    # S_k(h) = Σ_j exp(2πi h·x_j) over orbit k
    images = np.vstack(orbits)
    owner = np.repeat(np.arange(len(orbits)), mult)
    phase = np.exp(2j * np.pi * (scorer.hkl @ images.T))
    orbit_sum = np.zeros((len(scorer.hkl), len(orbits)), complex)
    np.add.at(orbit_sum.T, owner, phase.T)
    fills = _fillings(
        mult, height, contents, heights, dist, self_dist, limit, starts
    )
    if not fills:
        return []
    if max_scans is None:
        max_scans = max(MIN_SCANS, SCANS_PER_ATOM * len(fills[0][0]))
    ends = []  # (Rwp, orbits, elements) of each distinct end
    for at0, elements0 in fills:
        at, elements = list(at0), list(elements0)
        scans, b = [0], None
        for _ in range(3):  # the overall B refitted to the orbits found
            r_now, b_now = scorer.best_b(
                np.vstack([orbits[k] for k in at]),
                [e for e, k in zip(elements, at) for _ in range(mult[k])],
                biso,
            )
            if b_now == b:
                break
            b = b_now
            table = {
                e: scorer.form_factor(e, b)[:, None] * orbit_sum
                for e in set(elements)
            }
            f = sum(table[e][:, k] for e, k in zip(elements, at))
            at, f, r_now = _climb(
                scorer,
                table,
                dist,
                at,
                elements,
                f,
                r_now,
                scans,
                limit,
                max_scans,
                mult=mult,
                self_dist=self_dist,
            )
        key = sorted(zip(at, elements))
        if all(key != sorted(zip(a, e)) for _, a, e in ends):
            ends.append((r_now, list(at), list(elements)))
    out = []
    for r, at, elements in sorted(ends, key=lambda t: t[0]):
        frac = np.vstack([orbits[k] for k in at])
        els = [e for e, k in zip(elements, at) for _ in range(mult[k])]
        hts = np.concatenate([np.full(mult[k], height[k]) for k in at])
        out.append((np.mod(frac, 1.0), els, hts, float(r)))
    return out


def _min_distance(a, b, matrix) -> float:
    """Shortest periodic distance (Å) between points ``a`` and ``b``."""
    from diffpy_mlsolve.atoms import _pair_distances

    if len(a) == 0 or len(b) == 0:
        return math.inf
    return float(_pair_distances(a, matrix, b).min())


def _fillings(mult, height, contents, heights, dist, self_dist, limit, count):
    """Up to ``count`` ways to fill every element's count with orbits
    (pool indices, elements), each with other multiplicities per
    element; orbits whose height fits the element's best first, none
    closer than ``limit[e1][e2]`` to another (``self_dist``: each
    orbit's shortest distance between its own images)."""
    order = sorted(contents, key=lambda e: -heights[e])
    # one common scale: the highest atoms' heights against the heaviest
    # elements' (as in the height-based assignment)
    atom_h = np.sort(np.repeat(height, mult))[::-1]
    slot_h = np.sort(
        [heights[e] for e in contents for _ in range(contents[e])]
    )[::-1]
    n = min(len(atom_h), len(slot_h))
    scale = float(np.median(np.log(atom_h[:n]) - np.log(slot_h[:n])))
    prefer = {
        e: list(
            np.argsort(
                np.abs(np.log(height) - np.log(heights[e]) - scale),
                kind="stable",
            )
        )
        for e in order
    }
    # a depth-first search of at most _FILL_STEPS steps
    found, signatures, budget = [], set(), [_FILL_STEPS]

    def fill(ei, chosen, elements):
        if len(found) >= count or budget[0] <= 0:
            return
        if ei == len(order):
            sig = tuple(
                tuple(
                    sorted(
                        mult[k] for k, e in zip(chosen, elements) if e == el
                    )
                )
                for el in order
            )
            if sig not in signatures:
                signatures.add(sig)
                found.append((list(chosen), list(elements)))
            return
        el = order[ei]

        def pick(need, start, picked):
            if len(found) >= count or budget[0] <= 0:
                return
            budget[0] -= 1
            if need == 0:
                fill(ei + 1, chosen + picked, elements + [el] * len(picked))
                return
            cands = prefer[el]
            for j in range(start, len(cands)):
                k = cands[j]
                if mult[k] > need or k in chosen or k in picked:
                    continue
                if self_dist[k] < limit[el][el] or any(
                    dist[k, t] < limit[el][e]
                    for t, e in zip(
                        chosen + picked, elements + [el] * len(picked)
                    )
                ):
                    continue
                pick(need - int(mult[k]), j + 1, picked + [k])
                if len(found) >= count:
                    return

        pick(int(contents[el]), 0, [])

    fill(0, [], [])
    return found


def _orbits(sym, tol: float = 1e-3):
    """For each asymmetric-unit site: the operations giving its distinct
    images, and the projector onto the displacements its site symmetry
    allows."""
    out = []
    for x in np.asarray(sym.frac, float):
        ops, images, fixed = [], [], []
        for k, (rot, tr) in enumerate(zip(sym.rotations, sym.translations)):
            y = np.mod(rot @ x + tr, 1.0)
            if np.all(np.abs((y - x + 0.5) % 1.0 - 0.5) < tol):
                fixed.append(rot)
            if not any(
                np.all(np.abs((y - p + 0.5) % 1.0 - 0.5) < tol) for p in images
            ):
                images.append(y)
                ops.append(k)
        out.append((ops, np.mean(np.array(fixed, float), 0)))
    return out


def refine_positions(
    scorer: ProfileScorer, sym, steps: int = 20, min_distance: float = 0.9
):
    """The asymmetric unit's coordinates refined against the profile Rwp
    within the space group (each site kept on its Wyckoff position), with
    one overall B; L-BFGS from the given sites.

    Two atoms closer than their limit (``min_distance`` and
    :data:`~diffpy_mlsolve.atoms.CONTACT_FLOOR` times the sum of their
    atomic radii) add :data:`REPULSION` Σ (1 - d/limit)^2 to the figure
    minimised, and a step is kept only if it lowers that sum.

    The atoms stay in whole orbits of the group, so the structure
    factors are computed at one reflection of each set the group's
    rotations relate
    (:func:`~diffpy_mlsolve.physics.reflections.equivalent_reflections`),
    counted as often as the set has members in each group of the data.

    Returns
    -------
    (SymmetrizedStructure, Rwp) : the refined structure, or ``sym``
    itself when refining did not lower the profile Rwp (repulsion
    included).
    """
    import dataclasses

    import torch

    from diffpy_mlsolve.physics.reflections import (
        equivalent_reflections,
        reflections_within,
    )

    orbits = _orbits(sym)
    rot = torch.as_tensor(np.asarray(sym.rotations, float))
    tr = torch.as_tensor(np.asarray(sym.translations, float))
    site = [a for a, (ops, _) in enumerate(orbits) for _ in ops]
    op = [k for ops, _ in orbits for k in ops]
    proj = torch.as_tensor(np.stack([p for _, p in orbits]))
    x0 = torch.as_tensor(np.asarray(sym.frac, float))
    cell = torch.as_tensor(np.asarray(sym.lattice, float))[None]
    dmax = float(scorer.reflections.dstar_max)
    hkl, dstar, mask = reflections_within(cell, dmax)
    keep = mask[0]
    hkl, ds = hkl[keep].to(torch.float64), dstar[0][keep]
    groups = scorer.match_groups(ds.numpy())
    hit = groups >= 0
    # atoms in whole orbits have equal |F|^2 at reflections the group's
    # rotations relate: F at one of each set, each set's reflections
    # summed into their groups (a tetragonal cell's: an 8th of them)
    first, inverse = equivalent_reflections(hkl[hit].numpy(), rot.numpy())
    pairs, count = np.unique(
        np.stack([groups[hit], inverse]), axis=1, return_counts=True
    )
    hkl, ds = hkl[hit][first], ds[hit][first]
    gidx, uidx = torch.as_tensor(pairs[0]), torch.as_tensor(pairs[1])
    count = torch.as_tensor(count, dtype=torch.float64)
    s2 = ds**2 / 4
    f0 = torch.as_tensor(
        np.stack(
            [
                scorer.form_factor_at(
                    sym.elements[a], s2.numpy(), float(sym.biso[a])
                )
                for a in site
            ],
            1,
        )
    )
    rot_s, tr_s = rot[op], tr[op]
    site_t = torch.as_tensor(site)
    clash = _repulsion(sym, site, min_distance)

    def cell_of(x):
        return torch.einsum("nij,nj->ni", rot_s, x[site_t]) + tr_s

    with torch.no_grad():
        start = scorer.rwp(sym.to_crystal())
        start_all = start + float(clash(cell_of(x0)))
    u = torch.zeros_like(x0, requires_grad=True)
    db = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u, db], max_iter=steps, line_search_fn="strong_wolfe"
    )
    rwp_t = scorer.torch_rwp()

    def rwp():
        x = x0 + torch.einsum("aij,aj->ai", proj, u)
        pos = cell_of(x)
        phase = 2 * math.pi * (hkl @ pos.T)
        amp = f0 * torch.exp(-db * s2)[:, None]
        re = (amp * torch.cos(phase)).sum(1)
        im = (amp * torch.sin(phase)).sum(1)
        g = torch.zeros(scorer.ngroups, dtype=torch.float64)
        g = g.index_add(0, gidx, count * (re**2 + im**2)[uidx])
        return rwp_t(g) + clash(pos)

    def closure():
        opt.zero_grad()
        r = rwp()
        r.backward()
        return r

    try:
        opt.step(closure)
    except (RuntimeError, IndexError, ValueError):
        # torch's strong-Wolfe line search can fail (an IndexError in
        # torch 2.13 on a cubic Laves candidate): keep the start
        return sym, start
    with torch.no_grad():
        x = np.mod((x0 + torch.einsum("aij,aj->ai", proj, u)).numpy(), 1.0)
        if not np.all(np.isfinite(x)):
            return sym, start
        new = dataclasses.replace(sym, frac=x)
        end = scorer.rwp(new.to_crystal())
        end_all = end + float(clash(cell_of(torch.as_tensor(x))))
    if not end_all < start_all:
        return sym, start
    return new, end


def _repulsion(sym, site, min_distance):
    """A function of the cell's atoms (fractional, one row per image of
    the asymmetric unit, ``site`` giving each one's site) to
    :data:`REPULSION` Σ (1 - d/limit)^2 over the pairs closer than their
    limit (:func:`~diffpy_mlsolve.atoms.contact_limits`)."""
    import torch

    from diffpy_mlsolve.atoms import _lattice_matrix, contact_limits

    elements = [sym.elements[a] for a in site]
    limit = contact_limits(elements, min_distance)
    n = len(elements)
    i, j = np.triu_indices(n, 1)
    lim = torch.as_tensor(
        [limit[elements[a]][elements[b]] for a, b in zip(i, j)]
    )
    i, j = torch.as_tensor(i), torch.as_tensor(j)
    matrix = torch.as_tensor(_lattice_matrix(sym.lattice))
    shifts = torch.as_tensor(
        [
            [a, b, c]
            for a in (-1, 0, 1)
            for b in (-1, 0, 1)
            for c in (-1, 0, 1)
        ],
        dtype=torch.float64,
    )

    def clash(pos):
        if len(lim) == 0:
            return torch.zeros((), dtype=torch.float64)
        d = pos[i] - pos[j]
        d = d - torch.round(d)
        cart = (d[:, None, :] + shifts[None]) @ matrix
        dist = torch.sqrt((cart**2).sum(-1) + 1e-12).min(-1).values
        return REPULSION * (torch.relu(1 - dist / lim) ** 2).sum()

    return clash
