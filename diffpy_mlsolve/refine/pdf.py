"""PDF refinement in diffpy.srfit: a crystal or a spherical nanoparticle
fitted to a measured G(r).

:func:`make_pdf_recipe` builds a :class:`diffpy.srfit.fitbase.FitRecipe`
that users can extend; :func:`fit_recipe` refines it in stages with
:func:`scipy.optimize.least_squares`; :func:`pdf_result` reads a fitted
recipe back as a :class:`~diffpy_mlsolve.solver.RefinementResult`;
:func:`refine_pdf` does all three.

G(r) comes from diffpy.srreal's ``PDFCalculator`` when diffpy.srreal is
installed, otherwise from this package's own kernel,
:func:`diffpy_mlsolve.physics.pdf.pdf_of_crystal` (X-ray weights Z, the
diffpy.pdffit2 convention), wrapped as the srfit profile generator
:class:`MLSolvePDFGenerator`.  Both expose the same parameters (``scale``,
``qdamp``, ``qbroad``, ``delta1``, ``delta2``) and hold the structure as
a ``DiffpyStructureParSet`` named ``phase``.

Layout of a recipe from :func:`make_pdf_recipe`::

    recipe.pdf               FitContribution; profile x is "r"
    recipe.pdf.G             the PDF generator (bulk crystal G(r))
    recipe.pdf.G.phase       DiffpyStructureParSet of the refined cell
    equation                 "G", or "sphericalCF(r, psize) * G" for a
                             nanoparticle (srfit's sphericalCF)

Variables (their tag in brackets): ``scale`` [scale]; the lattice
parameters the space group leaves free, ``a``, ``c``, ... [lattice];
the free fractional coordinates, ``x_O1``, ``z_Al1``, ... [xyz]; one
``Biso_<site>`` per symmetry-independent site (or ``Biso_<element>``)
in Å^2 [adp]; ``qdamp`` [qdamp]; ``qbroad`` and ``delta2`` [qbroad,
delta2; fixed]; ``psize``, the particle diameter in Å [psize], for a
nanoparticle.  Site labels are element + running number in the order of
the asymmetric unit, as in the CIFs this package writes (srfit's own atom
ParameterSets count every atom of the cell from 0: ``phase.Na0``,
``phase.Na1``, ...).

The structure is refined in spglib's standardized setting of its space
group (:func:`diffpy_mlsolve.symmetry.find_symmetry`), matched to the
diffpy.structure space group with the same operations, so the lattice,
positions and ADPs are constrained by ``constrainAsSpaceGroup``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffpy_mlsolve.errors import (
    MissingBackendError,
    PatternFormatError,
    PhysicsInputError,
    StructureError,
)

__all__ = [  # noqa: F822 (MLSolvePDFGenerator: module __getattr__)
    "CALCULATOR_MLSOLVE",
    "CALCULATOR_SRREAL",
    "DEFAULT_STAGES",
    "MLSolvePDFGenerator",
    "PDFRecipeInfo",
    "fit_recipe",
    "make_pdf_recipe",
    "pdf_result",
    "refine_pdf",
]

#: ``settings["calculator"]`` when G(r) comes from this package's kernel.
CALCULATOR_MLSOLVE = "diffpy_mlsolve.physics.pdf"
#: ``settings["calculator"]`` when G(r) comes from diffpy.srreal.
CALCULATOR_SRREAL = "srreal"
#: Tags freed stage by stage (cumulatively) by :func:`fit_recipe`: scale,
#: then the lattice, then ADPs and qdamp, then positions, then the
#: particle diameter.
DEFAULT_STAGES = (
    ("scale",),
    ("lattice",),
    ("adp", "qdamp"),
    ("xyz",),
    ("psize",),
)
#: Starting qdamp (Å^-1) when neither the argument nor the pattern gives it.
DEFAULT_QDAMP = 0.03
#: Default lower end of the fit range (Å): below it measured G(r) holds
#: only ripples and noise.
DEFAULT_RMIN = 1.0
#: The fewest points a fit range may hold.
MIN_FIT_POINTS = 10

_B_FROM_U = 8.0 * math.pi**2
_SRFIT_HINT = "Please run pip install 'diffpy-mlsolve[pdf]'."
_ELEMENT = re.compile(r"[A-Z][a-z]?")


def _require_srfit() -> None:
    if importlib.util.find_spec("diffpy.srfit") is None:
        raise MissingBackendError(
            "PDF refinement needs diffpy.srfit, which is not installed. "
            + _SRFIT_HINT
        )


def _has_srreal() -> bool:
    try:
        return importlib.util.find_spec("diffpy.srreal") is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run torch with ``n`` intra-op threads, then restore the setting."""
    import torch

    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@functools.lru_cache(maxsize=None)
def _generator_class():
    """Define :class:`MLSolvePDFGenerator` (needs diffpy.srfit)."""
    _require_srfit()
    from diffpy.srfit.exceptions import SrFitError
    from diffpy.srfit.fitbase import ProfileGenerator
    from diffpy.srfit.structure import struToParameterSet

    class MLSolvePDFGenerator(ProfileGenerator):
        """srfit profile generator: bulk X-ray G(r) of a crystal, computed
        with :func:`diffpy_mlsolve.physics.pdf.pdf_of_crystal`.

        A drop-in for srfit's ``PDFGenerator`` where diffpy.srreal is not
        installed: the same parameters, ``setStructure``/``setPhase``,
        ``setQmax`` and the structure as the managed ParameterSet
        ``phase``.  Only isotropic displacements are used (``Uisoequiv``
        of each atom); the X-ray weight of an atom is its atomic number
        (diffpy.pdffit2's convention).

        Managed Parameters
        ------------------
        scale
            Scale factor.
        qdamp, qbroad
            Instrument resolution damping and peak broadening (Å^-1).
        delta1, delta2
            Correlated-motion peak sharpening (Å, Å^2), as in pdffit2:
            ``σ_ij^2 → σ_ij^2 (1 − δ1/r − δ2/r^2 + qbroad^2 r^2)``.

        Attributes
        ----------
        num_threads : int or None
            torch intra-op threads during a calculation (default 1: a fit
            calls the kernel hundreds of times on small arrays, where
            threads only add overhead); None leaves torch's setting.
        """

        _parnames = ("scale", "qdamp", "qbroad", "delta1", "delta2")

        def __init__(self, name="G", num_threads=1):
            ProfileGenerator.__init__(self, name)
            self._phase = None
            self.stru = None
            self.num_threads = num_threads
            self._qmax = None
            self._z = {}
            self._cache = (None, None)
            self.newParameter("scale", 1.0)
            for pname in self._parnames[1:]:
                self.newParameter(pname, 0.0)

        def setStructure(self, stru, name="phase", periodic=True):
            """Adapt a diffpy.structure Structure as the ParameterSet
            ``name`` and compute its PDF (a periodic crystal only)."""
            self.setPhase(struToParameterSet(name, stru), periodic)

        def setPhase(self, parset, periodic=True):
            """Use a DiffpyStructureParSet as the structure."""
            if not periodic:
                raise SrFitError(
                    "MLSolvePDFGenerator computes the PDF of a periodic "
                    "crystal; use diffpy.srreal's DebyePDFGenerator for a "
                    "finite cluster."
                )
            self._phase = parset
            self.stru = parset.stru
            self.addParameterSet(parset)

        def setQmax(self, qmax):
            """Set the Qmax (Å^-1) of the termination ripples (None: none)."""
            self._qmax = None if qmax is None else float(qmax)
            self.meta["qmax"] = self._qmax

        def getQmax(self):
            return self._qmax

        def setScatteringType(self, stype="X"):
            """Only X-ray ("X") is available."""
            if str(stype).upper() != "X":
                raise ValueError(
                    f"MLSolvePDFGenerator computes X-ray PDFs only, not "
                    f"{stype!r}."
                )
            self.meta["stype"] = "X"

        def getScatteringType(self):
            return "X"

        def processMetaData(self):
            ProfileGenerator.processMetaData(self)
            if self.meta.get("qmax") is not None:
                self.setQmax(self.meta["qmax"])

        def _validate(self):
            if self._phase is None:
                raise SrFitError("_phase is None")
            ProfileGenerator._validate(self)

        def _atomic_numbers(self, elements):
            from diffpy_mlsolve.structures import _symbol_to_z

            out = []
            for el in elements:
                if el not in self._z:
                    self._z[el] = _symbol_to_z(el, "")
                out.append(self._z[el])
            return out

        def _bulk(self, r):
            """Unscaled G(r) of the current structure (cached)."""
            import torch

            from diffpy_mlsolve.physics.pdf import pdf_of_crystal

            stru = self._phase.stru
            lat = stru.lattice
            lattice = [lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma]
            frac = np.asarray(stru.xyz, float).reshape(-1, 3)
            numbers = self._atomic_numbers(stru.element)
            occ = np.asarray(stru.occupancy, float)
            biso = _B_FROM_U * np.asarray(stru.Uisoequiv, float)
            shape = [self._qmax or 0.0] + [
                float(self.get(p).value) for p in self._parnames[1:]
            ]
            key = (
                np.concatenate(
                    [lattice, frac.ravel(), numbers, occ, biso, shape]
                ).tobytes()
                + np.asarray(r, float).tobytes()
            )
            if self._cache[0] == key:
                return self._cache[1]
            f64 = dict(dtype=torch.float64)
            with _torch_threads(self.num_threads), torch.no_grad():
                g = pdf_of_crystal(
                    torch.tensor(lattice, **f64),
                    torch.as_tensor(frac, **f64),
                    torch.tensor(numbers),
                    torch.as_tensor(occ, **f64),
                    torch.as_tensor(biso, **f64),
                    torch.as_tensor(np.asarray(r, float), **f64),
                    qmax=self._qmax,
                    qdamp=shape[1],
                    qbroad=shape[2],
                    delta1=shape[3],
                    delta2=shape[4],
                ).numpy()
            self._cache = (key, g)
            return g

        def __call__(self, r):
            """G(r) (Å^-2) of the structure on ``r`` (Å)."""
            return self.scale.value * self._bulk(r)

    MLSolvePDFGenerator.__module__ = __name__
    MLSolvePDFGenerator.__qualname__ = "MLSolvePDFGenerator"
    return MLSolvePDFGenerator


def __getattr__(name):
    # MLSolvePDFGenerator subclasses srfit's ProfileGenerator: defined on
    # first use so that importing this module never needs diffpy.srfit
    if name == "MLSolvePDFGenerator":
        return _generator_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class PDFRecipeInfo:
    """What :func:`make_pdf_recipe` set up; ``recipe.mlsolve`` holds it.

    Attributes
    ----------
    calculator : str
        :data:`CALCULATOR_SRREAL` or :data:`CALCULATOR_MLSOLVE`.
    spacegroup : diffpy.structure.spacegroupmod.SpaceGroup
        The group the structure is constrained to, in the setting of the
        refined cell.
    symbol, number : str, int
        Its Hermann-Mauguin symbol (spglib's spelling) and number.
    qmax, rmin, rmax : float
        Qmax (Å^-1) of the calculation and the fit range (Å).
    site_labels : tuple of str
        The ADP group label (``"Na1"``, or ``"Na"`` for ADPs per element)
        of each atom of the refined cell.
    tags : dict
        Tag -> names of the variables make_pdf_recipe added with it.
    has_sigma : bool
        Whether the data carry uncertainties (for the goodness of fit).
    symmetry : SymmetrizedStructure or None
        What :func:`~diffpy_mlsolve.symmetry.find_symmetry` found (None
        for a P1 refinement).
    """

    calculator: str
    spacegroup: Any
    symbol: str
    number: int
    qmax: float
    rmin: float
    rmax: float
    site_labels: tuple
    tags: dict = field(default_factory=dict)
    has_sigma: bool = False
    symmetry: Any = None


# --------------------------------------------------------------- inputs


def _meta(pattern, key):
    """A number from the pattern's metadata (key case-insensitive)."""
    for k, v in pattern.metadata.items():
        if str(k).lower() == key and v is not None:
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
    return None


def _as_pdf_pattern(pattern):
    from diffpy_mlsolve.pattern import Pattern

    if isinstance(pattern, (str, Path)):
        from diffpy_mlsolve.pattern import load_pattern

        pattern = load_pattern(pattern)
    if not isinstance(pattern, Pattern):
        raise PatternFormatError(
            f"The PDF refiner needs a Pattern of G(r) (xtype 'r'), got a "
            f"{type(pattern).__name__}. Please load it with "
            "load_pattern('file.gr') or Pattern.from_arrays(r, g, "
            "xtype='r')."
        )
    if pattern.xtype != "r":
        kind = {"tth": "2θ", "q": "Q", "d": "d-spacing"}[pattern.xtype]
        raise PatternFormatError(
            f"The PDF refiner fits G(r) (xtype 'r'), but this is a {kind} "
            f"powder pattern (xtype {pattern.xtype!r}). Please use the "
            "'rietveld' refiner for powder patterns, or load the PDF with "
            "xtype='r'."
        )
    return pattern


def _fit_range(pattern, rmin, rmax):
    x = pattern.x
    tol = 1e-6 * max(1.0, float(x[-1]))
    lo = float(x[0]) if rmin is None else float(rmin)
    if rmin is None and lo < DEFAULT_RMIN and x[-1] > DEFAULT_RMIN:
        lo = float(x[np.searchsorted(x, DEFAULT_RMIN - tol)])
    hi = float(x[-1]) if rmax is None else float(rmax)
    span = f"{x[0]:g} to {x[-1]:g} Å"
    if lo < x[0] - tol:
        raise PhysicsInputError(
            f"rmin={lo:g} Å is below the data, which cover r = {span}. "
            f"Please give rmin >= {x[0]:g}."
        )
    if hi > x[-1] + tol:
        raise PhysicsInputError(
            f"rmax={hi:g} Å is beyond the data, which cover r = {span}. "
            f"Please give rmax <= {x[-1]:g}."
        )
    inside = int(np.count_nonzero((x >= lo - tol) & (x <= hi + tol)))
    if not hi > lo or inside < MIN_FIT_POINTS:
        raise PhysicsInputError(
            f"The fit range rmin={lo:g} to rmax={hi:g} Å holds {inside} "
            f"data point(s); it needs rmin < rmax and at least "
            f"{MIN_FIT_POINTS} points. The data cover r = {span}."
        )
    return lo, hi


def _qmax(pattern, qmax):
    value = qmax if qmax is not None else _meta(pattern, "qmax")
    if value is None:
        raise PhysicsInputError(
            "The PDF refiner needs the Qmax of the data (Å^-1), which sets "
            "the termination ripples; the pattern's metadata has none. "
            "Please pass qmax=... (e.g. qmax=25.0)."
        )
    if not (np.isfinite(value) and value > 0):
        raise PhysicsInputError(
            f"qmax must be a positive number (Å^-1), got {value}."
        )
    return float(value)


def _resolve_calculator(calculator):
    key = str(calculator).lower()
    if key == "auto":
        return CALCULATOR_SRREAL if _has_srreal() else CALCULATOR_MLSOLVE
    if key in ("srreal", "diffpy.srreal"):
        if not _has_srreal():
            raise MissingBackendError(
                "calculator='srreal' needs diffpy.srreal, which is not "
                "installed. Please install it or pass calculator='auto'."
            )
        return CALCULATOR_SRREAL
    if key in ("mlsolve", "torch", CALCULATOR_MLSOLVE):
        return CALCULATOR_MLSOLVE
    raise PhysicsInputError(
        f"Unknown calculator {calculator!r}. Please use 'auto', 'srreal' "
        f"or {CALCULATOR_MLSOLVE!r}."
    )


def _check_structure(structure):
    if structure is None:
        raise StructureError(
            "The PDF refiner got no structure. Please pass a diffpy or "
            "pymatgen Structure, a CIF path or a candidate's structure."
        )
    try:
        empty = len(structure) == 0
    except TypeError:
        empty = False
    if empty:
        raise StructureError(
            "The structure to refine has no atoms. Please give at least "
            "one site."
        )


# ------------------------------------------------------------ symmetry


def _op_key(rot, trans):
    t = np.mod(np.round(np.asarray(trans, float) * 24.0) / 24.0, 1.0)
    t[np.isclose(t, 1.0)] = 0.0
    rot = tuple(np.rint(np.asarray(rot, float)).astype(int).ravel())
    return rot, tuple(np.round(t, 6))


def _diffpy_spacegroup(sym):
    """The diffpy.structure SpaceGroup with the operations of ``sym``.

    diffpy's default setting of a group number is used when it holds the
    same operations as spglib's standardized setting (true for every
    group checked, origin choice 1 of Fd-3m and hexagonal axes of R
    groups included); otherwise the diffpy setting with those operations,
    or a SpaceGroup built from them.
    """
    from diffpy.structure.spacegroupmod import SpaceGroup, SymOp
    from diffpy.structure.spacegroups import FindSpaceGroup, GetSpaceGroup

    wanted = {_op_key(r, t) for r, t in zip(sym.rotations, sym.translations)}
    default = GetSpaceGroup(sym.number)
    ops = {_op_key(o.R, o.t) for o in default.iter_symops()}
    if ops == wanted:
        return default
    symops = []
    for rot, t in sorted(wanted):
        symops.append(
            SymOp(np.array(rot, float).reshape(3, 3), np.array(t, float))
        )
    try:
        return FindSpaceGroup(symops, shuffle=True)
    except ValueError:
        pass
    return SpaceGroup(
        number=sym.number,
        num_sym_equiv=len(symops),
        num_primitive_sym_equiv=len({rot for rot, _ in wanted}),
        short_name=sym.symbol.replace("_", ""),
        point_group_name=default.point_group_name,
        crystal_system=default.crystal_system,
        pdb_name=sym.symbol,
        symop_list=symops,
    )


def _ideal_lattice(lattice, crystal_system):
    """Lattice parameters with the angles and equal edges of the system
    made exact (srfit tests gamma == 120 to tell hexagonal axes)."""
    a, b, c, al, be, ga = map(float, lattice)
    angles = []
    for x in (al, be, ga):
        for target in (60.0, 90.0, 120.0):
            if abs(x - target) < 1e-3:
                x = target
        angles.append(x)
    al, be, ga = angles
    system = (crystal_system or "TRICLINIC").upper()
    if system == "CUBIC":
        a = b = c = (a + b + c) / 3.0
    elif system in ("TETRAGONAL", "HEXAGONAL") or (
        system == "TRIGONAL" and ga == 120.0
    ):
        a = b = (a + b) / 2.0
    elif system == "TRIGONAL":
        a = b = c = (a + b + c) / 3.0
        al = be = ga = (al + be + ga) / 3.0
    return a, b, c, al, be, ga


def _cell_to_refine(structure, spacegroup, symprec):
    """(diffpy Structure, diffpy SpaceGroup, symbol, number, symmetry)."""
    from diffpy.structure.spacegroups import GetSpaceGroup

    from diffpy_mlsolve.structures import as_crystal, to_diffpy
    from diffpy_mlsolve.symmetry import SymmetrizedStructure, find_symmetry

    wanted = None
    if spacegroup is not None:
        try:
            wanted = GetSpaceGroup(spacegroup)
        except ValueError:
            raise StructureError(
                f"Unknown space group {spacegroup!r}. Please give a number "
                "(1-230), a Hermann-Mauguin symbol such as 'Fm-3m', or "
                "spacegroup=None to find it."
            ) from None
        if wanted.number == 1:
            if isinstance(structure, SymmetrizedStructure):
                crystal = structure.to_crystal()
            else:
                crystal = as_crystal(structure, standardize=False)
            return to_diffpy(crystal), wanted, "P1", 1, None
    if isinstance(structure, SymmetrizedStructure):
        sym = structure
    else:
        sym = find_symmetry(structure, symprec=symprec, keep_cell=False)
    if wanted is not None and wanted.number % 1000 != sym.number:
        raise StructureError(
            f"The structure has space group {sym.symbol} (No. {sym.number}) "
            f"at symprec={symprec}, not {spacegroup!r}. Please pass "
            "spacegroup=None to use the group found, or spacegroup='P1' "
            "to refine without symmetry."
        )
    sg = _diffpy_spacegroup(sym)
    stru = sym.to_diffpy()
    stru.lattice.setLatPar(*_ideal_lattice(sym.lattice, sg.crystal_system))
    return stru, sg, sym.symbol, sym.number, sym


def _floating_axes(sg) -> list[str]:
    """Axes along which the origin is free (polar directions)."""
    rots = [np.asarray(op.R, float) for op in sg.iter_symops()]
    return [
        axis
        for k, axis in enumerate("xyz")
        if all(np.allclose(r[:, k], np.eye(3)[k]) for r in rots)
    ]


def _site_groups(stru, sg, adp):
    """Label of each atom (its ADP group) and label of each generator."""
    from diffpy.structure.symmetryutilities import SymmetryConstraints

    elements = []
    for atom in stru:
        m = _ELEMENT.search(str(atom.element).strip().capitalize())
        elements.append(m.group(0) if m else str(atom.element))
    owner = list(range(len(stru)))
    g = SymmetryConstraints(sg, np.asarray(stru.xyz, float))
    for gen, members in g.coremap.items():
        for j in members:
            owner[j] = gen
    labels, keys, counts = [], {}, {}
    for j, el in enumerate(elements):
        key = el if adp == "element" else (owner[j], el)
        if key not in keys:
            counts[el] = counts.get(el, 0) + 1
            keys[key] = el if adp == "element" else f"{el}{counts[el]}"
        labels.append(keys[key])
    site_of_generator, counts = {}, {}
    for gen in sorted(g.coremap):
        el = elements[gen]
        counts[el] = counts.get(el, 0) + 1
        site_of_generator[gen] = f"{el}{counts[el]}"
    return labels, site_of_generator


# -------------------------------------------------------------- recipe


def make_pdf_recipe(
    structure,
    pattern,
    *,
    qmax: float | None = None,
    qdamp: float | None = None,
    qbroad: float = 0.0,
    diameter: float | None = None,
    rmin: float | None = None,
    rmax: float | None = None,
    spacegroup=None,
    symprec=0.01,
    adp: str = "site",
    refine_qdamp: bool | None = None,
    calculator: str = "auto",
):
    """A diffpy.srfit FitRecipe that fits ``structure`` to the PDF
    ``pattern``, constrained by the structure's space group.

    Parameters
    ----------
    structure : diffpy or pymatgen Structure, CIF path, CrystalArrays or
        SymmetrizedStructure
        The starting structure.  Its space group is found with
        :func:`~diffpy_mlsolve.symmetry.find_symmetry` at ``symprec`` and
        the structure is refined in that group's standardized cell
        (spglib's setting), with per-element mean B and occupancy as
        starting values; a B of 0 starts at 1 Å^2.
    pattern : Pattern or path
        The measured G(r) (xtype ``"r"``, r in Å); ``sigma``, when
        present, weights the fit.
    qmax : float, optional
        Qmax of the data (Å^-1); default ``pattern.metadata["qmax"]``.
    qdamp : float, optional
        Instrument damping (Å^-1).  Given here or in the pattern's
        metadata it is fixed; otherwise it starts at 0.03 and is refined.
    qbroad : float
        Instrument peak broadening (Å^-1), fixed (``recipe.free("qbroad")``
        refines it).
    diameter : float, optional
        Starting diameter (Å) of a spherical nanoparticle: G(r) is
        multiplied by srfit's ``sphericalCF(r, psize)`` and ``psize`` is
        refined.  None (default) fits a bulk crystal.
    rmin, rmax : float, optional
        Fit range (Å); default the data's range from r = 1 Å on.
    spacegroup : int, str or None
        None (default) uses the group found; a number or symbol must
        match it; ``"P1"`` (or 1) refines the cell as given without
        symmetry (every coordinate free but an origin-fixing one).
    symprec : float or sequence of float
        spglib tolerance(s) in Å for finding the group.
    adp : {"site", "element"}
        One ``Biso`` per symmetry-independent site (default) or one per
        element.
    refine_qdamp : bool, optional
        Override whether ``qdamp`` is refined.
    calculator : {"auto", "srreal", "diffpy_mlsolve.physics.pdf"}
        diffpy.srreal's PDFCalculator when installed ("auto"), or this
        package's kernel.

    Returns
    -------
    diffpy.srfit.fitbase.FitRecipe
        Laid out as in this module's docstring, silent (no fit hooks),
        with ``recipe.mlsolve`` a :class:`PDFRecipeInfo`.  Extend it as
        any srfit recipe (``recipe.addVar``, ``recipe.fix``,
        ``recipe.restrain``, ...) and refine it with :func:`fit_recipe`
        or ``scipy.optimize.least_squares(recipe.residual,
        recipe.getValues())``.

    Raises
    ------
    MissingBackendError
        Without diffpy.srfit (or diffpy.srreal when asked for).
    PatternFormatError
        For a powder pattern (xtype 'tth', 'q' or 'd'): use 'rietveld'.
    PhysicsInputError
        Without qmax, for a fit range beyond the data, or a diameter
        smaller than the longest cell edge.
    StructureError
        For an empty structure, or a space group that does not match.
    """
    _require_srfit()
    from diffpy.srfit.fitbase import FitContribution, FitRecipe, Profile
    from diffpy.srfit.pdf.characteristicfunctions import sphericalCF
    from diffpy.srfit.structure import constrainAsSpaceGroup

    _check_structure(structure)
    pattern = _as_pdf_pattern(pattern)
    qmax = _qmax(pattern, qmax)
    lo, hi = _fit_range(pattern, rmin, rmax)
    if adp not in ("site", "element"):
        raise PhysicsInputError(
            f"adp must be 'site' or 'element', got {adp!r}."
        )
    calc = _resolve_calculator(calculator)
    qdamp_meta = _meta(pattern, "qdamp")
    qdamp_start = qdamp if qdamp is not None else qdamp_meta
    if refine_qdamp is None:
        refine_qdamp = qdamp_start is None
    if qdamp_start is None:
        qdamp_start = DEFAULT_QDAMP
    for name, value in (("qdamp", qdamp_start), ("qbroad", qbroad)):
        if not (np.isfinite(value) and value >= 0):
            raise PhysicsInputError(f"{name} must be >= 0 Å^-1, got {value}.")

    stru, sg, symbol, number, sym = _cell_to_refine(
        structure, spacegroup, symprec
    )
    longest = max(stru.lattice.a, stru.lattice.b, stru.lattice.c)
    if diameter is not None and not (
        np.isfinite(diameter) and diameter >= longest
    ):
        raise PhysicsInputError(
            f"diameter={diameter} Å is smaller than the longest cell edge "
            f"of {symbol}, {longest:.3f} Å. Please give the particle "
            "diameter in Å (diameter >= the cell edge), or diameter=None "
            "for a bulk crystal."
        )
    for atom in stru:
        if not atom.Uisoequiv > 0:
            atom.Bisoequiv = 1.0

    # data and calculator
    profile = Profile()
    sigma = pattern.sigma
    profile.setObservedProfile(pattern.x, pattern.intensity, sigma)
    profile.setCalculationRange(lo, hi)
    contribution = FitContribution("pdf")
    contribution.setProfile(profile, xname="r")
    if calc == CALCULATOR_SRREAL:
        from diffpy.srfit.pdf import PDFGenerator

        gen = PDFGenerator("G")
        gen.setStructure(stru, name="phase", periodic=True)
        gen.setScatteringType("X")
    else:
        gen = _generator_class()("G")
        gen.setStructure(stru, name="phase")
    gen.setQmax(qmax)
    contribution.addProfileGenerator(gen)
    if diameter is not None:
        contribution.registerFunction(
            sphericalCF, name="sphericalCF", argnames=["r", "psize"]
        )
        contribution.setEquation("sphericalCF(r, psize) * G")
        contribution.psize.value = float(diameter)

    recipe = FitRecipe("pdffit")
    recipe.clearFitHooks()
    recipe.addContribution(contribution)
    tags: dict[str, list[str]] = {}

    def add(par, tag, value=None, fixed=False, lb=None, ub=None, name=None):
        var = recipe.addVar(par, value, name=name, fixed=fixed, tag=tag)
        var.boundRange(lb, ub)
        tags.setdefault(tag, []).append(var.name)
        return var

    add(gen.scale, "scale", lb=0.0)

    # symmetry: lattice and positions through constrainAsSpaceGroup, one
    # isotropic B per symmetry-independent site (or element) by hand
    phase = gen.phase
    sgpars = constrainAsSpaceGroup(phase, sg, constrainadps=False)
    for par in sgpars.latpars:
        value = par.value
        if par.name in ("a", "b", "c"):
            add(par, "lattice", lb=0.8 * value, ub=1.25 * value)
        else:
            add(par, "lattice", lb=max(1.0, value - 30), ub=value + 30)
    labels, site_of = _site_groups(stru, sg, adp)
    floating = _floating_axes(sg)
    for par in sgpars.xyzpars:
        axis, idx = par.name.rsplit("_", 1)
        fixed = axis in floating
        if fixed:
            floating.remove(axis)
        add(par, "xyz", name=f"{axis}_{site_of[int(idx)]}", fixed=fixed)
    for label in dict.fromkeys(labels):
        members = [i for i, lab in enumerate(labels) if lab == label]
        start = float(np.mean([phase.atoms[i].Biso.value for i in members]))
        var = recipe.newVar(f"Biso_{label}", start, tag="adp")
        var.boundRange(0.0, 20.0)
        tags.setdefault("adp", []).append(var.name)
        for i in members:
            recipe.constrain(phase.atoms[i].Biso, var)

    add(gen.qdamp, "qdamp", qdamp_start, not refine_qdamp, lb=0.0, ub=1.0)
    add(gen.qbroad, "qbroad", float(qbroad), True, lb=0.0, ub=1.0)
    add(gen.delta2, "delta2", 0.0, True, lb=0.0, ub=20.0)
    if diameter is not None:
        add(contribution.psize, "psize", lb=1.0)

    recipe.mlsolve = PDFRecipeInfo(
        calculator=calc,
        spacegroup=sg,
        symbol=symbol,
        number=number,
        qmax=qmax,
        rmin=lo,
        rmax=hi,
        site_labels=tuple(labels),
        tags={k: tuple(v) for k, v in tags.items()},
        has_sigma=sigma is not None,
        symmetry=sym,
    )
    return recipe


# ----------------------------------------------------------------- fit


def _rw(contribution) -> float:
    p = contribution.profile
    w = 1.0 / np.asarray(p.dy, float) ** 2
    y = np.asarray(p.y, float)
    diff = y - np.asarray(p.ycalc, float)
    den = float(np.sum(w * y * y))
    return math.sqrt(float(np.sum(w * diff * diff)) / den) if den else 0.0


def _recipe_rw(recipe) -> float:
    """Rw over every contribution (weights 1/dy^2)."""
    num = den = 0.0
    for con in getattr(recipe, "_contributions", {}).values():
        p = con.profile
        w = 1.0 / np.asarray(p.dy, float) ** 2
        y = np.asarray(p.y, float)
        num += float(np.sum(w * (y - np.asarray(p.ycalc, float)) ** 2))
        den += float(np.sum(w * y * y))
    return math.sqrt(num / den) if den else 0.0


def _stage_passes(recipe, stages, free0):
    info = getattr(recipe, "mlsolve", None)
    tags = info.tags if isinstance(info, PDFRecipeInfo) else {}
    passes, active = [], set()
    for stage in stages:
        if isinstance(stage, str):
            stage = (stage,)
        for tag in stage:
            active |= set(tags.get(tag, ()))
            if tag in free0:
                active.add(tag)
        names = [n for n in free0 if n in active]
        if names and (not passes or names != passes[-1]):
            passes.append(names)
    if not passes or passes[-1] != free0:
        passes.append(list(free0))
    return passes


def fit_recipe(
    recipe,
    stages=DEFAULT_STAGES,
    *,
    max_nfev: int = 100,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    diff_step: float = 1e-6,
) -> list[dict]:
    """Refine a recipe in stages with ``scipy.optimize.least_squares``.

    Parameters
    ----------
    recipe : FitRecipe
        Any srfit recipe; with one from :func:`make_pdf_recipe` the stages
        name tags of its variables.
    stages : sequence of tuple of str
        Tags or variable names freed stage by stage, cumulatively
        (:data:`DEFAULT_STAGES`: scale, lattice, ADPs and qdamp,
        positions, particle diameter).  Only variables free when this is
        called take part; a last pass refines all of them.
    max_nfev : int
        Most residual evaluations per stage (finite-difference Jacobians
        not counted).
    ftol, xtol : float
        least_squares tolerances.
    diff_step : float
        Relative finite-difference step.

    Returns
    -------
    list of dict
        Per pass: the free variables (``free``), ``rw`` after it,
        ``nfev``, ``status`` and least_squares' ``message``.  The recipe
        is left at the refined values with its free/fixed state restored.
    """
    from scipy.optimize import least_squares

    free0 = list(recipe.getNames())
    if not free0:
        raise PhysicsInputError(
            "The recipe has no free variables. Please free some, e.g. "
            "recipe.free('scale')."
        )
    history = []
    try:
        for names in _stage_passes(recipe, stages, free0):
            recipe.fix("all")
            recipe.free(*names)
            lb, ub = (np.asarray(b, float) for b in recipe.getBounds2())
            x0 = np.clip(np.asarray(recipe.getValues(), float), lb, ub)
            res = least_squares(
                recipe.residual,
                x0,
                bounds=(lb, ub),
                x_scale="jac",
                diff_step=diff_step,
                max_nfev=max_nfev,
                ftol=ftol,
                xtol=xtol,
            )
            recipe.residual(res.x)
            history.append(
                {
                    "free": list(names),
                    "rw": _recipe_rw(recipe),
                    "nfev": int(res.nfev),
                    "status": int(res.status),
                    "message": str(res.message),
                }
            )
    finally:
        recipe.fix("all")
        recipe.free(*free0)
    return history


def pdf_result(recipe, history=None):
    """The :class:`~diffpy_mlsolve.solver.RefinementResult` of a recipe
    from :func:`make_pdf_recipe` at its current values.

    ``rwp`` holds Rw (a fraction, weights 1/sigma^2 or uniform);
    ``structure`` is a copy of the refined diffpy Structure (standardized
    cell); ``gof`` is chi^2 per degree of freedom when the data carry
    sigma, else None; ``settings`` hold the space group, refined lattice,
    scale, qdamp, qbroad, delta2, the diameter (None for bulk), Biso per
    site, free coordinates, fit range, Qmax and the calculator.
    """
    from diffpy_mlsolve.solver import RefinementResult

    info = recipe.mlsolve
    recipe.residual()
    con = recipe.pdf
    p = con.profile
    gen = con.G
    stru = gen.phase.stru.copy()
    lat = stru.lattice
    values = {
        name: float(recipe.get(name).value)
        for names in info.tags.values()
        for name in names
    }
    nfree = len(recipe.getNames())
    rw = _rw(con)
    gof = None
    if info.has_sigma:
        chi2 = float(np.sum(((p.y - p.ycalc) / p.dy) ** 2))
        dof = max(1, len(p.x) - nfree)
        gof = chi2 / dof
    psize = values.get("psize")
    settings = {
        "refiner": "pdf",
        "xtype": "r",
        "calculator": info.calculator,
        "spacegroup": info.symbol,
        "spacegroup_number": int(info.number),
        "lattice": [
            float(v)
            for v in (lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma)
        ],
        "scale": float(gen.scale.value),
        "qdamp": float(gen.qdamp.value),
        "qbroad": float(gen.qbroad.value),
        "delta2": float(gen.delta2.value),
        "diameter": None if psize is None else float(psize),
        "biso": {
            k[len("Biso_") :]: float(v)
            for k, v in values.items()
            if k.startswith("Biso_")
        },
        "xyz": {
            k: float(v)
            for k, v in values.items()
            if k in info.tags.get("xyz", ())
        },
        "qmax": info.qmax,
        "rmin": info.rmin,
        "rmax": info.rmax,
        "rw": rw,
        "free": list(recipe.getNames()),
    }
    if history is not None:
        settings["stages"] = [
            {"free": h["free"], "rw": h["rw"], "nfev": h["nfev"]}
            for h in history
        ]
    return RefinementResult(
        structure=stru,
        rwp=rw,
        x=np.array(p.x, float),
        yobs=np.array(p.y, float),
        ycalc=np.array(p.ycalc, float),
        gof=gof,
        settings=settings,
    )


def refine_pdf(
    structure,
    pattern,
    *,
    stages=DEFAULT_STAGES,
    max_nfev: int = 100,
    **options,
):
    """Refine ``structure`` against the PDF ``pattern`` in stages.

    :func:`make_pdf_recipe` (``options``: qmax, qdamp, qbroad, diameter,
    rmin, rmax, spacegroup, symprec, adp, refine_qdamp, calculator), then
    :func:`fit_recipe` (scale → lattice → ADPs and qdamp → positions →
    particle diameter), then :func:`pdf_result`.

    Returns
    -------
    RefinementResult
        ``rwp`` is Rw (a fraction); ``x`` is r (Å); ``settings["stages"]``
        the Rw after each stage.

    Raises
    ------
    The errors of :func:`make_pdf_recipe`.
    """
    unknown = set(options) - _RECIPE_OPTIONS
    if unknown:
        raise TypeError(
            f"refine_pdf() got unexpected keyword argument(s) "
            f"{', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(_RECIPE_OPTIONS | {'stages', 'max_nfev'}))}."
        )
    recipe = make_pdf_recipe(structure, pattern, **options)
    history = fit_recipe(recipe, stages, max_nfev=max_nfev)
    return pdf_result(recipe, history)


_RECIPE_OPTIONS = {
    "qmax",
    "qdamp",
    "qbroad",
    "diameter",
    "rmin",
    "rmax",
    "spacegroup",
    "symprec",
    "adp",
    "refine_qdamp",
    "calculator",
}
