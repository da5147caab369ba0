"""Cost of refining sites in their space group, as shipped and as it was.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_refine_positions.py \
        [--formulas "Yb11(SnBi4)2,RuOF4,Ba5P4,Ca(SnO2)2"] [--repeat 2]

For each test structure of ../shared/data/structures/test.csv.gz named
(the first of each formula), the evaluation's realistic powder pattern
(``mlsolve evaluate --atoms``, seed 0, its index in the split) is
extracted in the true cell; the true structure, found in its group by
spglib, has its free coordinates moved by 0.02 (fractional, normal,
seed 1) and is refined back with
:func:`~diffpy_mlsolve.sitesearch.refine_positions`, three ways:

- "before": structure factors at every reflection, and the profile's
  quadratic form vᵀ M v as a torch sparse product (as it was);
- "sets": at one reflection of each set of
  :func:`~diffpy_mlsolve.physics.reflections.equivalent_reflections`,
  the quadratic form still in torch;
- "now": as shipped, the quadratic form's product in scipy
  (:func:`~diffpy_mlsolve.sitesearch._quadratic_form`).

The times are the best of ``--repeat``, back to back in this process;
the largest difference of the refined coordinates from "before" and the
Rwp are printed with them.
"""

from __future__ import annotations

import argparse
import dataclasses
from unittest import mock

import numpy as np
import torch
from _shared import best_of, test_structures

from diffpy_mlsolve.evaluation_atoms import _pattern
from diffpy_mlsolve.phasing import extract_intensities
from diffpy_mlsolve.physics.reflections import equivalent_reflections
from diffpy_mlsolve.sitesearch import _orbits, refine_positions, scorer_for
from diffpy_mlsolve.symmetry import find_symmetry


def every_reflection(hkl, rotations):
    """Each reflection its own set."""
    n = len(hkl)
    return np.arange(n), np.arange(n)


def torch_quadratic(m):
    """vᵀ M v through torch's own products (M dense, or sparse COO), as
    ``ProfileScorer.torch_rwp`` had it."""
    if isinstance(m, np.ndarray):
        a = torch.as_tensor(m)
    else:
        coo = m.tocoo()
        a = torch.sparse_coo_tensor(
            torch.as_tensor(np.vstack([coo.row, coo.col])),
            torch.as_tensor(coo.data),
            coo.shape,
            check_invariants=True,
        ).coalesce()
    return lambda v: v @ (a @ v[:, None])[:, 0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formulas", default="Yb11(SnBi4)2,RuOF4,Ba5P4,Ca(SnO2)2")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    wanted = args.formulas.split(",")
    records = test_structures(wanted)
    print(
        f"{'structure':14s} {'group':>10s} {'atoms':>5s} {'refl.':>6s} "
        f"{'sets':>5s} {'groups':>6s} {'before s':>8s} {'sets s':>6s} "
        f"{'now s':>6s} {'ratio':>5s} {'Rwp':>8s} {'max |Δx|':>8s}"
    )
    quadratic = "diffpy_mlsolve.sitesearch._quadratic_form"
    reflections = "diffpy_mlsolve.physics.reflections.equivalent_reflections"
    for formula in wanted:
        i, rec = records[formula]
        lattice = tuple(float(v) for v in rec.crystal.lattice)
        scorer = scorer_for(extract_intensities(_pattern(rec, 0, i), lattice))
        sym = find_symmetry(rec.crystal, (1e-3, 0.01))
        proj = np.stack([p for _, p in _orbits(sym)])
        step = np.random.default_rng(1).normal(0, 0.02, sym.frac.shape)
        start = dataclasses.replace(
            sym, frac=np.mod(sym.frac + np.einsum("aij,aj->ai", proj, step), 1)
        )

        def run():
            return refine_positions(scorer, start)

        with mock.patch(quadratic, torch_quadratic):
            with mock.patch(reflections, every_reflection):
                t_before, (s_before, r_before) = best_of(run, args.repeat)
            t_sets, (s_sets, _) = best_of(run, args.repeat)
        t_now, (s_now, r_now) = best_of(run, args.repeat)
        nsets = len(equivalent_reflections(scorer.hkl, sym.rotations)[0])
        dx = max(np.abs(s.frac - s_before.frac).max() for s in (s_sets, s_now))
        print(
            f"{formula:14s} {sym.symbol:>10s} "
            f"{start.to_crystal().natoms:5d} {len(scorer.hkl):6d} "
            f"{nsets:5d} {scorer.ngroups:6d} {t_before:8.2f} "
            f"{t_sets:6.2f} {t_now:6.2f} {t_before / t_now:5.1f} "
            f"{r_now:8.5f} {dx:8.1e}"
        )
        assert abs(r_now - r_before) < 1e-9


if __name__ == "__main__":
    main()
