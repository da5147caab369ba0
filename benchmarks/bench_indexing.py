"""How often indexing finds the true cell of simulated patterns.

    .venv/bin/python benchmarks/bench_indexing.py [--limit 10]
        [--systems cubic,tetragonal,hexagonal,trigonal,orthorhombic]

For the first N structures of each crystal system in
../shared/data/structures/test.csv.gz: simulate a realistic pattern (Cu
Kα1, λ = 1.5406 Å given explicitly, 5-90° 2θ in 0.02° steps,
pseudo-Voigt FWHM from Caglioti U, V, W = 0.004, -0.002, 0.006 deg²
(about 0.08° at low angle to 0.11° at 90°) with η = 0.5, a sloping
background, Poisson noise at 20 000 counts on the strongest point), index
it with :func:`diffpy_mlsolve.indexing.index_pattern` (default settings;
all systems including triclinic when triclinic is asked for) and print,
by crystal system, the fraction of patterns whose top-1 and top-5
candidates match the true conventional cell, the fraction whose top-1
cell spans the true lattice whatever its description ("lattice@1"),
failures (too few peaks, nothing indexed) and seconds per pattern.

A candidate matches when its primitive lattice maps onto the true one
(pymatgen ``Lattice.find_mapping`` of the Niggli-reduced cells, lengths
within 0.5 %, angles within 0.5°: the setting does not matter) and its
conventional volume is within 1 % of the true conventional volume (so the
centring is right).  Every figure is measured in this run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections import defaultdict

import numpy as np
import pandas as pd
from _shared import STRUCTURES

from diffpy_mlsolve.data.sources import CRYSTAL_SYSTEMS

TABLE = STRUCTURES / "test.csv.gz"
LAM = 1.5406
SYSTEMS = CRYSTAL_SYSTEMS
SIM = dict(
    wavelength=LAM,
    tth_range=(5.0, 90.0),
    npoints=4251,
    eta=0.5,
    caglioti=(0.004, -0.002, 0.006),
    background=[0.08, -0.04, 0.015],
    counts=2e4,
)
LTOL, ATOL, VTOL = 0.005, 0.5, 0.01


def load(systems, limit):
    """(material_id, system, spacegroup, pymatgen Structure) rows."""
    from pymatgen.core import Structure

    table = pd.read_csv(TABLE)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for system in systems:
            part = table[table.crystal_system == system].head(limit)
            for r in part.itertuples():
                s = Structure.from_str(r.cif, fmt="cif")
                rows.append((r.material_id, system, r.spacegroup_symbol, s))
    return rows


def truth(structure):
    """Conventional lattice (6,), its volume, and the primitive basis."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from diffpy_mlsolve.indexing import _volume
    from diffpy_mlsolve.structures import DEFAULT_SYMPREC, as_crystal

    conv = as_crystal(structure)
    sga = SpacegroupAnalyzer(structure, symprec=DEFAULT_SYMPREC)
    prim = sga.get_primitive_standard_structure().lattice.matrix
    lat = np.asarray(conv.lattice, dtype=float)
    return lat, _volume(lat), prim


def matches(cand, true_vol, true_prim, conventional=True):
    from diffpy_mlsolve.indexing import _primitive, _same_lattice

    prim = _primitive(cand.lattice, cand.centring)
    if not _same_lattice(prim, true_prim, ltol=LTOL, atol=ATOL):
        return False
    return not conventional or abs(cand.volume - true_vol) <= VTOL * true_vol


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--limit", type=int, default=10, help="structures per system (10)"
    )
    ap.add_argument(
        "--systems",
        default=",".join(SYSTEMS[:-1]),
        help="comma-separated crystal systems (all but triclinic)",
    )
    ap.add_argument("--seed", type=int, default=0, help="noise seed (0)")
    ap.add_argument(
        "--verbose", action="store_true", help="one line per structure"
    )
    args = ap.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        ap.error(f"unknown systems {bad}; choose from {', '.join(SYSTEMS)}")
    if not TABLE.is_file():
        ap.error(f"{TABLE} not found")

    import pyobjcryst
    import torch

    from diffpy_mlsolve.errors import MLSolveError
    from diffpy_mlsolve.indexing import index_pattern
    from diffpy_mlsolve.simulate import simulate_pxrd

    torch.set_num_threads(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; pyobjcryst {pyobjcryst.__version__}"
    )
    print(
        f"patterns: Cu Ka1 {LAM} Å, 5-90 deg, 0.02 deg step, Caglioti "
        f"{SIM['caglioti']} deg^2, eta {SIM['eta']}, background, Poisson "
        f"{SIM['counts']:.0f} counts; match: lengths {LTOL:.1%}, angles "
        f"{ATOL} deg, volume {VTOL:.0%}"
    )
    # triclinic cells are searched (slow: minutes) only when asked for
    search = SYSTEMS if "triclinic" in systems else None
    rows = load(systems, args.limit)
    stats = defaultdict(lambda: defaultdict(float))
    for i, (mid, system, sg, s) in enumerate(rows):
        true_lat, true_vol, true_prim = truth(s)
        pat = simulate_pxrd(s, seed=args.seed + i, device="cpu", **SIM)
        t0 = time.perf_counter()
        try:
            cands = index_pattern(pat, systems=search)
            err = ""
        except MLSolveError as e:
            cands, err = [], type(e).__name__
        dt = time.perf_counter() - t0
        st = stats[system]
        st["n"] += 1
        st["time"] += dt
        st["fail"] += bool(err)
        hit = [matches(c, true_vol, true_prim) for c in cands]
        st["top1"] += bool(hit[:1] and hit[0])
        st["top5"] += any(hit[:5])
        st["lattice1"] += bool(
            cands and matches(cands[0], true_vol, true_prim, False)
        )
        if args.verbose:
            best = str(cands[0]) if cands else err
            mark = (
                "ok "
                if hit[:1] and hit[0]
                else ("top5" if any(hit) else "-- ")
            )
            a, b, c, al, be, ga = true_lat
            print(
                f"{mark} {mid:>12} {system:>12} {sg:>10} true {a:.3f} "
                f"{b:.3f} {c:.3f} {al:.1f} {be:.1f} {ga:.1f} | {best} "
                f"| {dt:.1f}s",
                flush=True,
            )
    head = (
        f"{'system':>13} {'n':>3} {'top-1':>6} {'top-5':>6} "
        f"{'lattice@1':>9} {'failed':>6} {'s/pattern':>9}"
    )
    print(head)
    total = defaultdict(float)
    for system in systems:
        st = stats[system]
        if not st["n"]:
            continue
        for k, v in st.items():
            total[k] += v
        _line(system, st)
    if len(systems) > 1:
        _line("all", total)


def _line(name, st):
    n = st["n"]
    top1, top5, lat1 = st["top1"] / n, st["top5"] / n, st["lattice1"] / n
    print(
        f"{name:>13} {int(n):>3} {top1:>6.2f} {top5:>6.2f} {lat1:>9.2f} "
        f"{st['fail'] / n:>6.2f} {st['time'] / n:>9.2f}"
    )


if __name__ == "__main__":
    main()
