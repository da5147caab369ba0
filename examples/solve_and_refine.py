"""Solve a structure from its powder pattern and refine it by Rietveld.

The whole structure-solution step on a perovskite written here (SrTiO3,
not read from any table): simulate a lab Cu Kα pattern with noise and a
background, give the solver only the pattern, the formula and the cell,
let it pick atoms from the candidate densities, symmetrise them and
refine every candidate in pyobjcryst (ObjCryst++), then compare the
top-ranked structure with the truth (pymatgen's StructureMatcher).
Writes CIFs, density maps, fit plots and report.json when given a folder:

    .venv/bin/python examples/solve_and_refine.py [OUTDIR]
"""

import sys

from diffpy.structure import Atom, Lattice, Structure
from pymatgen.analysis.structure_matcher import StructureMatcher

import diffpy_mlsolve as ms
from diffpy_mlsolve.structures import as_crystal, to_pymatgen

a = 3.905
truth = Structure(
    [
        Atom("Sr", (0, 0, 0), Uisoequiv=0.008),
        Atom("Ti", (0.5, 0.5, 0.5), Uisoequiv=0.005),
        Atom("O", (0.5, 0.5, 0), Uisoequiv=0.010),
        Atom("O", (0.5, 0, 0.5), Uisoequiv=0.010),
        Atom("O", (0, 0.5, 0.5), Uisoequiv=0.010),
    ],
    lattice=Lattice(a, a, a, 90, 90, 90),
)
pattern = ms.simulate_pxrd(
    truth,
    "CuKa",
    tth_range=(15, 120),
    npoints=5251,
    fwhm=0.09,
    eta=0.4,
    background=[0.04, -0.01],
    counts=5e4,
    seed=3,
)

solver = ms.get_solver("crystalnet", device="cpu")
res = solver.solve(
    pattern, "SrTiO3", (a, a, a, 90, 90, 90), n_candidates=3, refine="rietveld"
)
for cand in res.candidates:
    if cand.failed:
        print(f"candidate {cand.rank}: failed: {cand.failed}")
        continue
    rwp = "not refined" if cand.rwp is None else f"{cand.rwp:.4f}"
    print(
        f"candidate {cand.rank}: {cand.spacegroup:<10} "
        f"{cand.info['formula']:<10} quick R {cand.pattern_rfactor:.3f}  "
        f"Rietveld Rwp {rwp}"
    )

best = res.best
matcher = StructureMatcher()  # pymatgen's default tolerances
found = best.to_pymatgen()
same = matcher.fit(found, to_pymatgen(as_crystal(truth)))
print(
    f"best: {best.spacegroup}, Rwp {best.rwp:.4f}, refined a = "
    f"{best.refinement.settings['lattice'][0]:.4f} Å (true {a})"
)
print(f"matches the true structure: {same}")
if same:
    rms = matcher.get_rms_dist(found, to_pymatgen(as_crystal(truth)))[0]
    print(f"  normalised RMS displacement {rms:.4f}")

if len(sys.argv) > 1:
    out = res.write(sys.argv[1], force=True)
    print(f"wrote {out}")
