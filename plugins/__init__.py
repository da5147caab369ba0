"""First-party plugins of diffpy-mlsolve, installed as
``diffpy_mlsolve_plugins`` and registered only through the entry points in
setup.py, exactly as a third party would register its own:

- ``crystalnet`` (``diffpy.structure_solvers``): the density-network solver.
- ``rietveld`` (``diffpy_mlsolve.refiners``): Rietveld refinement in
  pyobjcryst.
- ``pdf`` (``diffpy_mlsolve.refiners``): PDF refinement in diffpy.srfit.

Each module stays light to import; backends load inside the methods.
"""
