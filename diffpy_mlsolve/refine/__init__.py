"""Refinement drivers behind the first-party refiner plugins.

Each module drives one optional backend and is imported only when its
refiner runs, so ``import diffpy_mlsolve`` and listing plugins stay light:

- :mod:`diffpy_mlsolve.refine.rietveld`: Rietveld refinement of a powder
  pattern in pyobjcryst (ObjCryst++);
- :mod:`diffpy_mlsolve.refine.pdf`: real-space refinement of a PDF G(r)
  in diffpy.srfit.
"""
