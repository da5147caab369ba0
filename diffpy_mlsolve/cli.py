"""The ``mlsolve`` command: solve, simulate, train, evaluate, plugins.

Every error diffpy-mlsolve raises on purpose (:class:`MLSolveError`) is
printed as one line, without a traceback, and the command exits with 1;
usage errors exit with 2 (argparse).  Nothing is written when the input
is bad, and an existing output is never overwritten without --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffpy_mlsolve.errors import (
    MLSolveError,
    OutputExistsError,
    PhysicsInputError,
)
from diffpy_mlsolve.version import __version__

__all__ = ["main", "build_parser", "parse_cell"]


def parse_cell(text: str) -> tuple[float, ...]:
    """'a,b,c,alpha,beta,gamma' (Å, degrees) -> six floats."""
    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        vals = ()
    if len(vals) != 6:
        raise argparse.ArgumentTypeError(
            f"--cell needs six numbers a,b,c,alpha,beta,gamma (Å, degrees), "
            f"got {text!r}; e.g. --cell 5.64,5.64,5.64,90,90,90"
        )
    return vals


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two numbers 'start,end', got {text!r}"
        ) from None
    return lo, hi


def _check_new_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise OutputExistsError(
            f"{str(path)!r} exists. Please choose another --out or pass "
            "--force to overwrite it."
        )


# ------------------------------------------------------------ subcommands
def _cmd_solve(args) -> int:
    import diffpy_mlsolve as ms

    out = Path(args.out) if args.out else None
    if out is not None:
        _check_new_output(out, args.force)
    pattern = ms.load_pattern(args.pattern, wavelength=args.wavelength)
    settings = {"device": args.device}
    if args.model:
        settings["weights"] = args.model
    solver = ms.get_solver(args.solver, **settings)
    extra = {}
    if args.refine:
        extra["refine"] = args.refine
    if args.formula_units:
        extra["formula_units"] = args.formula_units
    if args.phasing != "flip":
        extra["phasing"] = None if args.phasing == "none" else args.phasing
    if args.map_groups is not None:
        extra["map_groups"] = args.map_groups
    if args.centring != "none":
        extra["centring"] = args.centring
    if args.no_site_search:
        extra["site_search"] = False
    result = solver.solve(
        pattern,
        composition=args.composition,
        lattice=args.cell,
        n_candidates=args.candidates,
        **extra,
    )
    for cell in result.settings.get("indexed_cells", ()):
        what = cell.get("error") or f"M = {cell['figure_of_merit']:.1f}"
        print(f"indexed cell {cell['bravais']} {cell['lattice']}: {what}")
    for cand in result.candidates:
        print(_describe(cand))
    if out is not None:
        result.write(out, force=args.force)
        print(f"wrote {out}")
    return 0


def _describe(cand) -> str:
    """One line per candidate: group, formula, R factors or the failure."""
    if cand.failed:
        return f"candidate {cand.rank}: failed: {cand.failed}"
    parts = [f"candidate {cand.rank}: {cand.spacegroup or '?'}"]
    formula = cand.info.get("formula")
    if formula:
        parts.append(formula)
    if cand.pattern_rfactor is not None:
        parts.append(f"R(quick) {cand.pattern_rfactor:.3f}")
    if cand.rwp is not None:
        parts.append(f"Rwp(refined) {cand.rwp:.4f}")
    if "refinement_failed" in cand.info:
        parts.append(f"refinement failed: {cand.info['refinement_failed']}")
    if "same_as_sample" in cand.info:
        parts.append("(a repeat)")
    return "  ".join(parts)


def _write_pattern(pattern, path: Path) -> None:
    import numpy as np

    header = [f"xtype = {pattern.xtype}"]
    if pattern.wavelength is not None:
        header.append(f"wavelength = {pattern.wavelength}")
    for key in ("qmax", "qdamp", "qbroad", "diameter"):
        value = pattern.metadata.get(key)
        if value is not None:
            header.append(f"{key} = {value}")
    header.append(f"simulated_by = diffpy-mlsolve {__version__}")
    tmp = path.with_name(path.name + ".tmp")
    np.savetxt(
        tmp,
        np.column_stack([pattern.x, pattern.intensity]),
        header="\n".join(header),
        fmt="%.8g",
    )
    tmp.replace(path)


def _cmd_simulate(args) -> int:
    import diffpy_mlsolve as ms

    out = Path(args.out)
    _check_new_output(out, args.force)
    if args.kind == "pdf":
        pattern = ms.simulate_pdf(
            args.structure,
            rmax=args.rmax,
            qmax=args.qmax,
            qdamp=args.qdamp,
            diameter=args.diameter,
            device=args.device,
        )
    else:
        pattern = ms.simulate_pxrd(
            args.structure,
            wavelength=args.wavelength,
            tth_range=args.tth_range,
            npoints=args.npoints,
            fwhm=args.fwhm,
            eta=args.eta,
            crystallite_size=args.size,
            counts=args.counts,
            seed=args.seed,
            device=args.device,
        )
    _write_pattern(pattern, out)
    print(f"wrote {out} ({pattern.npoints} points, xtype {pattern.xtype})")
    return 0


def _cmd_plugins(args) -> int:
    from diffpy_mlsolve.plugins import available_plugins

    plugins = available_plugins()
    if not plugins:
        print("no plugins found: is diffpy-mlsolve installed (pip -e .)?")
        return 1
    for kind in ("solver", "refiner"):
        print(f"{kind}s:")
        for p in (p for p in plugins if p.kind == kind):
            state = (
                "ok" if p.backend_ok else f"missing backend: {p.backend_hint}"
            )
            print(f"  {p.name:<12} {p.distribution} {p.version}  [{state}]")
    return 0


def _cmd_train(args) -> int:
    import dataclasses

    from diffpy_mlsolve.training import TrainConfig, train

    cfg = TrainConfig.from_file(args.config)
    changes = {
        k: v
        for k, v in (
            ("out", args.out),
            ("steps", args.steps),
            ("device", args.device),
        )
        if v is not None
    }
    cfg = dataclasses.replace(cfg, **changes)
    if not args.resume and Path(cfg.out).exists() and not args.force:
        raise OutputExistsError(
            f"{cfg.out!r} exists. Please pass --resume to continue that "
            "run, --force to start over in it, or another --out."
        )
    out = train(cfg, resume=args.resume)
    print(f"checkpoints in {out}/best and {out}/last")
    return 0


def _cmd_evaluate(args) -> int:
    from diffpy_mlsolve.evaluation import (
        evaluate,
        format_report,
        write_report,
    )
    from diffpy_mlsolve.model.predict import default_model

    out = Path(args.out)
    _check_new_output(out, args.force)
    systems = args.systems.split(",") if args.systems else None
    report = {}
    pdf = args.input == "pdf"
    try:
        diameters = [float(v) for v in args.diameter.split(",") if v.strip()]
    except ValueError:
        diameters = []
    if pdf and not (diameters and all(d > 0 for d in diameters)):
        raise PhysicsInputError(
            "--input pdf needs positive particle diameters in nm, e.g. "
            f"--diameter 2,3,5 (got {args.diameter!r})."
        )
    if args.density and not pdf:
        raise PhysicsInputError(
            "--density selects the density metrics of --input pdf; powder "
            "evaluations (--input pxrd) report them by default."
        )
    if not args.atoms_only and (args.density or not pdf):
        report = evaluate(
            args.model or default_model("r" if pdf else "tth"),
            args.structures,
            systems=systems,
            limit=args.limit,
            seed=args.seed,
            grid=args.grid,
            samples=args.samples,
            modes=tuple(args.modes.split(",")),
            device=args.device,
            out=out,
            input=args.input,
        )
        print(format_report(report))
    if args.atoms or args.atoms_only or (pdf and not args.density):
        from diffpy_mlsolve.evaluation_atoms import (
            evaluate_atoms,
            format_atoms,
        )

        def partial(rows, total):
            """The report so far, so a stopped run keeps its solves."""
            sofar = dict(report, partial=f"{len(rows)} of {total} solves")
            _merge_rows(sofar, rows)
            write_report(sofar, out)

        atoms = evaluate_atoms(
            args.structures,
            model=args.model,
            systems=systems,
            limit=args.limit,
            skip=args.skip,
            seed=args.seed,
            n_candidates=args.samples,
            refine=args.refine,
            phasing=None if args.phasing == "none" else args.phasing,
            map_groups=args.map_groups,
            centring=None if args.centring == "none" else args.centring,
            site_search=not args.no_site_search,
            control=not args.no_control,
            device=args.device,
            input=args.input,
            diameters=diameters,
            refine_top=args.refine_top,
            on_row=partial,
        )
        report.setdefault("n", len(atoms["per_structure"]))
        report["atoms"] = atoms["atoms"]
        _merge_rows(report, atoms["per_structure"])
        write_report(report, out)
        print(format_atoms(report["atoms"]))
    print(f"wrote {out}")
    return 0


def _merge_rows(report: dict, rows: list) -> None:
    """Add the atoms figures to the density rows of the same structure."""
    by_id = {r["material_id"]: r for r in report.get("per_structure", [])}
    merged = []
    for row in rows:
        base = by_id.get(row["material_id"], {})
        merged.append({**base, **row})
    report["per_structure"] = merged


# ----------------------------------------------------------------- parser
def _add_phasing(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument(
        "--phasing",
        default="flip",
        choices=("flip", "flip-random", "none"),
        help=f"{prefix}charge flipping of the pattern's intensities seeded "
        "by the network's densities (flip), from random phases "
        "(flip-random), or none (default: flip)",
    )
    p.add_argument(
        "--map-groups",
        type=int,
        default=None,
        metavar="N",
        help=f"{prefix}flip each re-divided flipped map again in up to N "
        "space groups found in it (0: P1 maps only; default: the "
        "solver's, 2; powder patterns only)",
    )
    p.add_argument(
        "--centring",
        default="none",
        choices=("none", "auto", "F", "I", "C", "A", "B", "R"),
        help=f"{prefix}lattice centring whose extinctions are imposed on "
        "the extracted intensities before flipping (auto: the one they "
        "show, if any; R: obverse on hexagonal axes; default: none)",
    )
    p.add_argument(
        "--no-site-search",
        action="store_true",
        help=f"{prefix}take each density's sites by peak height and rank "
        "by the quick R factor, instead of choosing the sites by the fit "
        "to the extracted intensities and ranking by the profile Rwp "
        "(powder patterns with phasing)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlsolve",
        description=(
            "Structure solution from powder diffraction or PDF data with "
            "a variational electron-density network (diffpy-mlsolve)."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"mlsolve {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="solve a structure from a pattern")
    p.add_argument(
        "pattern", help="pattern file (.xy .xye .chi .dat .csv .gr)"
    )
    p.add_argument(
        "--wavelength",
        help="wavelength in Å or a source name (CuKa1, MoKa, ...); needed "
        "for 2θ data unless the file header gives it",
    )
    p.add_argument(
        "--composition", required=True, help="formula, e.g. NaCl or SrTiO3"
    )
    p.add_argument(
        "--cell",
        type=parse_cell,
        help="a,b,c,alpha,beta,gamma in Å and degrees (default: index "
        "the pattern and solve in the best cells)",
    )
    p.add_argument("--candidates", type=int, default=5, help="candidates (5)")
    p.add_argument("--solver", default="crystalnet", help="solver plugin")
    p.add_argument(
        "--model", help="checkpoint folder (default: the shipped model)"
    )
    p.add_argument(
        "--formula-units",
        type=int,
        help="formula units per cell Z (default: from the density)",
    )
    p.add_argument(
        "--refine",
        help="refine every candidate with this refiner (rietveld) and "
        "rank by its Rwp",
    )
    _add_phasing(p)
    p.add_argument("--out", help="output folder (CIFs, maps, report.json)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser(
        "simulate", help="simulate a powder pattern or PDF of a structure"
    )
    p.add_argument("structure", help="CIF file")
    p.add_argument("--out", required=True, help="output .xy or .gr file")
    p.add_argument(
        "--kind", choices=("pxrd", "pdf"), default="pxrd", help="(pxrd)"
    )
    p.add_argument(
        "--wavelength", help="Å or source name (CuKa1, CuKa, MoKa, ...)"
    )
    p.add_argument(
        "--tth-range",
        type=_pair,
        default=(5.0, 90.0),
        help="2θ start,end in degrees (5,90)",
    )
    p.add_argument("--npoints", type=int, default=4000, help="points (4000)")
    p.add_argument("--fwhm", type=float, default=0.1, help="deg 2θ (0.1)")
    p.add_argument(
        "--eta", type=float, default=0.0, help="Lorentzian fraction (0)"
    )
    p.add_argument("--size", type=float, help="crystallite size in Å")
    p.add_argument(
        "--counts", type=float, help="Poisson noise: counts at the maximum"
    )
    p.add_argument("--seed", type=int, help="noise seed")
    p.add_argument("--rmax", type=float, default=30.0, help="PDF rmax Å (30)")
    p.add_argument(
        "--qmax", type=float, default=25.0, help="PDF Qmax Å^-1 (25)"
    )
    p.add_argument(
        "--qdamp", type=float, default=0.0, help="PDF Qdamp Å^-1 (0)"
    )
    p.add_argument("--diameter", type=float, help="nanoparticle diameter Å")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("train", help="train a density model")
    p.add_argument(
        "--config", required=True, help="training config (YAML or JSON)"
    )
    p.add_argument("--out", help="output folder (overrides the config)")
    p.add_argument("--steps", type=int, help="total steps (overrides)")
    p.add_argument("--device", help="auto | cpu | cuda (overrides)")
    p.add_argument(
        "--resume", action="store_true", help="continue OUT/last exactly"
    )
    p.add_argument("--force", action="store_true", help="reuse --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "evaluate", help="score a model on a table of structures"
    )
    p.add_argument(
        "--structures", required=True, help="csv/csv.gz with material_id, cif"
    )
    p.add_argument("--model", help="checkpoint folder (default: shipped)")
    p.add_argument("--systems", help="e.g. cubic,trigonal (default: all)")
    p.add_argument("--limit", type=int, help="first N structures")
    p.add_argument(
        "--skip",
        type=int,
        default=0,
        help="with --atoms: leave out the first N structures, the others "
        "keep their data (to split one evaluation over processes)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--grid", type=int, default=50, help="grid points (50)")
    p.add_argument("--samples", type=int, default=5, help="latent samples (5)")
    p.add_argument(
        "--modes",
        default="full",
        help="composition modes of the honest protocol: full,elements,"
        "drop1,none (full)",
    )
    p.add_argument(
        "--atoms",
        action="store_true",
        help="also solve every structure and match the atoms "
        "(StructureMatcher)",
    )
    p.add_argument(
        "--atoms-only", action="store_true", help="only the atoms metrics"
    )
    p.add_argument(
        "--refine", help="with --atoms: refine candidates (rietveld, pdf)"
    )
    p.add_argument(
        "--refine-top",
        type=int,
        help="with --refine: only the solver's best N candidates (all)",
    )
    _add_phasing(p, "with --atoms: ")
    p.add_argument(
        "--input",
        default="pxrd",
        choices=("pxrd", "pdf"),
        help="solve from powder patterns (pxrd), or from nanoparticle "
        "G(r) of the --diameter sizes (pdf; atoms metrics unless "
        "--density)",
    )
    p.add_argument(
        "--density",
        action="store_true",
        help="with --input pdf: the density metrics, on nanocrystal G(r) "
        "drawn as in training (1.5-10 nm or bulk); add --atoms for both",
    )
    p.add_argument(
        "--diameter",
        default="2,3,5",
        help="with --input pdf: particle diameters in nm (2,3,5)",
    )
    p.add_argument(
        "--no-control",
        action="store_true",
        help="with --atoms: skip the mismatched-pattern control (halves "
        "the time)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda (cpu)")
    p.add_argument("--out", required=True, help="report JSON file")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("plugins", help="list solvers and refiners")
    p.set_defaults(func=_cmd_plugins)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MLSolveError as err:
        print(f"mlsolve: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
