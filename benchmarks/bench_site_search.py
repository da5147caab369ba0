"""Cost of one scan of the site search (one site tried on every peak of
the pool), as shipped and as it was.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_site_search.py \
        [--formulas V3Ge,HfZn2,Al12Mo,Er3Ge13Rh4,Lu2O3] [--diameter 3] \
        [--powder]

For each cubic structure of ../shared/data/structures/test.csv.gz named,
the evaluation's own nanoparticle G(r) (``mlsolve evaluate --input pdf``,
seed 0) is fitted by :func:`~diffpy_mlsolve.pdf_intensities.pdf_intensities`
in the true cell and scored by the site search's
:class:`~diffpy_mlsolve.sitesearch.PDFScorer` (``--powder`` adds a
simulated Cu Kα1 pattern, 5-90° 2θ, and its
:class:`~diffpy_mlsolve.sitesearch.ProfileScorer`).  A scan moves one
atom of the heaviest element, the others on their true sites, to each of
2 n + 24 positions (the search's pool for n atoms; the true site first,
the rest random).  "now" is :meth:`ProfileScorer.rwp_of_moves` with the
normal matrix as the scorer keeps it; "before" forms every sum and
squares it (``rwp_of_many(base + table)``) with the normal matrix
sparse, as the search did until this benchmark was written.  Both run
back to back in this process; the best of five is printed, and the
largest difference of the Rwp the two give.
"""

from __future__ import annotations

import argparse
import copy
import os

import numpy as np
from _shared import add_formula_args, best_of, cubic_test_structures
from scipy import sparse

from diffpy_mlsolve.evaluation_atoms import _nano_pdf
from diffpy_mlsolve.pdf_intensities import pdf_intensities
from diffpy_mlsolve.sitesearch import ProfileScorer, scorer_for


def scan_case(scorer, crystal, seed=0):
    """(base, table): the heaviest element's first atom moved."""
    from pymatgen.core import Element

    symbols = [Element.from_Z(int(z)).symbol for z in crystal.numbers]
    heavy = max(range(len(symbols)), key=lambda i: crystal.numbers[i])
    frac = np.asarray(crystal.frac, float)
    n = len(frac)
    rng = np.random.default_rng(seed)
    pool = np.vstack([frac[heavy], rng.random((2 * n + 23, 3))])
    b = float(np.mean(crystal.biso))  # the data's B: the true site fits
    sites = scorer.element_terms(frac, symbols, b)
    base = sum(sites[e][:, i] for i, e in enumerate(symbols) if i != heavy)
    table = scorer.element_terms(pool, [symbols[heavy]], b)
    table = table[symbols[heavy]]
    return base, table


def compare(scorer, crystal):
    """The printed figures of one scorer."""
    base, table = scan_case(scorer, crystal)
    before = copy.copy(scorer)
    if isinstance(scorer._m, np.ndarray):
        before._m = sparse.csr_matrix(scorer._m)
    t_old, r_old = best_of(
        lambda: before.rwp_of_many(base[:, None] + table), 5
    )
    t_new, r_new = best_of(
        lambda: scorer.rwp_of_moves(base, table, scorer.group_norms(table)),
        5,
    )
    m = scorer._m
    fill = (
        np.count_nonzero(m) / m.size
        if isinstance(m, np.ndarray)
        else (m.nnz / (m.shape[0] * m.shape[1]))
    )
    return (
        f"{len(scorer.group):7d} {scorer.ngroups:6d} {fill:5.2f}"
        f" {'dense' if isinstance(m, np.ndarray) else 'sparse':6s} |"
        f" {1e3 * t_old:8.1f} {1e3 * t_new:8.1f} {t_old / t_new:6.1f} |"
        f" {np.abs(r_old - r_new).max():8.1e}"
        f" {'true site best' if np.argmin(r_new) == 0 else ''}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_formula_args(ap, "V3Ge,HfZn2,Al12Mo,Er3Ge13Rh4,Lu2O3")
    ap.add_argument(
        "--powder", action="store_true", help="also a Cu Kα1 pattern"
    )
    args = ap.parse_args(argv)
    found = cubic_test_structures()
    print(
        f"{os.cpu_count()} cores, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; scan of 2n+24"
        " positions, best of 5"
    )
    print(
        "formula      data   atoms | reflections groups fill  normal |"
        " before ms  now ms  ratio | max dRwp"
    )
    for name in args.formulas.split(","):
        if name not in found:
            print(f"{name}: not among the cubic test structures")
            continue
        index, rec = found[name]
        crystal = rec.crystal
        gr = _nano_pdf(rec, 0, index, args.diameter)
        fit = pdf_intensities(gr, tuple(float(v) for v in crystal.lattice))
        line = compare(scorer_for(fit.reflections), crystal)
        print(f"{name:12s} G(r)   {crystal.natoms:5d} | {line}")
        if args.powder:
            from diffpy_mlsolve.phasing import extract_intensities
            from diffpy_mlsolve.simulate import simulate_pxrd
            from diffpy_mlsolve.structures import to_diffpy

            pattern = simulate_pxrd(
                to_diffpy(crystal),
                "CuKa1",
                tth_range=(5, 90),
                counts=2e4,
                seed=0,
            )
            refl = extract_intensities(pattern, crystal.lattice)
            line = compare(ProfileScorer(refl), crystal)
            print(f"{name:12s} powder {crystal.natoms:5d} | {line}")


if __name__ == "__main__":
    main()
