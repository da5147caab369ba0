"""Chain a powder solution into a diffpy.srfit PDF refinement.

Solve the perovskite SrTiO3 (written here) from a lab Cu Kα powder
pattern with the crystalnet solver and Rietveld, then hand the best
candidate to diffpy.srfit: ``make_pdf_recipe`` builds a FitRecipe of a
spherical nanoparticle against a G(r) of 4 nm SrTiO3 particles (simulated
here); the script frees one more parameter the recipe keeps fixed
(``delta2``, correlated motion) to show the recipe is the user's to
extend, refines it and prints Rw, the lattice and the particle diameter:

    .venv/bin/python examples/refine_pdf_chain.py [OUTDIR]
"""

import sys

from diffpy.structure import Atom, Lattice, Structure

import diffpy_mlsolve as ms
from diffpy_mlsolve.refine.pdf import fit_recipe, pdf_result

a = 3.905
sto = Structure(
    [
        Atom("Sr", (0, 0, 0), Uisoequiv=0.008),
        Atom("Ti", (0.5, 0.5, 0.5), Uisoequiv=0.005),
        Atom("O", (0.5, 0.5, 0), Uisoequiv=0.010),
        Atom("O", (0.5, 0, 0.5), Uisoequiv=0.010),
        Atom("O", (0, 0.5, 0.5), Uisoequiv=0.010),
    ],
    lattice=Lattice(a, a, a, 90, 90, 90),
)

# 1. solve from the powder pattern, refined by Rietveld
powder = ms.simulate_pxrd(
    sto,
    "CuKa",
    tth_range=(15, 120),
    npoints=5251,
    fwhm=0.09,
    eta=0.4,
    counts=5e4,
    seed=1,
)
solver = ms.get_solver("crystalnet", device="cpu")
res = solver.solve(
    powder, "SrTiO3", (a, a, a, 90, 90, 90), n_candidates=2, refine="rietveld"
)
best = res.best
print(f"powder solution: {best.spacegroup}, Rietveld Rwp {best.rwp:.4f}")

# 2. the PDF of 4 nm particles, as PDFgetX3 would give it
gr = ms.simulate_pdf(sto, rmax=30.0, qmax=22.0, qdamp=0.04, diameter=40.0)

# 3. an srfit recipe of the solved structure, extended and refined
recipe = ms.make_pdf_recipe(best.structure, gr, diameter=30.0, rmax=30.0)
recipe.free("delta2")  # a parameter the recipe builds but keeps fixed
stages = fit_recipe(recipe)
fit = pdf_result(recipe, stages)
print(
    f"PDF refinement: Rw {fit.rwp:.4f}, a = {fit.settings['lattice'][0]:.4f}"
    f" Å (true {a}), diameter {fit.settings['diameter']:.1f} Å (true 40.0)"
)
print("diameter within 10 %:", abs(fit.settings["diameter"] / 40.0 - 1) < 0.1)

if len(sys.argv) > 1:
    out = res.write(sys.argv[1], force=True)
    fit.plot(
        out / "pdf_fit.png", title=f"SrTiO3 nanoparticle: Rw {fit.rwp:.4f}"
    )
    print(f"wrote {out}")
