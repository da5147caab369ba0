"""Cost of a srfit PDF refinement, with and without merging equal pairs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pdf_refine.py \
        [--formulas CaPd,NdTe,V3Ge,HfZn2,Al12Mo,Lu2O3] [--diameter 3]

For each cubic structure of ../shared/data/structures/test.csv.gz named,
the evaluation's own nanoparticle G(r) (``mlsolve evaluate --input pdf``:
r 0-30 Å, Qmax 18-26 Å^-1, Qdamp, Qbroad and noise drawn, seed 0) is
refined with :func:`diffpy_mlsolve.refine.pdf.refine_pdf` in the
structure's own space group, from the true sites in a cell 1 % too long
and a diameter 10 % too small, as a solved candidate would start.  It
prints, for the refinement and for one G(r) of the kernel (the
refinement's grid), the time with the kernel as shipped (pairs at one
distance and width summed into one Gaussian when no gradient is needed)
and with that merge switched off (every pair its own Gaussian, as before
it), the kernel's calls per refinement, the refined Rw and diameter, and
diffpy.pdffit2's time for the same G(r).  Both variants run back to back
in this process, so their ratio holds on a busy machine; every figure is
measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time

import numpy as np
import torch
from _shared import add_formula_args, cubic_test_structures

from diffpy_mlsolve.evaluation_atoms import _nano_pdf
from diffpy_mlsolve.physics import pdf as kernel
from diffpy_mlsolve.refine import pdf as refine
from diffpy_mlsolve.structures import to_diffpy


@contextlib.contextmanager
def merging(on: bool):
    """The kernel as shipped (on) or with every pair its own Gaussian."""
    real = kernel._merge_equal
    if not on:
        kernel._merge_equal = lambda rij, sigma, amp: (rij, sigma, amp)
    try:
        yield
    finally:
        kernel._merge_equal = real


def start_structure(crystal):
    """The truth in a cell 1 % too long (a diffpy Structure)."""
    stru = to_diffpy(crystal)
    lat = stru.lattice
    lat.setLatPar(lat.a * 1.01, lat.b * 1.01, lat.c * 1.01)
    return stru


def refine_once(crystal, gr, diameter):
    """Seconds, kernel calls and the RefinementResult of one refinement."""
    gen = refine._generator_class()
    real = gen._bulk
    calls = [0]

    def counted(self, r):
        calls[0] += 1
        return real(self, r)

    gen._bulk = counted
    try:
        t0 = time.perf_counter()
        res = refine.refine_pdf(
            start_structure(crystal),
            gr,
            diameter=0.9 * diameter,
            calculator=refine.CALCULATOR_MLSOLVE,
        )
        return time.perf_counter() - t0, calls[0], res
    finally:
        gen._bulk = real


def kernel_seconds(crystal, gr, repeat=3):
    """Best time (s) of one G(r) of ``crystal`` on the data's grid."""
    r = torch.tensor(np.asarray(gr.x, float)[np.asarray(gr.x) >= 1.0])
    args = (
        torch.tensor(crystal.lattice, dtype=torch.float64),
        torch.tensor(crystal.frac, dtype=torch.float64),
        crystal.numbers,
        crystal.occupancy,
        np.full(crystal.natoms, 0.5),
        r,
    )
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        kernel.pdf_of_crystal(*args, qmax=gr.metadata["qmax"], qdamp=0.03)
        best = min(best, time.perf_counter() - t0)
    return best


def pdffit2_seconds(crystal, gr, repeat=3):
    from diffpy.pdffit2 import PdfFit, redirect_stdout

    redirect_stdout(open(os.devnull, "w"))
    r = np.asarray(gr.x, float)
    r = r[r >= 1.0]
    pf = PdfFit()
    pf.add_structure(to_diffpy(crystal))
    pf.alloc("X", gr.metadata["qmax"], 0.03, r[0], r[-1], len(r))
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        pf.calc()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_formula_args(ap, "CaPd,NdTe,V3Ge,HfZn2,Al12Mo,Lu2O3")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    wanted = args.formulas.split(",")
    found = cubic_test_structures()
    print(
        f"torch {torch.__version__}, 1 thread, {os.cpu_count()} cores; "
        f"G(r) of {args.diameter:g} nm particles, kernel on r >= 1 Å"
    )
    print(
        "formula  group  atoms | one G(r) ms: merged  per pair  pdffit2 |"
        " refinement s: merged  per pair  ratio | calls  Rw  diameter nm"
    )
    for name in wanted:
        if name not in found:
            print(f"{name}: not among the cubic test structures")
            continue
        index, rec = found[name]
        gr = _nano_pdf(rec, 0, index, args.diameter)
        crystal = rec.crystal
        with merging(True):
            k_on = kernel_seconds(crystal, gr)
        with merging(False):
            k_off = kernel_seconds(crystal, gr)
        k_fit = pdffit2_seconds(crystal, gr)
        with merging(True):
            t_on, calls, res = refine_once(crystal, gr, 10 * args.diameter)
        with merging(False):
            t_off, calls_off, res_off = refine_once(
                crystal, gr, 10 * args.diameter
            )
        same = abs(res.rwp - res_off.rwp) < 1e-6
        print(
            f"{name:8s} {res.settings['spacegroup']:6s} {crystal.natoms:5d} |"
            f" {1e3 * k_on:19.1f} {1e3 * k_off:9.1f} {1e3 * k_fit:8.1f} |"
            f" {t_on:21.1f} {t_off:9.1f} {t_off / t_on:6.1f} |"
            f" {calls:5d} {res.rwp:.4f}"
            f" {res.settings['diameter'] / 10:.3f}"
            f"{'' if same else f' (per pair: Rw {res_off.rwp:.4f})'}"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
