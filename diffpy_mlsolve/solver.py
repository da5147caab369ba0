"""The structure-solution step: its result types and plugin base classes.

- :class:`Candidate`: one proposed structure (and its density), with its
  figures of merit; ``candidate.refine("rietveld", pattern)`` hands it to
  a refiner plugin.
- :class:`SolveResult`: the ranked candidates of one ``solve`` call, and
  ``write(dir)`` for the files of a run.
- :class:`RefinementResult`: what a refiner gives back.
- :class:`DensitySolver` and :class:`Refiner`: the base classes of solver
  and refiner plugins (found through entry points, see
  :mod:`diffpy_mlsolve.plugins`).

No physics lives here; numpy is the only import at module level.
"""

from __future__ import annotations

import abc
import json
import math
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from diffpy_mlsolve.errors import (
    MissingBackendError,
    OutputExistsError,
    PatternFormatError,
    PhysicsInputError,
    StructureError,
)
from diffpy_mlsolve.plugins import missing_modules
from diffpy_mlsolve.version import __version__

__all__ = [
    "Candidate",
    "SolveResult",
    "RefinementResult",
    "DensitySolver",
    "Refiner",
]

# files SolveResult.write owns in its folder (replaced under force=True)
_OWN_FILES = re.compile(
    r"^(best\.cif|report\.json|candidate_\d+\.cif|density_\d+\.(map|xsf)"
    r"|fit_\d+\.png|density_\d+\.png)$"
)


def _frozen_mapping(value) -> Mapping:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, eq=False, kw_only=True)
class RefinementResult:
    """A refined structure and its fit.

    Attributes
    ----------
    structure : diffpy.structure.Structure
        The refined structure.
    rwp : float
        Weighted-profile R factor of the fit (a fraction, not percent).
    x : ndarray
        The fitted grid in the pattern's own units (2θ degrees, Q Å^-1 or
        r Å).
    yobs, ycalc : ndarray
        Observed and calculated curves on ``x``.
    gof : float or None
        Goodness of fit (chi^2 per degree of freedom), when known.
    settings : Mapping
        The refiner's settings, for the report.
    """

    structure: Any
    rwp: float
    x: np.ndarray
    yobs: np.ndarray
    ycalc: np.ndarray
    gof: float | None = None
    settings: Mapping = field(default_factory=dict)

    def __post_init__(self):
        arrays = {}
        for name in ("x", "yobs", "ycalc"):
            a = np.array(getattr(self, name), dtype=float)
            a.setflags(write=False)
            arrays[name] = a
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or arrays["x"].ndim != 1:
            raise PhysicsInputError(
                "A refinement result needs x, yobs and ycalc as 1-D arrays "
                f"of one length, got shapes {arrays['x'].shape}, "
                f"{arrays['yobs'].shape}, {arrays['ycalc'].shape}."
            )
        for name, a in arrays.items():
            object.__setattr__(self, name, a)
        object.__setattr__(self, "rwp", float(self.rwp))
        object.__setattr__(self, "settings", _frozen_mapping(self.settings))

    @property
    def ydiff(self) -> np.ndarray:
        """``yobs - ycalc``."""
        return self.yobs - self.ycalc

    def plot(self, path=None, ax=None, title: str | None = None):
        """Observed, calculated and difference curves.

        Parameters
        ----------
        path : str or Path, optional
            Save the figure there (PNG) and close it.
        ax : matplotlib Axes, optional
            Draw into it instead of a new figure.
        title : str, optional

        Returns
        -------
        matplotlib Axes
        """
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(8, 4.5))
        units = {
            "tth": "2θ (deg)",
            "q": "Q (Å$^{-1}$)",
            "r": "r (Å)",
            "d": "d (Å)",
        }
        xtype = self.settings.get("xtype", "tth")
        span = float(np.ptp(self.yobs)) or 1.0
        offset = float(self.yobs.min()) - 0.15 * span
        ax.plot(self.x, self.yobs, ".", ms=2, color="tab:blue", label="obs")
        ax.plot(self.x, self.ycalc, "-", lw=1, color="tab:red", label="calc")
        ax.plot(
            self.x,
            self.ydiff + offset,
            "-",
            lw=0.8,
            color="tab:gray",
            label="obs − calc",
        )
        ax.set_xlabel(units.get(xtype, "x"))
        ax.set_ylabel("G(r) (Å$^{-2}$)" if xtype == "r" else "intensity")
        label = "Rw" if xtype == "r" else "Rwp"
        ax.set_title(title or f"{label} = {self.rwp:.4f}")
        ax.legend(loc="upper right", frameon=False)
        if path is not None:
            (fig or ax.figure).savefig(str(path), dpi=120, bbox_inches="tight")
            plt.close(fig or ax.figure)
        return ax


@dataclass(frozen=True, eq=False, kw_only=True)
class Candidate:
    """One candidate structure proposed by a solver.

    Attributes
    ----------
    rank : int
        1 for the solver's best guess, then 2, 3, ...
    structure : diffpy.structure.Structure or None
        The atoms, in the conventional standard cell; None when site
        finding failed.
    density : Density or None
        The predicted electron density (e/Å^3) the atoms were read from.
    pattern_rfactor : float or None
        R factor between the data and the candidate's simulated pattern.
    rwp : float or None
        Rwp after refinement, when refined.
    spacegroup : str or None
        Space-group symbol found by spglib.
    failed : str or None
        Why this candidate has no usable structure, or None.
    symmetry : SymmetrizedStructure or None
        Space group and asymmetric unit (written to the CIF).
    refinement : RefinementResult or None
        The refinement behind ``rwp``, when refined.
    info : Mapping
        Further figures for the report (formula units, shortest distance,
        peak-height misfit, ...).
    """

    rank: int
    structure: Any = None
    density: Any = None
    pattern_rfactor: float | None = None
    rwp: float | None = None
    spacegroup: str | None = None
    failed: str | None = None
    symmetry: Any = None
    refinement: Any = None
    info: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "info", _frozen_mapping(self.info))

    def _require_structure(self):
        if self.structure is None:
            why = f" ({self.failed})" if self.failed else ""
            raise StructureError(
                f"Candidate {self.rank} has no structure{why}. Please use "
                "another candidate, e.g. SolveResult.best."
            )
        return self.structure

    def to_pymatgen(self):
        """The candidate's structure as a pymatgen ``Structure``.

        Sites keep their displacement parameters as the site property
        ``biso`` (Å^2).
        """
        from diffpy_mlsolve.structures import as_crystal, to_pymatgen

        stru = self._require_structure()
        return to_pymatgen(as_crystal(stru, standardize=False))

    def refine(self, refiner, pattern, **settings) -> RefinementResult:
        """Refine this candidate against ``pattern``.

        Parameters
        ----------
        refiner : str or Refiner
            A refiner name (``"rietveld"``, ``"pdf"`` or any installed
            through the ``diffpy_mlsolve.refiners`` entry points) or a
            refiner instance.
        pattern : Pattern
            The measured pattern.
        **settings
            Passed to the refiner's ``refine``.
        """
        stru = self._require_structure()
        if isinstance(refiner, str):
            from diffpy_mlsolve.plugins import get_refiner

            refiner = get_refiner(refiner)
        return refiner.refine(stru, pattern, **settings)


@dataclass(frozen=True, eq=False, kw_only=True)
class SolveResult:
    """The ranked candidates of one ``solve`` call.

    Attributes
    ----------
    candidates : tuple of Candidate
        Sorted by rank.
    inputs : Mapping
        What was solved (pattern source, composition, lattice, ...).
    settings : Mapping
        The solver's settings (name, device, sampling, ...).
    """

    candidates: tuple = ()
    inputs: Mapping = field(default_factory=dict)
    settings: Mapping = field(default_factory=dict)

    def __post_init__(self):
        cands = tuple(sorted(self.candidates, key=lambda c: c.rank))
        object.__setattr__(self, "candidates", cands)
        object.__setattr__(self, "inputs", _frozen_mapping(self.inputs))
        object.__setattr__(self, "settings", _frozen_mapping(self.settings))

    @property
    def best(self) -> Candidate:
        """The best-ranked candidate that did not fail.

        Raises
        ------
        StructureError
            When every candidate failed (the message gives the reasons).
        """
        for cand in self.candidates:
            if cand.failed is None and cand.structure is not None:
                return cand
        reasons = "; ".join(
            f"{c.rank}: {c.failed or 'no structure'}" for c in self.candidates
        )
        raise StructureError(
            f"No usable candidate among {len(self.candidates)}"
            f"{' (' + reasons + ')' if reasons else ''}. Please rerun with "
            "more candidates or check the composition and lattice."
        )

    def _best_or_none(self) -> Candidate | None:
        try:
            return self.best
        except StructureError:
            return None

    def report(self) -> dict:
        """The content of ``report.json`` (without the file names)."""
        best = self._best_or_none()
        return {
            "versions": _versions(),
            "inputs": dict(self.inputs),
            "settings": dict(self.settings),
            "best_rank": None if best is None else best.rank,
            "candidates": [
                {
                    "rank": c.rank,
                    "spacegroup": c.spacegroup,
                    "pattern_rfactor": c.pattern_rfactor,
                    "rwp": c.rwp,
                    "failed": c.failed,
                    "has_structure": c.structure is not None,
                    "has_density": c.density is not None,
                    **_symmetry_report(c.symmetry),
                    **dict(c.info),
                    **_refinement_report(c.refinement),
                }
                for c in self.candidates
            ],
        }

    def write(self, out_dir, force: bool = False) -> Path:
        """Write the run into ``out_dir``: CIFs and ``report.json``.

        Writes ``candidate_NN.cif`` for every candidate with a structure,
        ``best.cif`` for :attr:`best`, ``density_NN.map`` (CCP4) and
        ``density_NN.xsf`` (VESTA) and ``density_NN.png`` (slices with
        the picked sites) for every candidate with a density,
        ``fit_NN.png`` (obs/calc/difference) for every refined candidate,
        and ``report.json`` (inputs, settings, versions, per-candidate
        figures and the files written).  CIFs carry the space group and
        asymmetric unit when the candidate has one.

        Parameters
        ----------
        out_dir : str or Path
            The folder; created if missing.
        force : bool
            Write into an existing non-empty folder, replacing the files a
            previous run wrote there (other files are left alone).

        Returns
        -------
        Path
            The folder.

        Raises
        ------
        OutputExistsError
            ``out_dir`` is a file, or a non-empty folder without ``force``;
            nothing is written then.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise OutputExistsError(
                f"{str(out)!r} exists and is not a folder. Please choose "
                "another output folder."
            )
        if out.is_dir() and any(out.iterdir()):
            if not force:
                raise OutputExistsError(
                    f"The output folder {str(out)!r} exists and is not "
                    "empty. Please choose another folder or rerun with "
                    "force=True (--force) to replace its results."
                )
            for old in out.iterdir():
                if old.is_file() and _OWN_FILES.match(old.name):
                    old.unlink()
        out.mkdir(parents=True, exist_ok=True)
        report = self.report()
        best = self._best_or_none()
        for entry, cand in zip(report["candidates"], self.candidates):
            entry["cif"] = None
            if cand.density is not None:
                stem = f"density_{cand.rank:02d}"
                cand.density.write_ccp4(out / f"{stem}.map")
                cand.density.write_xsf(out / f"{stem}.xsf")
                _plot_density(cand, out / f"{stem}.png")
                entry["density_maps"] = [f"{stem}.map", f"{stem}.xsf"]
                entry["density_plot"] = f"{stem}.png"
            if cand.refinement is not None:
                name = f"fit_{cand.rank:02d}.png"
                cand.refinement.plot(
                    out / name,
                    title=f"candidate {cand.rank}: "
                    f"R = {cand.refinement.rwp:.4f}",
                )
                entry["fit_plot"] = name
            if cand.structure is None:
                continue
            name = f"candidate_{cand.rank:02d}.cif"
            _write_cif(cand, out / name)
            entry["cif"] = name
        if best is not None:
            _write_cif(best, out / "best.cif")
            report["best_cif"] = "best.cif"
        text = json.dumps(report, indent=2, default=_jsonable)
        (out / "report.json").write_text(text + "\n", encoding="utf-8")
        return out


# distributions whose versions a report records, when installed
_REPORTED = (
    "numpy",
    "scipy",
    "torch",
    "spglib",
    "pymatgen",
    "diffpy.structure",
    "pyobjcryst",
    "diffpy.srfit",
    "diffpy.srreal",
    "gemmi",
)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {
        "diffpy_mlsolve": __version__,
        "python": platform.python_version(),
    }
    for name in _REPORTED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _symmetry_report(sym) -> dict:
    if sym is None:
        return {}
    return {
        "spacegroup_number": sym.number,
        "lattice": list(sym.lattice),
        "asymmetric_unit": [
            {
                "element": e,
                "wyckoff": w,
                "xyz": [round(float(v), 5) for v in x],
            }
            for e, w, x in zip(sym.elements, sym.wyckoff, sym.frac)
        ],
        "symprec": sym.symprec,
    }


def _refinement_report(ref) -> dict:
    if ref is None:
        return {}
    return {
        "gof": ref.gof,
        "refinement": {
            k: v for k, v in dict(ref.settings).items() if k != "xtype"
        },
    }


def _plot_density(cand, path: Path) -> None:
    """Three slices of the density through its highest peak, with the
    sites picked from it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    values = np.asarray(cand.density.values)
    n = values.shape[0]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    sites = None
    picked = cand.info.get("picked_sites")
    if picked:  # in the density's frame (not the CIF's standard setting)
        sites = (picked["elements"], np.asarray(picked["frac"], float))
    for axis, ax in enumerate(axes):
        # the slice through the highest peak along this axis
        k = int(np.unravel_index(np.argmax(values), values.shape)[axis])
        img = np.take(values, k, axis=axis)
        ax.imshow(img.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
        names = "abc".replace("abc"[axis], "")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_title(f"{'abc'[axis]} = {k / n:.3f}")
        if sites is not None:
            dims = [d for d in range(3) if d != axis]
            near = np.abs(((sites[1][:, axis] - k / n) + 0.5) % 1 - 0.5)
            for el, x, d in zip(sites[0], sites[1], near):
                if d < 0.5 / n + 0.02:
                    ax.plot(x[dims[0]], x[dims[1]], "r+", ms=8)
                    ax.annotate(
                        el, (x[dims[0]], x[dims[1]]), color="w", fontsize=7
                    )
    fig.suptitle(f"candidate {cand.rank}: ρ (e/Å$^3$)")
    fig.savefig(str(path), dpi=100, bbox_inches="tight")
    plt.close(fig)


def _write_cif(cand: Candidate, path: Path) -> None:
    """The candidate's CIF: with its space group and asymmetric unit when
    it has them, else the cell's atoms in P1."""
    if cand.symmetry is not None:
        cand.symmetry.write_cif(path, name=path.stem)
        return
    from diffpy.structure import Structure as DiffpyStructure

    structure = cand.structure
    if not isinstance(structure, DiffpyStructure):  # e.g. pymatgen
        from diffpy_mlsolve.structures import as_crystal, to_diffpy

        structure = to_diffpy(as_crystal(structure, standardize=False))
    structure.write(str(path), "cif")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, complex)):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return repr(value)


_DEVICES = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DensitySolver(abc.ABC):
    """Base class of structure solvers (``diffpy.structure_solvers``).

    Settings go to the constructor, data to :meth:`solve`.  A subclass
    sets ``requires`` (module names checked before it is handed out) and
    ``install_hint`` (how to install them).

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N"} or None
        Where to compute; "auto" (or None) takes a CUDA GPU when torch sees
        one.  Resolved through torch only when :attr:`torch_device` is
        first used.
    """

    requires: tuple[str, ...] = ()
    install_hint: str = ""

    def __init__(self, device: str | None = "auto"):
        name = "auto" if device is None else str(device)
        if not _DEVICES.match(name):
            raise PhysicsInputError(
                f"Unknown device {device!r}. Please use 'auto', 'cpu', "
                "'cuda' or 'cuda:N'."
            )
        self.device = name
        self._torch_device = None

    @property
    def torch_device(self):
        """The resolved ``torch.device`` (imports torch on first use)."""
        if self._torch_device is None:
            from diffpy_mlsolve.device import resolve_device

            self._torch_device = resolve_device(self.device)
        return self._torch_device

    @abc.abstractmethod
    def solve(
        self, pattern, composition, lattice, n_candidates: int = 5, **kw
    ) -> SolveResult:
        """Propose ``n_candidates`` structures for ``pattern``.

        Parameters
        ----------
        pattern : Pattern
            The measured pattern.
        composition : str or Mapping
            The cell's composition, e.g. ``"NaCl"`` or ``{"Na": 4, "Cl": 4}``.
        lattice : sequence of 6 floats
            a, b, c in Å and alpha, beta, gamma in degrees.
        n_candidates : int
            How many candidates to return.
        """

    @staticmethod
    def check_inputs(pattern, composition, lattice, n_candidates) -> tuple:
        """Light checks shared by solvers; returns the lattice as 6 floats.

        Raises
        ------
        PatternFormatError, StructureError, PhysicsInputError
            For a missing pattern, an empty composition, a lattice that is
            not six positive finite numbers or a bad ``n_candidates``.
        """
        if pattern is None:
            raise PatternFormatError(
                "No pattern given. Please pass a Pattern, e.g. from "
                "load_pattern('data.xy', wavelength=1.5406)."
            )
        if isinstance(composition, str):
            empty = not composition.strip()
        elif isinstance(composition, Mapping):
            empty = len(composition) == 0
        else:
            raise StructureError(
                f"Cannot read a composition from a "
                f"{type(composition).__name__}. Please pass a formula such "
                "as 'NaCl' or a mapping such as {'Na': 4, 'Cl': 4}."
            )
        if empty:
            raise StructureError(
                "The composition is empty. Please give the cell contents, "
                "e.g. 'NaCl'."
            )
        try:
            cell = tuple(float(v) for v in lattice)
        except (TypeError, ValueError):
            cell = ()
        ok = len(cell) == 6 and all(math.isfinite(v) for v in cell)
        if (
            not ok
            or min(cell[:3]) <= 0
            or not all(0 < v < 180 for v in cell[3:])
        ):
            raise StructureError(
                f"The lattice must be six numbers (a, b, c in Å > 0, alpha, "
                f"beta, gamma in degrees between 0 and 180), got {lattice!r}."
            )
        if isinstance(n_candidates, bool) or not isinstance(
            n_candidates, (int, np.integer)
        ):
            raise PhysicsInputError(
                f"n_candidates must be a whole number, got {n_candidates!r}."
            )
        if n_candidates < 1:
            raise PhysicsInputError(
                f"n_candidates must be at least 1, got {n_candidates}."
            )
        return cell


class Refiner(abc.ABC):
    """Base class of refiners (``diffpy_mlsolve.refiners``).

    A subclass names the modules it needs in ``requires`` (checked with
    :func:`importlib.util.find_spec`, so listing plugins never imports a
    backend) and how to install them in ``install_hint``; it imports the
    backend only inside :meth:`refine`.
    """

    requires: tuple[str, ...] = ()
    install_hint: str = ""

    @classmethod
    def missing_backends(cls) -> list[str]:
        """The modules in ``requires`` that are not installed."""
        return missing_modules(cls.requires)

    @classmethod
    def check_backend(cls) -> None:
        """Raise :class:`MissingBackendError` when a backend is missing."""
        missing = cls.missing_backends()
        if missing:
            raise MissingBackendError(
                f"{cls.__name__} needs {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed. "
                f"{cls.install_hint}"
            )

    @abc.abstractmethod
    def refine(self, structure, pattern, **settings) -> RefinementResult:
        """Refine ``structure`` against ``pattern``."""
