"""Solve a powder pattern for its electron density with the shipped model.

Simulates a lab Cu Kα pattern of rock-salt KCl (a structure written here,
not read from any table), hands it to the crystalnet solver with the
composition and the cell, and compares candidate 1's density with the true
one: where its maximum sits and the reference-protocol SSIM, beside the
SSIM of an all-zero map (SSIM is forgiving on mostly empty cells).  Writes
the candidate density maps (CCP4 and XSF) when given a folder:

    .venv/bin/python examples/solve_density.py [OUTDIR]
"""

import sys

import numpy as np
from diffpy.structure import Atom, Lattice, Structure

import diffpy_mlsolve as ms
from diffpy_mlsolve.evaluation import reference_score, ssim_psnr

a = 6.29
fcc = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
atoms = [Atom("K", xyz) for xyz in fcc]
atoms += [Atom("Cl", tuple((v + 0.5) % 1 for v in xyz)) for xyz in fcc]
for atom in atoms:
    atom.Uisoequiv = 0.012
kcl = Structure(atoms, lattice=Lattice(a, a, a, 90, 90, 90))

pattern = ms.simulate_pxrd(
    kcl,
    "CuKa",
    tth_range=(10, 100),
    npoints=4501,
    fwhm=0.08,
    eta=0.3,
    counts=1e5,
    seed=0,
)
solver = ms.get_solver("crystalnet", device="cpu")
# the network's own densities (phasing=None: no charge flipping, whose
# maps have an arbitrary origin)
res = solver.solve(
    pattern, "KCl", (a, a, a, 90, 90, 90), n_candidates=5, phasing=None
)
truth = ms.electron_density(kcl, grid=res.candidates[0].density.grid[0])
best = reference_score(
    truth.values, [c.density.values for c in res.candidates]
)
pred = res.candidates[0].density
peak = np.unravel_index(np.argmax(pred.values), pred.grid)
print(f"candidate 1: {pred}")
print(
    f"  its maximum at fractional {np.round(np.array(peak) / pred.grid[0], 3)}"
)
print(f"  true density: {truth}")
zeros = ssim_psnr(truth.values, np.zeros_like(truth.values))[0]
print(
    f"  reference-protocol SSIM (best of 5 x 24 rotations): "
    f"{best['ssim']:.3f}; an all-zero map scores {zeros:.3f}"
)

if len(sys.argv) > 1:
    out = res.write(sys.argv[1], force=True)
    print(f"wrote {out}")
