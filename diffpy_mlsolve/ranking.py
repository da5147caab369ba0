"""From candidate densities to ranked candidate structures.

Each density becomes atoms and a space group
(:func:`diffpy_mlsolve.atoms.structure_from_density`); a density that
cannot (too few peaks, no way to fill the cell) stays a candidate flagged
with the reason.  Every structure gets the quick pattern R factor
(:func:`diffpy_mlsolve.rfactor.pattern_rfactor`) and, when asked, a
refinement by a refiner plugin.  Given the intensities extracted from
the pattern, sites are chosen among each density's peaks by the fit and
every structure also gets its profile Rwp through the extraction's
profile (:mod:`diffpy_mlsolve.sitesearch`).  The ranking score is the
refined Rwp (else the profile Rwp, else the quick R factor) plus a
penalty for implausibly short contacts; the same structure found twice
ranks after the distinct ones.
"""

from __future__ import annotations

import math

import numpy as np

from diffpy_mlsolve.errors import MLSolveError, StructureError
from diffpy_mlsolve.solver import Candidate

__all__ = [
    "candidates_from_densities",
    "contact_ratio",
    "decorations",
    "rank_candidates",
]

# shortest contact / (sum of atomic radii) below which a penalty applies
PLAUSIBLE_CONTACT = 0.7
# relative R-factor premium of P1 over a group of 48+ operations
SYMMETRY_PREMIUM = 0.1
# element placements tried per candidate (site swaps)
MAX_DECORATIONS = 12
# a quick R factor below which no other placement is tried
GOOD_ENOUGH = 0.1
# formula units (the most likely first, atoms.formula_unit_options) whose
# sites are searched by the fit; the others are scored only
SEARCHED_Z = 2
# cells of more atoms get no P1 site search (the sites by height and the
# orbits of the map's groups are still refined against the profile Rwp):
# of 43 evaluated cells of 36-88 atoms none was solved from a P1 search
# or the sites by height, the largest so solved held 26 (Al12Mo), and the
# search of one density of Yb11(SnBi4)2 (84 atoms) took 24-36 s per Z
SEARCH_MAX_ATOMS = 32
# groups a density shows whose orbits are searched: of the highest
# order whose orbits can hold the cell (of the ORBIT_TIERS highest among
# the ORBIT_LISTED groups of highest order), at most ORBIT_GROUPS, best
# agreement first
ORBIT_GROUPS = 2
ORBIT_TIERS = 3
ORBIT_LISTED = 12
# candidates from Wyckoff orbits (ranking._wyckoff_candidates) at most
WYCKOFF_CANDIDATES = 3
# Z tried by the Wyckoff trials at most (the most likely the volume
# allows first; each costs up to wyckoff.DRAW_BUDGET scored draws)
WYCKOFF_Z = 3
# the Wyckoff trials' Z may be this far (|ln(Z / estimate)|) from the
# volume estimate, ordered by the crystal system's prior: the true Z is
# then among the WYCKOFF_Z first for 98.8 % of every third validation
# structure (917; 98.2 % at atoms.Z_TOLERANCE, 0.3) and 99.2 % of the
# test split (98.5 %); pyrite's estimate is 2.9 for 4
WYCKOFF_Z_TOLERANCE = 0.4
# a candidate of the lattice's crystal system whose profile Rwp is within
# this factor of the extraction's floor makes the Wyckoff candidates
# unneeded.  A powder pattern's: the 20 structures solved in the random
# samples of the test split (seeds 1-3) end at 1.00-1.17 times it (3
# above 1.1), YGe3's wrong Amm2 (from a map's Cm2m orbits) at 1.13,
# where the trials give its Cmcm at 1.10 and win by the symmetry premium
# (the trials of the three solved above 1.1 give the same structure or
# fit worse).
# A G(r)'s (WYCKOFF_FIT_PDF): the first 15 cubic test cells, solved from
# 3 nm G(r)s, end at 0.97-1.65 times it; Ce3IrI3's wrong Im-3m from a
# map's I-43m orbits at 7.3
WYCKOFF_FIT = 1.1
WYCKOFF_FIT_PDF = 2.0
# a Wyckoff trial within this factor of the floor is not annealed further
# (wyckoff_trials' ``fits``): the true structures of the first
# orthorhombic, monoclinic and triclinic test cells, refined from
# trials, end at 1.05-1.2 times it (CaAu2, Al2O3, SrSeO3, HoNbO4,
# Gd3AuO6, Tl2GeS3); a wrong P-1 trial of Gd3AuO6 at 1.8
ANNEAL_FIT = 1.3
# least agreement of a group of the pattern's centring with the map
# averaged over its translations (the data, not the map, show the
# centring: on KOsF6's network maps R-3 and R-3m agree to 0.42)
CENTRED_THRESHOLD = 0.3


def contact_ratio(structure) -> float:
    """The shortest interatomic distance over the sum of the two atoms'
    radii (pymatgen's atomic radii); inf for one atom."""
    from diffpy_mlsolve.atoms import (
        _lattice_matrix,
        _pair_distances,
        atomic_radius,
    )
    from diffpy_mlsolve.structures import _z_to_symbol, as_crystal

    c = as_crystal(structure, standardize=False)
    if c.natoms < 2:
        return math.inf
    radii = np.array([atomic_radius(_z_to_symbol(z)) for z in c.numbers])
    dist = _pair_distances(c.frac, _lattice_matrix(c.lattice))
    # an atom's distance to its own images
    np.fill_diagonal(dist, min(c.lattice[:3]))
    return float((dist / (radii[:, None] + radii[None, :])).min())


def _score(cand: Candidate) -> float:
    """R (refined Rwp, else the profile Rwp where the candidates have
    one, else the quick R factor), up to 10 % worse for
    low symmetry (P1 pays 10 %, 48 operations or more nothing), so a
    lower group must fit clearly better to win; plus the short-contact
    penalty."""
    r = cand.rwp
    if r is None:
        r = cand.info.get("profile_rwp", cand.pattern_rfactor)
    r = 1.0 if r is None or not math.isfinite(r) else r
    if cand.symmetry is not None:
        ops = len(cand.symmetry.rotations)
    else:
        ops = int(cand.info.get("symmetry_ops", 1))
    r = _premium(r, ops)
    ratio = cand.info.get("contact_ratio", math.inf)
    return r + _contact_penalty(ratio)


def _contact_penalty(ratio: float) -> float:
    """How far a structure's :func:`contact_ratio` is below
    :data:`PLAUSIBLE_CONTACT` (0 at or above it)."""
    return max(0.0, PLAUSIBLE_CONTACT - ratio)


def _same(a, b) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)
    return bool(matcher.fit(a.to_pymatgen(), b.to_pymatgen()))


def rank_candidates(candidates) -> tuple[Candidate, ...]:
    """Ranks 1, 2, ...: usable candidates by score (refined ones before
    those whose refinement failed), repeats of an earlier structure after
    the distinct ones, failed candidates last."""
    usable = [c for c in candidates if c.failed is None]
    failed = [c for c in candidates if c.failed is not None]
    # a refined Rwp and a quick R factor are not on one scale: when some
    # candidates were refined, those whose refinement failed rank after
    refined = any(c.rwp is not None for c in usable)
    usable.sort(key=lambda c: (refined and c.rwp is None, _score(c)))
    distinct, repeats = [], []
    for cand in usable:
        same = next((d for d in distinct if _same(cand, d)), None)
        if same is None:
            distinct.append(cand)
        else:
            repeats.append((cand, same))
    ordered = [(c, None) for c in distinct] + repeats
    ordered += [(c, None) for c in failed]
    out = []
    for rank, (cand, same) in enumerate(ordered, start=1):
        info = dict(cand.info)
        info.setdefault("density_sample", cand.rank)
        if same is not None:
            info["same_as_sample"] = same.rank
        out.append(_replace(cand, rank=rank, info=info))
    return tuple(out)


def _replace(cand: Candidate, **changes) -> Candidate:
    from dataclasses import replace

    return replace(cand, **changes)


def _rfactor(sym, pattern):
    """(R, None, profile) or (None, why it cannot be scored, None)."""
    from diffpy_mlsolve.rfactor import pattern_rfactor

    try:
        r, fit = pattern_rfactor(sym.to_crystal(), pattern, return_curves=True)
    except MLSolveError as err:  # no wavelength, no qmax, ...
        return None, str(err), None
    return r, None, fit["profile"]


def decorations(sym, limit: int = MAX_DECORATIONS):
    """Other ways to put the same elements on the same sites.

    Each asymmetric-unit site (an orbit of ``multiplicity`` atoms) gets an
    element so that every element keeps its count; yields
    (elements tuple) for every such assignment but the given one, at most
    ``limit``.
    """
    mult = [int(w[:-1]) for w in sym.wyckoff]
    need: dict[str, int] = {}
    for el, m in zip(sym.elements, mult):
        need[el] = need.get(el, 0) + m
    kinds = sorted(need)
    out: list[tuple] = []

    def place(i, left, chosen):
        if len(out) >= limit + 1:
            return
        if i == len(mult):
            out.append(tuple(chosen))
            return
        for el in kinds:
            if left[el] >= mult[i]:
                left[el] -= mult[i]
                place(i + 1, left, chosen + [el])
                left[el] += mult[i]

    place(0, dict(need), [])
    return [d for d in out if d != tuple(sym.elements)][:limit]


def _best_decoration(sym, pattern, rfac, profile):
    """The element placement on ``sym``'s sites that fits the pattern
    best (the quick R factor with the profile of the first fit)."""
    from dataclasses import replace

    from diffpy_mlsolve.rfactor import pattern_rfactor
    from diffpy_mlsolve.symmetry import find_symmetry

    best = (rfac, sym)
    for elements in decorations(sym):
        other = replace(sym, elements=elements)
        r = pattern_rfactor(other.to_crystal(), pattern, **profile)
        if r < best[0]:
            best = (r, other)
    if best[1] is sym:
        return rfac, sym, 0
    # a new placement may have a higher symmetry; its R factor with the
    # profile fitted afresh
    try:
        found = find_symmetry(best[1].to_crystal(), symprec=(1e-3, 0.01))
    except StructureError:  # e.g. its own standard cell is smaller
        found = best[1]
    return pattern_rfactor(found.to_crystal(), pattern), found, 1


def _candidate(
    i,
    density,
    pattern,
    composition,
    formula_units,
    swaps,
    kw,
    scorer=None,
    centring=None,
):
    """One candidate from one density.

    With Z unknown, each plausible Z
    (:func:`~diffpy_mlsolve.atoms.formula_unit_options`: near the
    atomic-volume estimate or the density's electron count) is tried and
    the best R factor (the profile Rwp with a ``scorer``, else the quick
    R factor; plus the short-contact penalty) wins.  With ``swaps`` the
    elements are also permuted over the sites found (counts kept) and the
    best-fitting placement kept: peak heights alone can confuse elements
    of similar electron count.

    With a ``scorer`` the sites of the :data:`SEARCHED_Z` most likely Z
    are chosen among the density's peaks by the fit
    (:func:`diffpy_mlsolve.sitesearch.search_sites`, which also swaps
    elements, so no placements are tried; in cells of at most
    :data:`SEARCH_MAX_ATOMS` atoms) and, symmetrised, refined
    against the profile Rwp (:func:`_polished`), as are the sites by
    height and the sites as whole orbits of the groups the density shows
    (:func:`_map_groups`, :func:`~diffpy_mlsolve.atoms.
    structures_in_group`; also those of the pattern's lattice
    ``centring`` when the density shows none; the highest order whose
    orbits can hold the cell, of the :data:`ORBIT_TIERS` highest), and
    the best (symmetry
    premium included) is kept; the quick R factor is computed for the
    structure kept only."""
    from diffpy_mlsolve.atoms import (
        formula_unit_options,
        structure_from_density,
    )
    from diffpy_mlsolve.volumes import formula_units_from_volume

    electrons = float(np.mean(density.values) * density.volume)
    if formula_units is None:
        options = formula_unit_options(
            composition, density.volume, electrons, spread=2
        )
        options = options or [None]  # cell_contents then says why
    else:
        options = [formula_units]
    tried, errors, groups = [], [], {}
    for nth, z in enumerate(options):
        # the fit chooses and refines the sites of the most likely Z only
        scored = scorer if nth < SEARCHED_Z else None
        search = scored if _searched(composition, density, z) else None
        found = []  # (sym, sites, how they were chosen)
        try:
            sym, sites = structure_from_density(
                density, composition, formula_units=z, scorer=search, **kw
            )
            found.append(
                (sym, sites, "peak heights" if search is None else "search")
            )
            if search is not None:
                # the sites by height too: a search in P1 can break the
                # symmetry a map showed (TbAl3's R-3m), for a P1 overfit
                sym, sites = structure_from_density(
                    density, composition, formula_units=z, **kw
                )
                found.append((sym, sites, "peak heights"))
        except StructureError as err:
            errors.append(str(err))
        if scored is not None:
            found += _orbit_structures(
                density, composition, scorer, z, groups, centring, errors, kw
            )
        if not found:
            continue
        if scored is not None:
            # each refined against the profile Rwp; the best fit, symmetry
            # premium included, is kept
            best = None
            for sym, sites, how in found:
                sym, prof = _polished(scorer, sym)
                if best is None or (
                    prof is not None
                    and (
                        best[3] is None
                        or _premium(prof, len(sym.rotations))
                        < _premium(best[3], len(best[0].rotations))
                    )
                ):
                    best = (sym, sites, how, prof)
            sym, sites, how, prof = best
        else:
            sym, sites, how = found[0]
            prof = _profile_rwp(scorer, sym)
        rfac, skipped, swapped = None, None, 0
        if prof is None:  # the quick R factor ranks (and places elements)
            rfac, skipped, profile = _rfactor(sym, pattern)
            if rfac is not None and swaps and rfac > GOOD_ENOUGH:
                rfac, sym, swapped = _best_decoration(
                    sym, pattern, rfac, profile
                )
        ratio = contact_ratio(sym.to_crystal())
        fit = prof if prof is not None else rfac
        score = (1.0 if fit is None else fit) + _contact_penalty(ratio)
        tried.append((score, z, sym, sites, rfac, skipped, swapped, prof, how))
    if not tried:
        return Candidate(rank=i, density=density, failed=" / ".join(errors))
    tried.sort(key=lambda t: t[0])
    _, z, sym, sites, rfac, skipped, swapped, prof, how = tried[0]
    if prof is not None:  # the quick R factor of the one kept, for the record
        rfac, skipped, _ = _rfactor(sym, pattern)
    structure = sym.to_diffpy()
    info = {
        "formula_units_tried": [t[1] for t in tried],
        "formula": "".join(f"{e}{n}" for e, n in sites.contents.items()),
        "electrons_in_density": electrons,
        "formula_units_from_volume": formula_units_from_volume(
            composition, density.volume
        ),
        "peak_height_misfit": sites.misfit,
        "elements_swapped": bool(swapped),
        "sites_from": how,
        "contact_ratio": contact_ratio(structure),
        # the peaks as picked, in the density's own frame (the symmetrised
        # structure is in spglib's standard setting and origin)
        "picked_sites": {
            "elements": list(sites.elements),
            "frac": np.round(np.asarray(sites.frac, float), 5).tolist(),
        },
    }
    if skipped:
        info["pattern_rfactor_skipped"] = skipped
    if prof is not None:
        info["profile_rwp"] = prof
        info["profile_rwp_floor"] = scorer.floor
    meta = density.metadata or {}
    for key in ("latent_rfactor_before", "latent_rfactor_after", "r_flip"):
        if key in meta:
            info[key] = meta[key]
    info["density_from"] = (
        f"charge flipping from {meta.get('start', '?')}"
        if meta.get("phasing")
        else "network"
    )
    return Candidate(
        rank=i,
        structure=structure,
        density=density,
        pattern_rfactor=rfac,
        spacegroup=sym.symbol,
        symmetry=sym,
        info=info,
    )


def _searched(composition, density, z) -> bool:
    """Whether the cell of ``z`` formula units holds at most
    :data:`SEARCH_MAX_ATOMS` atoms (True where its contents cannot be
    known: :func:`~diffpy_mlsolve.atoms.structure_from_density` then
    says why)."""
    from diffpy_mlsolve.atoms import cell_contents

    electrons = float(np.mean(density.values) * density.volume)
    try:
        contents = cell_contents(
            composition, density.volume, electrons=electrons, formula_units=z
        )
    except StructureError:
        return True
    return sum(contents.values()) <= SEARCH_MAX_ATOMS


def _orbit_structures(
    density, composition, scorer, z, cache, centring, errors, kw
) -> list:
    """(sym, sites, how) from whole orbits of the groups the density
    shows (they need no peak per atom): the highest order of
    :data:`ORBIT_TIERS` whose orbits can hold the cell, at most
    :data:`ORBIT_GROUPS` of its groups.  A lower order is searched only
    where the higher's orbits cannot hold the cell (HfZn2's PDF maps show
    Fm-3m, whose orbits cannot; F-43m's give the true Fd-3m).  Each
    group that cannot adds its reason to ``errors``."""
    from diffpy_mlsolve.atoms import structures_in_group

    for tier in range(ORBIT_TIERS):
        found, held = [], 0
        for group in _map_groups(density, cache, centring, tier):
            try:
                found += [
                    (s, t, f"orbits of {group.symbol}")
                    for s, t in structures_in_group(
                        density,
                        composition,
                        group,
                        scorer,
                        formula_units=z,
                        **kw,
                    )
                ]
            except StructureError as err:
                errors.append(str(err))
                continue
            held += 1
            if held == ORBIT_GROUPS:
                break
        if held:
            return found
    return []


def _map_groups(
    density, cache: dict, centring: str | None = None, tier: int = 0
) -> list:
    """The groups of the ``tier``-th highest order (0: the highest) among
    the :data:`ORBIT_LISTED` of highest order the density shows at
    :data:`~diffpy_mlsolve.mapsymmetry.MAP_SYMMETRY_THRESHOLD` (best
    agreement first; on a grid of a multiple of 12), found once per
    density (``cache``).

    With the lattice ``centring`` the pattern's extinctions show (not
    "P"), and no group of that centring among the highest, also the
    groups of that centring of the same tier the map averaged over its
    translations shows at :data:`CENTRED_THRESHOLD`
    (:func:`~diffpy_mlsolve.mapsymmetry.centred_map`): the network's
    maps often miss a centring the intensities show (KOsF6's R), and
    the orbits of such a group put atoms on the translates the map
    lacks."""
    from diffpy_mlsolve.mapsymmetry import (
        centred_map,
        find_map_symmetry,
        resampled,
        symmetry_grid,
    )

    def tiers(found):
        orders = sorted({g.order for g in found}, reverse=True)
        return [[g for g in found if g.order == o] for o in orders]

    if "tiers" not in cache:
        n = symmetry_grid(density.values.shape[0])
        values = resampled(density, n)
        shown = tiers(find_map_symmetry(values, max_groups=ORBIT_LISTED))
        centred = []
        if centring not in (None, "P") and not any(
            g.centring == centring for g in (shown or [[]])[0]
        ):
            centred = tiers(
                find_map_symmetry(
                    centred_map(values, centring),
                    threshold=CENTRED_THRESHOLD,
                    max_groups=ORBIT_LISTED,
                    centring=centring,
                )
            )
        cache["tiers"] = [
            (shown[k] if k < len(shown) else [])
            + (centred[k] if k < len(centred) else [])
            for k in range(max(len(shown), len(centred)))
        ]
    return cache["tiers"][tier] if tier < len(cache["tiers"]) else []


def _profile_rwp(scorer, sym) -> float | None:
    """The profile Rwp of ``sym`` (None without a scorer or outside the
    data's cell)."""
    if scorer is None:
        return None
    try:
        return scorer.rwp(sym.to_crystal())
    except MLSolveError:  # not in the data's cell: the quick R ranks it
        return None


def _premium(r: float, ops: int) -> float:
    """R up to :data:`SYMMETRY_PREMIUM` worse for fewer than 48
    operations."""
    return r * (1 + SYMMETRY_PREMIUM * (1 - min(ops, 48) / 48))


def _polished(scorer, sym):
    """(sym, profile Rwp): the sites refined against the profile Rwp in
    their group; then, if the refined sites show a higher group, refined
    again in it and kept if its Rwp with the symmetry premium is lower
    (noisy sites hide a group from spglib: Y2C's P1 sites refine to
    R-3m).  (sym, None) without a scorer or outside the data's cell."""
    from diffpy_mlsolve.sitesearch import refine_positions
    from diffpy_mlsolve.symmetry import SYMPREC_LADDER, find_symmetry

    if scorer is None:
        return sym, None
    try:
        sym, r = refine_positions(scorer, sym)
    except MLSolveError:  # not in the data's cell: the quick R ranks it
        return sym, None
    try:
        again = find_symmetry(sym.to_crystal(), SYMPREC_LADDER)
    except StructureError:
        return sym, r
    if len(again.rotations) <= len(sym.rotations):
        return sym, r
    try:
        again, r2 = refine_positions(scorer, again)
    except MLSolveError:  # its standard cell is not the data's
        return sym, r
    if _premium(r2, len(again.rotations)) < _premium(r, len(sym.rotations)):
        return again, r2
    return sym, r


def _refined(cand: Candidate, refiner, pattern, settings) -> Candidate:
    from diffpy_mlsolve.symmetry import find_symmetry

    try:
        ref = cand.refine(refiner, pattern, **settings)
    except MLSolveError:
        raise  # bad input: the user must see it
    except Exception as err:  # a refinement that diverged or crashed
        info = dict(cand.info)
        info["refinement_failed"] = f"{type(err).__name__}: {err}"
        return _replace(cand, info=info)
    try:
        sym = find_symmetry(
            ref.structure, symprec=(1e-3, 0.01, 0.05), keep_cell=False
        )
    except StructureError:
        sym = None  # the CIF is then the refined cell's atoms in P1
    info = dict(cand.info)
    if sym is None and cand.symmetry is not None:
        # the refiner kept the group's constraints: rank it as that group
        info["symmetry_ops"] = len(cand.symmetry.rotations)
    info["contact_ratio"] = contact_ratio(ref.structure)
    return _replace(
        cand,
        structure=ref.structure,
        rwp=ref.rwp,
        refinement=ref,
        symmetry=sym,
        spacegroup=sym.symbol if sym is not None else cand.spacegroup,
        info=info,
    )


def candidates_from_densities(
    densities,
    pattern,
    composition,
    *,
    formula_units=None,
    refine=None,
    refine_settings=None,
    refine_top: int | None = None,
    swaps: bool = True,
    reflections=None,
    **kw,
) -> tuple[Candidate, ...]:
    """Ranked candidates from a list of densities.

    Parameters
    ----------
    densities : list of Density
    pattern : Pattern
        The measured data (for the R factor and refinement).
    composition : str or Mapping
    formula_units : int, optional
    refine : str or Refiner, optional
        Refine every usable candidate with this refiner.
    refine_settings : dict, optional
    refine_top : int, optional
        Refine only the best ``refine_top`` candidates by the quick R
        factor (distinct structures first); default all.
    swaps : bool
        Try other placements of the elements on the sites found and keep
        the best-fitting one (:func:`decorations`).
    reflections : Reflections, optional
        Intensities extracted from ``pattern`` in the densities' cell
        (:func:`diffpy_mlsolve.phasing.extract_intensities`): sites are
        then chosen among each density's peaks by the fit, and candidates
        scored by their profile Rwp through the extraction's profile
        (:class:`diffpy_mlsolve.sitesearch.ProfileScorer`; in ``info`` as
        "profile_rwp", with the extraction's own Rwp, its floor, as
        "profile_rwp_floor"); the lattice centring their extinctions
        show (:func:`~diffpy_mlsolve.phasing.find_centring`) adds its
        groups to the orbit search (:func:`_map_groups`); and for a
        cubic cell where no density gave a cubic structure, candidates
        from Wyckoff orbits are added (:func:`_wyckoff_candidates`).
    **kw
        Passed to :func:`~diffpy_mlsolve.atoms.structure_from_density`.
    """
    scorer = centring = None
    if reflections is not None:
        from diffpy_mlsolve.phasing import find_centring
        from diffpy_mlsolve.sitesearch import scorer_for

        scorer = scorer_for(reflections)
        centring = find_centring(reflections)
    cands = [
        _candidate(
            i + 1,
            d,
            pattern,
            composition,
            formula_units,
            swaps,
            kw,
            scorer,
            centring,
        )
        for i, d in enumerate(densities)
    ]
    if scorer is not None and densities:
        cands += _wyckoff_candidates(
            cands,
            densities[0],
            pattern,
            composition,
            formula_units,
            scorer,
            kw.get("min_distance", 0.9),
        )
    if refine is not None:
        if isinstance(refine, str):
            from diffpy_mlsolve.plugins import get_refiner

            refine = get_refiner(refine)
        if refine_top is not None:  # the quick ranking picks which
            cands = list(rank_candidates(cands))
        top = len(cands) if refine_top is None else int(refine_top)
        cands = [
            (
                _refined(c, refine, pattern, dict(refine_settings or {}))
                if c.failed is None and i < top
                else c
            )
            for i, c in enumerate(cands)
        ]
    return rank_candidates(cands)


def _ranked_trial(scorer, sym):
    """(score the ranking uses, the trial refined, its profile Rwp, its
    contact ratio) of a Wyckoff trial: refined in its group
    (:func:`_polished`), scored as :func:`_score` scores candidates (the
    low-symmetry premium, the contact penalty); None where it cannot be
    refined."""
    sym, prof = _polished(scorer, sym)
    if prof is None:
        return None
    ratio = contact_ratio(sym.to_crystal())
    score = _premium(prof, len(sym.rotations)) + _contact_penalty(ratio)
    return score, sym, prof, ratio


def _wyckoff_candidates(
    cands, density, pattern, composition, formula_units, scorer, min_distance
) -> list:
    """Candidates built from Wyckoff orbits of the lattice's groups
    (:func:`~diffpy_mlsolve.wyckoff.wyckoff_trials`; a triclinic cell's
    in P-1), each refined in its group
    (:func:`_polished`), where no density gave a structure of the
    lattice's system that fits (profile Rwp within :data:`WYCKOFF_FIT`
    times the floor, a G(r)'s :data:`WYCKOFF_FIT_PDF`; the maps of large
    cells show no group or a wrong one, and the P1 search overfits): the
    :data:`WYCKOFF_CANDIDATES`
    best distinct, by the score the ranking uses.  The
    :data:`WYCKOFF_Z` most likely Z the volume allows (within
    :data:`WYCKOFF_Z_TOLERANCE`), by the volume and
    the crystal system's prior
    (:func:`~diffpy_mlsolve.atoms.formula_unit_options`), until one
    gives a trial that fits.  Where no trial comes within
    :data:`ANNEAL_FIT` times the floor, the trials of the contents whose
    trials fit best are run again with their best ways annealed (many
    free coordinates defeat random draws)."""
    from diffpy_mlsolve.atoms import cell_contents, formula_unit_options
    from diffpy_mlsolve.sitesearch import PDFScorer
    from diffpy_mlsolve.volumes import formula_units_from_volume
    from diffpy_mlsolve.wyckoff import (
        SYSTEM_GROUPS,
        lattice_system,
        wyckoff_trials,
    )

    lattice = tuple(float(v) for v in density.lattice)
    system = lattice_system(lattice)
    pdf = isinstance(scorer, PDFScorer)
    fits = (WYCKOFF_FIT_PDF if pdf else WYCKOFF_FIT) * scorer.floor
    if any(
        c.symmetry is not None
        and c.symmetry.number in SYSTEM_GROUPS[system]
        and c.info.get("profile_rwp", math.inf) <= fits
        for c in cands
    ):
        return []
    electrons = float(np.mean(density.values) * density.volume)
    if formula_units is None:
        # the hexagonal lattice's trials hold trigonal and hexagonal groups
        systems = (
            ("trigonal", "hexagonal") if system == "hexagonal" else system
        )
        options = formula_unit_options(
            composition,
            density.volume,
            electrons,
            spread=2,
            tolerance=WYCKOFF_Z_TOLERANCE,
            systems=systems,
        )[:WYCKOFF_Z]
    else:
        options = [formula_units]
    found = []  # (score, sym, profile Rwp, contact, group tried, contents)
    tried = []

    def trials(contents, anneal: bool) -> None:
        # every group the extinctions allow, not only the centring
        # find_centring takes: a 3 nm G(r)'s showed F for CaTi4(PdO4)3
        # (Im-3)
        for _, sym, number in wyckoff_trials(
            scorer,
            contents,
            lattice,
            None,
            min_distance=min_distance,
            fits=ANNEAL_FIT * scorer.floor if anneal else None,
        ):
            ranked = _ranked_trial(scorer, sym)
            if ranked is not None:
                found.append((*ranked, number, contents))

    for z in options:
        if any(t[2] <= fits for t in found):
            break
        tried.append(z)
        try:
            contents = cell_contents(
                composition, density.volume, formula_units=z
            )
        except StructureError:
            continue
        trials(contents, anneal=False)
    if found and min(t[2] for t in found) > ANNEAL_FIT * scorer.floor:
        # anneal the contents whose trials fit best only (RuOF4, 48
        # atoms: over 35 minutes annealing three Z)
        trials(min(found, key=lambda t: t[0])[5], anneal=True)
    found.sort(key=lambda t: t[0])
    out, kept = [], []
    for _, sym, prof, ratio, number, contents in found:
        if len(out) == WYCKOFF_CANDIDATES:
            break
        if any(_same(sym, other) for other in kept):
            continue
        kept.append(sym)
        structure = sym.to_diffpy()
        rfac, skipped, _ = _rfactor(sym, pattern)
        info = {
            "formula_units_tried": list(tried),
            "formula": "".join(f"{e}{n}" for e, n in contents.items()),
            "electrons_in_density": electrons,
            "formula_units_from_volume": formula_units_from_volume(
                composition, density.volume
            ),
            "sites_from": f"Wyckoff orbits of group {number}",
            "density_from": "none (Wyckoff orbits of the lattice's groups)",
            "density_sample": None,
            "contact_ratio": ratio,
            "profile_rwp": prof,
            "profile_rwp_floor": scorer.floor,
        }
        if skipped:
            info["pattern_rfactor_skipped"] = skipped
        out.append(
            Candidate(
                rank=len(cands) + len(out) + 1,
                structure=structure,
                pattern_rfactor=rfac,
                spacegroup=sym.symbol,
                symmetry=sym,
                info=info,
            )
        )
    return out
