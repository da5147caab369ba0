"""Speed of the physics core against the reference tools, in one run.

    .venv/bin/python benchmarks/bench_physics.py [--n 200] [--device cpu]

Prints:
1. powder patterns per second for N real structures of
   ../shared/data/structures/test.csv.gz: our batched simulator against
   pymatgen's XRDCalculator followed by the same Gaussian broadening in
   numpy (both on a 4000-point 5-90 deg grid, Cu Ka1), and the ratio;
2. milliseconds per 50^3 density, and per PDF against diffpy.pdffit2 for
   the same PDF (rmax 30 Å, Qmax 25 Å^-1);
3. how the cost grows with atoms per cell (about 10, 50, 200) and with
   grid size (32, 50, 64).
Every figure is measured in this run; nothing is cached.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import time
import warnings

import numpy as np
import pandas as pd
import torch
from _shared import STRUCTURES

import diffpy_mlsolve as ms

TABLE = STRUCTURES / "test.csv.gz"
LAM = 1.540593
GRID = np.linspace(5, 90, 4000)


def _timed(fn, repeat=3):
    """Best wall time of ``repeat`` runs (s) and the last result."""
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def pymatgen_patterns(structures):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator(wavelength=LAM)
    sig = 0.1 / (2 * math.sqrt(2 * math.log(2)))
    out = []
    for s in structures:
        p = calc.get_pattern(s, scaled=False, two_theta_range=(5, 90))
        g = np.exp(-((GRID[None, :] - p.x[:, None]) ** 2) / (2 * sig**2))
        out.append(p.y @ g)
    return out


def ours_patterns(structures, device):
    pats = ms.simulate_pxrd(
        structures,
        wavelength=LAM,
        tth_range=(5, 90),
        npoints=4000,
        fwhm=0.1,
        device=device,
    )
    _sync(device)
    return pats


def pdffit2_pdf(structure):
    from diffpy.pdffit2 import PdfFit, redirect_stdout

    from diffpy_mlsolve.structures import as_crystal, to_diffpy

    redirect_stdout(open(os.devnull, "w"))
    pf = PdfFit()
    pf.add_structure(to_diffpy(as_crystal(structure, standardize=False)))
    pf.alloc("X", 25.0, 0.0, 0.01, 30.0, 3000)
    pf.calc()
    return np.array(pf.getpdf_fit())


def load_structures(n):
    from pymatgen.core import Structure

    table = pd.read_csv(TABLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structs = [Structure.from_str(c, fmt="cif") for c in table.cif[:n]]
    return table, structs


def pick_by_size(table, targets):
    """Rows whose conventional cell has about ``targets`` atoms."""
    from pymatgen.core import Structure

    picked = []
    for t in targets:
        row = table.iloc[(table.natoms_conventional - t).abs().argmin()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(row.cif, fmt="cif")
        conv = ms.as_crystal(s)
        picked.append((int(conv.natoms), row.material_id, s))
    return picked


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="structures (200)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (cpu)")
    args = ap.parse_args(argv)
    dev = args.device
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {dev}"
    )
    if dev.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    table, structs = load_structures(args.n)
    n = len(structs)

    print(f"\n1. powder patterns, {n} MP test structures, 4000 points")
    ours_patterns(structs[:8], dev)  # warm-up
    t_ours, _ = _timed(lambda: ours_patterns(structs, dev))
    t_pmg, _ = _timed(lambda: pymatgen_patterns(structs), repeat=1)
    print(f"   pymatgen XRDCalculator + numpy broadening: {n / t_pmg:8.1f}/s")
    print(f"   diffpy-mlsolve simulate_pxrd (batched):    {n / t_ours:8.1f}/s")
    print(f"   ratio: {t_pmg / t_ours:.1f}x")

    print("\n2. density (50^3) and PDF (rmax 30 Å, Qmax 25 Å^-1)")
    sub = structs[:20]
    ms.electron_density(sub[:2], grid=50, device=dev)
    t_rho, _ = _timed(lambda: ms.electron_density(sub, grid=50, device=dev))
    print(f"   density: {1e3 * t_rho / len(sub):8.1f} ms per structure")
    pdf_sub = structs[:10]
    t_pdf, _ = _timed(
        lambda: [
            ms.simulate_pdf(s, rmax=30, qmax=25, device=dev) for s in pdf_sub
        ]
    )
    t_fit, _ = _timed(lambda: [pdffit2_pdf(s) for s in pdf_sub], repeat=1)
    print(
        f"   PDF ours:    {1e3 * t_pdf / len(pdf_sub):8.1f} ms per structure"
    )
    print(
        f"   PDF pdffit2: {1e3 * t_fit / len(pdf_sub):8.1f} ms per structure"
    )
    print(f"   ratio: {t_fit / t_pdf:.1f}x")

    print("\n3. cost against atoms per conventional cell")
    print("   atoms  material     pattern ms  density50 ms  PDF ms")
    for natoms, mid, s in pick_by_size(table, (10, 50, 200)):
        tp, _ = _timed(lambda: ours_patterns([s], dev))
        td, _ = _timed(lambda: ms.electron_density(s, grid=50, device=dev))
        tg, _ = _timed(lambda: ms.simulate_pdf(s, device=dev), repeat=1)
        print(
            f"   {natoms:5d}  {mid:<11} {1e3 * tp:10.1f}  {1e3 * td:12.1f}"
            f"  {1e3 * tg:6.0f}"
        )
    print("\n   cost against grid size (density, 20 structures)")
    for grid in (32, 50, 64):
        tg, _ = _timed(lambda: ms.electron_density(sub, grid=grid, device=dev))
        print(f"   {grid:3d}^3: {1e3 * tg / len(sub):8.1f} ms per structure")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
