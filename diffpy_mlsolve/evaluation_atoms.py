"""Atom-level evaluation of the solver: ``mlsolve evaluate --atoms``.

For each structure of a table: a realistic pattern is simulated
(:func:`~diffpy_mlsolve.data.conditions.sample_conditions`, seeded per
structure), the solver gets the pattern, the reduced formula and the
conventional cell (never the structure), and its ranked candidates are
matched to the truth with pymatgen's StructureMatcher at the issue's
tolerances (stol 0.5, angle_tol 10°, ltol 0.3) and at pymatgen's defaults
(0.3, 5°, 0.2).  Reported: top-1 and top-5 match rates, the mean RMS
distance of matches, the fraction whose best candidate has the right
space group, the median R factor (refined Rwp with ``refine``, else the
quick pattern R factor), seconds per structure, and the control: the same
solve fed the next structure's pattern, matched to this structure.

With ``input="pdf"`` each structure is solved from the G(r) of spherical
nanoparticles of the given diameters instead, and the blocks are also
broken down by diameter, with the fitted (and refined) particle diameter
against the true one.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["MATCHERS", "evaluate_atoms", "match_candidates"]

# name -> StructureMatcher settings
MATCHERS = {
    "loose": dict(stol=0.5, angle_tol=10, ltol=0.3),
    "default": dict(stol=0.3, angle_tol=5, ltol=0.2),
}


def _matcher(name):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHERS[name])


def match_candidates(candidates, truth, name="loose", top=5) -> dict:
    """Match the first ``top`` usable candidates to ``truth``.

    Returns
    -------
    dict
        ``top1`` and ``topk`` (bool), ``rms`` of the first match (Å,
        normalised as pymatgen's) or None, ``rank`` of the first match.
    """
    matcher = _matcher(name)
    usable = [c for c in candidates if c.failed is None][:top]
    for i, cand in enumerate(usable):
        pmg = cand.to_pymatgen()
        if matcher.fit(pmg, truth):
            rms = matcher.get_rms_dist(pmg, truth)
            return {
                "top1": i == 0,
                "topk": True,
                "rms": None if rms is None else float(rms[0]),
                "rank": i + 1,
            }
    return {"top1": False, "topk": False, "rms": None, "rank": None}


def _pattern(record, seed, index):
    from diffpy_mlsolve.data.conditions import sample_conditions
    from diffpy_mlsolve.simulate import simulate_pxrd

    rng = np.random.default_rng([int(seed), 7, int(index)])
    cond = sample_conditions(rng, "realistic")
    return simulate_pxrd(record.crystal, **cond.simulate_kwargs())


def _nano_pdf(record, seed, index, diameter_nm):
    """A nanoparticle G(r) as an instrument gives it: r 0-30 Å, Qmax
    18-26 Å^-1, Qdamp 0.02-0.05, Qbroad 0-0.01 Å^-1, Gaussian noise of
    0.5-1.5 % of max |G| (seeded per structure and size)."""
    from diffpy_mlsolve.pattern import Pattern
    from diffpy_mlsolve.simulate import simulate_pdf

    rng = np.random.default_rng(
        [int(seed), 11, int(index), int(round(10 * diameter_nm))]
    )
    qmax = float(rng.uniform(18, 26))
    gr = simulate_pdf(
        record.crystal,
        rmax=30.0,
        qmax=qmax,
        qdamp=float(rng.uniform(0.02, 0.05)),
        qbroad=float(rng.uniform(0.0, 0.01)),
        diameter=10.0 * float(diameter_nm),
    )
    g = np.asarray(gr.intensity, float)
    g = g + rng.normal(0, rng.uniform(0.005, 0.015) * np.abs(g).max(), g.size)
    meta = dict(gr.metadata)
    return Pattern.from_arrays(gr.x, g, xtype="r", metadata=meta)


def _solve(solver, pattern, record, options):
    """The SolveResult, or the error of the data that stopped it (a
    long evaluation goes on)."""
    from diffpy_mlsolve.errors import MLSolveError, ModelNotAvailableError

    lattice = tuple(float(v) for v in record.crystal.lattice)
    try:
        return solver.solve(
            pattern,
            record.formula,
            lattice,
            **options,
        )
    except ModelNotAvailableError:
        raise
    except MLSolveError as err:
        return err


def _diameters(res) -> dict:
    """The particle diameter (nm) the solve fitted and the refiner
    refined, where there are any."""
    out = {}
    fit = (res.settings.get("pdf_fit") or {}).get("diameter")
    out["diameter_fit_nm"] = None if fit is None else fit / 10
    best = next((c for c in res.candidates if c.failed is None), None)
    ref = getattr(best, "refinement", None)
    d = None if ref is None else ref.settings.get("diameter")
    out["diameter_refined_nm"] = None if d is None else d / 10
    return out


def evaluate_atoms(
    structures,
    *,
    model=None,
    systems=None,
    limit=None,
    skip=0,
    seed=0,
    n_candidates=5,
    refine=None,
    phasing="flip",
    map_groups=None,
    centring=None,
    site_search=True,
    control=True,
    device="cpu",
    progress=True,
    input="pxrd",
    diameters=(2.0, 3.0, 5.0),
    refine_top=None,
    on_row=None,
) -> dict:
    """Solve every structure of a table from its simulated pattern.

    Parameters
    ----------
    structures : path
        A table with ``material_id`` and ``cif`` (or a CIF folder).
    model : path, optional
        A checkpoint folder; default the shipped model.
    systems, limit : filters of the source.
    skip : int
        Leave out the first ``skip`` structures (of the ``limit``
        selected: ``limit=7, skip=4`` solves the 5th-7th); the others
        keep the
        data they have in the whole run (each structure's measurement
        conditions are seeded by its place in the table), so one
        evaluation can be split over processes.
    seed : int
        Seeds the measurement conditions and the latent samples.
    n_candidates : int
        Candidates per solve (top-k uses them all).
    refine : str, optional
        A refiner ("rietveld") to refine and rank every candidate.
    phasing : {"flip", "flip-random", None}
        The solver's phasing (see ``CrystalNetSolver.solve``).
    map_groups : int, optional
        Space groups of each flipped map flipped again in (the solver's
        ``map_groups``; default the solver's default).
    centring : {None, "auto", "F", "I", "C", "A", "B", "R"}
        The solver's ``centring``: extinctions imposed before flipping.
    site_search : bool
        The solver's ``site_search``: sites chosen among the density's
        peaks by the fit, candidates ranked by the profile Rwp.
    control : bool
        Also solve each structure with the next one's pattern.
    input : {"pxrd", "pdf"}
        Solve from a realistic powder pattern, or from the G(r) of a
        spherical nanoparticle of each of ``diameters`` (nm).
    diameters : sequence of float
        Particle diameters (nm) for ``input="pdf"``.
    refine_top : int, optional
        With ``refine``: refine only the solver's best ``refine_top``
        candidates (default all).
    on_row : callable, optional
        Called with the rows so far (and the number of solves in all)
        after each solve, e.g. to keep a partial report of a long run.

    Returns
    -------
    dict
        The ``atoms`` section of the evaluation report and
        ``per_structure`` rows (see DESIGN.md).
    """
    from pymatgen.core import Composition, Structure
    from tqdm import tqdm

    from diffpy_mlsolve.data.sources import open_source
    from diffpy_mlsolve.model.predict import default_model
    from diffpy_mlsolve.plugins import get_solver
    from diffpy_mlsolve.solver import _versions
    from diffpy_mlsolve.structures import to_pymatgen

    if input not in ("pxrd", "pdf"):
        raise ValueError(f"input must be 'pxrd' or 'pdf', got {input!r}.")
    solver = get_solver("crystalnet", device=device, weights=model)
    records = list(open_source(structures, systems=systems, limit=limit))
    n = len(records)
    if int(skip) >= n:
        from diffpy_mlsolve.errors import StructureError

        raise StructureError(
            f"skip={skip} leaves none of the {n} structures selected "
            f"(limit={limit} counts from the table's start, before the "
            "skip): lower skip or raise limit."
        )
    control = bool(control) and n > 1
    sizes = [None] if input == "pxrd" else [float(d) for d in diameters]
    jobs = [(i, d) for i in range(int(skip), n) for d in sizes]

    options = dict(
        n_candidates=n_candidates, refine=refine, seed=seed, phasing=phasing
    )
    if map_groups is not None:
        options["map_groups"] = int(map_groups)
    if centring is not None:
        options["centring"] = centring
    if not site_search:
        options["site_search"] = False
    if refine_top is not None:
        options["refine_top"] = int(refine_top)

    def data(i, d):
        if d is None:
            return _pattern(records[i], seed, i)
        return _nano_pdf(records[i], seed, i, d)

    rows, seconds = [], []
    for i, size in tqdm(jobs, disable=not progress):
        rec = records[i]
        truth = to_pymatgen(rec.crystal)
        truth = Structure.from_sites(truth.sites)  # plain species
        row = {
            "material_id": rec.id,
            "crystal_system": rec.crystal_system,
            "spacegroup": int(rec.spacegroup),
            "formula": rec.formula,
            "natoms": int(rec.crystal.natoms),
        }
        if size is not None:
            row["diameter_nm"] = size
        t0 = time.perf_counter()
        res = _solve(solver, data(i, size), rec, options)
        seconds.append(time.perf_counter() - t0)
        row["seconds"] = round(seconds[-1], 1)
        if isinstance(res, Exception):
            row["error"] = str(res)
            cands = ()
        else:
            cands = res.candidates
            row["centring"] = res.settings.get("centring")
            if size is not None:
                row.update(_diameters(res))
        for name in MATCHERS:
            m = match_candidates(cands, truth, name, n_candidates)
            suffix = "" if name == "loose" else "_default"
            row[f"match_top1{suffix}"] = m["top1"]
            row[f"match_top{n_candidates}{suffix}"] = m["topk"]
            if name == "loose":
                row["match_rms"] = m["rms"]
                row["match_rank"] = m["rank"]
        best = next((c for c in cands if c.failed is None), None)
        row["failed_candidates"] = sum(c.failed is not None for c in cands)
        if best is not None:
            row["spacegroup_found"] = (
                best.symmetry.number if best.symmetry else None
            )
            row["right_spacegroup"] = (
                row["spacegroup_found"] == row["spacegroup"]
            )
            row["rwp"] = best.rwp
            row["pattern_rfactor"] = best.pattern_rfactor
            row["profile_rwp"] = best.info.get("profile_rwp")
            row["profile_rwp_floor"] = best.info.get("profile_rwp_floor")
            row["sites_from"] = best.info.get("sites_from")
            # formula units per cell found and true (the solver is given
            # the reduced formula only)
            per_formula = Composition(rec.formula).num_atoms
            row["formula_units_found"] = round(
                len(best.to_pymatgen()) / per_formula, 3
            )
            row["formula_units_true"] = round(row["natoms"] / per_formula, 3)
            row["right_formula_units"] = (
                row["formula_units_found"] == row["formula_units_true"]
            )
        else:
            row["right_spacegroup"] = False
        if control:
            j = (i + 1) % n
            wrong = _solve(solver, data(j, size), rec, options)
            wrong = () if isinstance(wrong, Exception) else wrong.candidates
            row["control_match_top1"] = match_candidates(
                wrong, truth, "loose", n_candidates
            )["top1"]
        rows.append(row)
        if on_row is not None:
            on_row(rows, len(jobs))
    summary = _summary(rows, n_candidates, seconds, control, refine, phasing)
    summary["map_groups"] = options.get("map_groups", "default")
    summary["centring"] = centring
    summary["site_search"] = bool(site_search)
    summary["input"] = input
    summary["settings"] = {
        "structures": str(structures),
        "systems": systems,
        "limit": limit,
        "skip": int(skip),
        "seed": seed,
        "model": str(
            model
            if model is not None
            else default_model("r" if input == "pdf" else "tth")
        ),
        "n_candidates": n_candidates,
        "refine_top": refine_top,
        "diameters_nm": None if input == "pxrd" else sizes,
        "device": str(device),
        "versions": _versions(),
    }
    if input == "pdf":
        summary["by_diameter"] = {
            f"{d:g} nm": _diameter_block(
                [r for r in rows if r["diameter_nm"] == d], n_candidates
            )
            for d in sizes
        }
    return {"atoms": summary, "per_structure": rows}


def _diameter_block(rows, k) -> dict:
    """The match block of one particle size, with how far the fitted and
    refined diameters are from the true one (relative, median)."""
    out = _block(rows, k, any("control_match_top1" in r for r in rows))
    for key in ("diameter_fit_nm", "diameter_refined_nm"):
        err = [
            abs(r[key] / r["diameter_nm"] - 1)
            for r in rows
            if r.get(key) is not None
        ]
        name = key.replace("_nm", "_relative_error_median")
        out[name] = float(np.median(err)) if err else None
        out[key.replace("_nm", "_within_10pct")] = (
            float(np.mean([e <= 0.1 for e in err])) if err else None
        )
    return out


def _rate(rows, key):
    vals = [bool(r.get(key)) for r in rows]
    return float(np.mean(vals)) if vals else None


def _block(rows, k, control):
    rms = [r["match_rms"] for r in rows if r.get("match_rms") is not None]
    rfac = [
        r["rwp"] if r.get("rwp") is not None else r.get("pattern_rfactor")
        for r in rows
    ]
    rfac = [v for v in rfac if v is not None]
    out = {
        "n": len(rows),
        "match_top1": _rate(rows, "match_top1"),
        f"match_top{k}": _rate(rows, f"match_top{k}"),
        "match_top1_default": _rate(rows, "match_top1_default"),
        f"match_top{k}_default": _rate(rows, f"match_top{k}_default"),
        "rms_mean": float(np.mean(rms)) if rms else None,
        "right_spacegroup": _rate(rows, "right_spacegroup"),
        "right_formula_units": _rate(rows, "right_formula_units"),
        "rfactor_median": float(np.median(rfac)) if rfac else None,
    }
    if control:
        out["control_match_top1"] = _rate(rows, "control_match_top1")
    return out


def _summary(rows, k, seconds, control, refine, phasing) -> dict:
    out = _block(rows, k, control)
    out["top_k"] = k
    out["refined"] = refine
    out["phasing"] = phasing
    out["seconds_per_structure"] = float(np.mean(seconds)) if seconds else None
    systems = sorted({r["crystal_system"] for r in rows})
    out["by_system"] = {
        s: _block([r for r in rows if r["crystal_system"] == s], k, control)
        for s in systems
    }
    return out


def format_atoms(section: dict) -> str:
    """A few lines of the ``atoms`` section for the terminal."""

    def pct(v):
        return "  -  " if v is None else f"{100 * v:5.1f}%"

    how = section["refined"] or "quick R factor"
    k = section["top_k"]
    lines = [
        f"atoms ({how}), {section['seconds_per_structure']:.1f} "
        "s/structure",
        f"system        n   top1 {'top' + str(k):>6}  top1(def) sg-right "
        "control",
    ]
    blocks = [("all", section)] + list(section["by_system"].items())
    blocks += list(section.get("by_diameter", {}).items())
    for name, b in blocks:
        lines.append(
            f"{name:<12}{b['n']:>3} {pct(b['match_top1'])} "
            f"{pct(b[f'match_top{k}'])} {pct(b['match_top1_default'])}  "
            f"{pct(b['right_spacegroup'])} "
            f"{pct(b.get('control_match_top1'))}"
        )
    return "\n".join(lines)
