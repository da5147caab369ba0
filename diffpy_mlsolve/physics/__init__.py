"""Differentiable crystallography kernels in torch.

Pure tensor-in/tensor-out functions, batched over structures, on CPU or
GPU, float32 or float64, with no I/O.  The user layer in
:mod:`diffpy_mlsolve.simulate` turns structures into these tensors.

Modules
-------
lattice      cell parameters -> metric tensors, volumes, Cartesian frames
formfactors  Waasmaier-Kirfel neutral-atom X-ray form factors
reflections  hkl sets, d-spacings, structure factors, Lorentz-polarisation
profile      pseudo-Voigt powder profiles and instrument effects
powder       structure factors -> powder pattern on a 2θ grid
density      structure factors <-> electron density on a fractional grid
pdf          pair distribution function G(r) of crystals and nanoparticles
"""
