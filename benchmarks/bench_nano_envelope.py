"""How far the spherical-envelope PDF of a nanoparticle is from the PDF of
an explicit particle (a Debye pair sum over a carved sphere).

    .venv/bin/python benchmarks/bench_nano_envelope.py [--diameters 1.5,2,3,5]

The solver, the evaluation and the ``pdf`` refiner model a particle as
the bulk G(r) times the characteristic function of a sphere, γ0(r).  For
each structure below and each diameter D (nm) this script carves every
atom whose centre lies within D/2 of a centre (an atom, and a general
point) from the bulk crystal, computes the cluster's G(r) exactly from
all its pairs (this package's PDF kernel on the cluster in a vacuum box
larger than D + rmax, so no periodic image is within reach, with the
baseline put back as −4π r ρ0 γ0(r) for the bulk number density ρ0 and
the cluster's effective diameter (6 N / π ρ0)^(1/3)), and compares it
with the envelope model of that effective diameter: both at Qmax 25 Å^-1,
Qdamp 0.03, r = 1-30 Å.  It prints Rw = sqrt(Σ (Gcluster − Genvelope)^2 /
Σ Gcluster^2), the envelope Rw with its scale and diameter refitted
(what a refinement would see), and the refitted diameter against the
effective one, and the Rw left once a smooth polynomial baseline (r to
r^4) is removed from the difference: how much of it is the particle's
baseline term rather than its peaks.  Every figure is measured in this
run.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from pymatgen.core import Lattice, Structure
from scipy.optimize import minimize_scalar

from diffpy_mlsolve.pdf_intensities import _envelope
from diffpy_mlsolve.simulate import simulate_pdf

QMAX, QDAMP, RMAX = 25.0, 0.03, 30.0

STRUCTURES = {
    "NaCl": Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]
    ),
    "CeO2": Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.411), ["Ce", "O"], [[0, 0, 0], [0.25] * 3]
    ),
    "SrTiO3": Structure.from_spacegroup(
        "Pm-3m",
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O"],
        [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0]],
    ),
}


def cluster(structure, diameter, centre):
    """The atoms within diameter/2 (Å) of ``centre`` (fractional) in a
    cubic vacuum box that no pair within RMAX can wrap around."""
    n = int(math.ceil(diameter / min(structure.lattice.abc))) + 2
    big = structure * (2 * n, 2 * n, 2 * n)
    cart = big.cart_coords - big.lattice.get_cartesian_coords(
        (np.asarray(centre) + n) / (2 * n)
    )
    inside = np.linalg.norm(cart, axis=1) <= diameter / 2
    box = diameter + RMAX + 10.0
    species = [big[i].specie for i in np.flatnonzero(inside)]
    return Structure(
        Lattice.cubic(box),
        species,
        cart[inside] + box / 2,
        coords_are_cartesian=True,
    )


def compare(structure, diameter, centre):
    rho0 = len(structure) / structure.volume
    part = cluster(structure, diameter, centre)
    n = len(part)
    d_eff = (6 * n / (math.pi * rho0)) ** (1 / 3)
    kw = dict(rmin=0.0, rmax=RMAX, rstep=0.01, qmax=QMAX, qdamp=QDAMP)
    kw["biso"] = 0.5
    t0 = time.perf_counter()
    g_box = simulate_pdf(part, **kw)
    seconds = time.perf_counter() - t0
    r = g_box.x
    box_rho = n / part.volume
    gamma = _envelope(r, 0.0, d_eff)
    g_cluster = g_box.intensity + 4 * math.pi * r * (box_rho - rho0 * gamma)
    g_bulk = simulate_pdf(structure, **kw).intensity
    sel = r >= 1.0
    gc, gb = g_cluster[sel], g_bulk[sel]
    den = float(np.sum(gc**2))

    def rw(d, fit_scale=True):
        model = gb * _envelope(r[sel], 0.0, d)
        s = float(model @ gc) / float(model @ model) if fit_scale else 1.0
        return float(np.sqrt(np.sum((gc - s * model) ** 2) / den))

    opt = minimize_scalar(
        rw, bounds=(0.5 * d_eff, 2 * d_eff), method="bounded"
    )
    # how much of the difference is a smooth baseline (the particle's
    # −4π r ρ0 γ(r) term) rather than peaks: remove r, r^2, ..., r^4
    x = r[sel] / RMAX
    basis = np.stack([x**k for k in range(1, 5)], 1)
    diff = gc - gb * _envelope(r[sel], 0.0, d_eff)
    coef, *_ = np.linalg.lstsq(basis, diff, rcond=None)
    smooth = float(np.sqrt(np.sum((diff - basis @ coef) ** 2) / den))
    return {
        "rw_peaks": smooth,
        "atoms": n,
        "d_eff": d_eff,
        "rw": rw(d_eff, fit_scale=False),
        "rw_refit": float(opt.fun),
        "d_refit": float(opt.x),
        "seconds": seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--diameters", default="1.5,2,3,5", help="nm")
    args = parser.parse_args(argv)
    sizes = [float(v) for v in args.diameters.split(",")]
    print(
        "structure  D/nm centre   atoms  D_eff/Å  Rw(envelope)  "
        "Rw(refit)  D_refit/D_eff  Rw(baseline removed)"
    )
    for name, s in STRUCTURES.items():
        for size in sizes:
            for label, centre in (
                ("atom", (0, 0, 0)),
                ("general", (0.31,) * 3),
            ):
                c = compare(s, 10 * size, centre)
                print(
                    f"{name:<9} {size:5.1f} {label:<8} {c['atoms']:6d} "
                    f"{c['d_eff']:8.1f}  {c['rw']:12.3f}  "
                    f"{c['rw_refit']:9.3f}  {c['d_refit'] / c['d_eff']:13.3f}"
                    f"  {c['rw_peaks']:20.3f}"
                )


if __name__ == "__main__":
    main()
