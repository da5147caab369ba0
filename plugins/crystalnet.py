"""The CrystalNet solver: pattern -> electron density -> candidate atoms.

The method of Guo et al., npj Comput. Mater. 10 (2024), "CrystalNet":

1. encode the pattern, composition and lattice into a latent mean and
   standard deviation;
2. draw one latent sample per candidate;
3. decode each sample into a periodic electron density (e/Å^3) on a
   fractional grid of the conventional cell;
4. pick atom sites from the density, assign elements from the composition
   and symmetrise with spglib;
5. rank the candidates by how well their simulated pattern matches the
   data.

Steps 1-3 run in :mod:`diffpy_mlsolve.model.predict`, step 4 in
:mod:`diffpy_mlsolve.atoms`, the quick R factor of step 5 in
:mod:`diffpy_mlsolve.rfactor`; with ``refine="rietveld"`` (or ``"pdf"``)
every candidate is refined and ranked by its refined Rwp.  Without a
shipped or given model :meth:`CrystalNetSolver.solve` raises
:class:`ModelNotAvailableError` instead of returning made-up candidates.
A candidate whose density yields no structure is kept, flagged with the
reason in ``failed``.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from diffpy_mlsolve.errors import ModelNotAvailableError, PhysicsInputError
from diffpy_mlsolve.solver import DensitySolver, SolveResult

__all__ = ["CrystalNetSolver"]


_PHASINGS = ("flip", "flip-random")
#: Extra charge-flipping runs from random phases for a PDF input.
PDF_RANDOM_STARTS = 4
#: Space groups found in each re-divided flipped map in which it is
#: flipped again (powder patterns).
MAP_GROUPS = 2
#: Flip cycles with overlapped intensities re-divided by the map.
REPARTITION_CYCLES = 600


def _phased(
    densities, refl, cell, how, electrons=None, repartition=False, groups=0
):
    """Charge-flipped maps from extracted intensities ``refl``, seeded by
    each density's phases (or random phases for "flip-random"), holding
    ``electrons`` in the cell (default: as many as each density).

    Per density: one map flipped with the overlapped intensities shared
    equally; with ``repartition``, also one flipped with them re-divided
    by the current map (Superflip's powder mode: it solves layered
    trigonal cells and Laves phases that equal shares do not); with
    ``groups``, the last map flipped again in the (at most ``groups``)
    space groups it shows
    (:func:`diffpy_mlsolve.mapsymmetry.flip_in_groups`)."""
    import numpy as np

    from diffpy_mlsolve.mapsymmetry import flip_in_groups, symmetry_grid
    from diffpy_mlsolve.phasing import charge_flip

    out = []
    for i, d in enumerate(densities):
        count = electrons or float(np.mean(d.values) * d.volume)
        start = (
            "random phases"
            if how == "flip-random"
            else f"network {d.metadata.get('latent', i)}"
        )
        # powder maps on a grid that holds every space-group translation
        # (the map groups need it); a G(r)'s as measured, on 32
        grid = max(32, d.grid[0])
        grid = symmetry_grid(grid) if groups or repartition else grid
        runs = [{}]
        if repartition:
            runs.append(dict(repartition=True, iterations=REPARTITION_CYCLES))
        for extra in runs:
            flipped = charge_flip(
                refl,
                cell,
                grid,
                start=None if how == "flip-random" else d,
                seed=i,
                electrons=count,
                **extra,
            )
            flipped.metadata["start"] = start + (
                ", overlaps re-divided" if extra else ""
            )
            flipped.metadata["repartition"] = bool(extra)
            out.append(flipped)
        if groups:
            out += flip_in_groups(
                flipped, refl, electrons=count, max_groups=groups
            )
    return out


def _check_count(name, value, minimum, what, hint):
    """Refuse a ``value`` that is not a whole number >= ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        raise PhysicsInputError(
            f"{name} must be a whole number of {what}, {minimum} or more "
            f"({hint}), got {value!r}."
        )


def _from_pdf(gr, cell, qmax, qdamp, diameter, check_cell=True):
    """(G(r) with its Qmax in the metadata, the intensity fit, the
    equivalent powder pattern the network takes)."""
    from diffpy_mlsolve.errors import StructureError
    from diffpy_mlsolve.pdf_intensities import (
        MAX_CELL_RW,
        equivalent_powder,
        pdf_intensities,
    )

    fit = pdf_intensities(gr, cell, qmax=qmax, qdamp=qdamp, diameter=diameter)
    if check_cell and fit.rw > MAX_CELL_RW:
        raise StructureError(
            f"The cell {tuple(cell)} fits this G(r) only to Rw "
            f"{fit.rw:.2f} (the Bragg intensities of a right cell fit to "
            f"about the noise; above {MAX_CELL_RW} the cell is not that of "
            "the data). Please check the cell."
        )
    gr = gr.with_metadata(qmax=fit.qmax)
    return gr, fit, equivalent_powder(fit)


def _pdf_electrons(gr, composition, cell):
    """Electrons in the cell from G(r)'s number density and the
    composition's mean Z (None when the slope is not usable)."""
    from pymatgen.core import Element

    from diffpy_mlsolve.atoms import parse_composition
    from diffpy_mlsolve.pdf_intensities import number_density
    from diffpy_mlsolve.structures import cell_volume

    rho0 = number_density(gr)
    if rho0 is None:
        return None
    amounts = parse_composition(composition)
    zbar = sum(Element(e).Z * n for e, n in amounts.items()) / sum(
        amounts.values()
    )
    return rho0 * float(cell_volume(cell)) * zbar


def _pdf_refine_settings(refine, settings, fit):
    """For the "pdf" refiner: start the particle diameter at the fitted
    one unless the user gave a start."""
    settings = dict(settings or {})
    name = refine if isinstance(refine, str) else getattr(refine, "name", "")
    if name == "pdf" and fit.diameter is not None:
        settings.setdefault("diameter", fit.diameter)
    return settings


class CrystalNetSolver(DensitySolver):
    """Structure solution with the CrystalNet density network.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N"} or None
        Where the network runs; "auto" takes a CUDA GPU when there is one.
    weights : str, Path or None
        A checkpoint folder (the resolved config and the weights); None
        takes the shipped model: ``crystalnet-default`` for a powder
        pattern, ``crystalnet-nanopdf`` (fine-tuned on nanocrystal G(r))
        for a G(r).

    Raises
    ------
    ModelNotAvailableError
        When ``weights`` is given but is not an existing folder.
    """

    requires = ("torch",)
    install_hint = "pip install torch (see https://pytorch.org)"

    def __init__(self, device: str | None = "auto", weights=None):
        super().__init__(device=device)
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_dir():
                what = "a file, not a folder" if path.is_file() else "missing"
                raise ModelNotAvailableError(
                    f"The checkpoint folder {str(path)!r} is {what}. Please "
                    "pass weights= the folder a training run wrote (its "
                    "config and weights), or leave weights=None for the "
                    "shipped model."
                )
            weights = path
        self.weights = weights
        self._predictors = {}  # by the pattern kind when weights is None

    def solve(
        self,
        pattern,
        composition,
        lattice,
        n_candidates: int = 5,
        *,
        composition_mode: str = "full",
        formula_units: int | None = None,
        grid: int | None = None,
        seed: int = 0,
        latent_steps: int = 0,
        phasing: str | None = "flip",
        map_groups: int = MAP_GROUPS,
        centring: str | None = None,
        site_search: bool = True,
        check_cell: bool = True,
        n_cells: int = 2,
        refine: str | None = None,
        refine_settings: dict | None = None,
        refine_top: int | None = None,
        qmax: float | None = None,
        qdamp: float | None = None,
        diameter: float | None = None,
        **kw,
    ) -> SolveResult:
        """Propose ``n_candidates`` structures for ``pattern``.

        Parameters
        ----------
        pattern : Pattern
            The measured powder pattern (2θ with its wavelength, Q or d),
            or a PDF G(r) (xtype "r", e.g. a nanoparticle's ``.gr``): its
            Bragg intensities are fitted in r
            (:func:`diffpy_mlsolve.pdf_intensities.pdf_intensities`) and
            rendered as the powder pattern the network takes; candidates
            are ranked by their G(r) Rw.
        composition : str or Mapping
            The element ratios, e.g. ``"NaCl"``.
        lattice : sequence of 6 floats or None
            a, b, c in Å and alpha, beta, gamma in degrees of the
            conventional standard cell.  None: the pattern is indexed
            (:func:`diffpy_mlsolve.indexing.index_pattern`) and the
            ``n_cells`` best cells are solved; each candidate's ``info``
            names its cell.
        n_candidates : int
            Candidate densities: the mean latent, then latent samples.
        composition_mode : {"full", "elements"}
            "elements" gives the network only which elements are present.
        formula_units : int, optional
            Formula units per cell (Z); default: from the electron count
            of each predicted density.
        grid : int, optional
            Density grid points per edge (default: the model's).
        seed : int
            Seed of the latent samples.
        latent_steps : int
            Adam steps of latent refinement against the pattern (0: none);
            each candidate's ``info`` then has the pattern R factor of its
            density before and after.
        phasing : {"flip", "flip-random", None}
            "flip": each network density also starts charge flipping on
            intensities extracted from the pattern
            (:mod:`diffpy_mlsolve.phasing`), and the phased maps join the
            candidates; "flip-random" starts from random phases instead
            (an ablation that ignores the network); None uses the
            network's densities only.  The best ``n_candidates`` are kept.
            For a powder pattern each start is flipped twice: with
            overlapped intensities shared equally, and re-divided by the
            current map every 10 cycles (``charge_flip(repartition=True)``).
        map_groups : int
            The re-divided map of each start is also flipped again in up
            to this many space groups found in it
            (:func:`diffpy_mlsolve.mapsymmetry.flip_in_groups`); 0: P1
            maps only.  Powder patterns only (a G(r) is flipped in P1).
        centring : {None, "auto", "F", "I", "C", "A", "B", "R"}
            A lattice centring whose extinctions are imposed on the
            extracted intensities before flipping (an overlapped group's
            sum goes to its allowed members only; "R": obverse, on
            hexagonal axes).  "auto": the one the intensities show
            (:func:`diffpy_mlsolve.phasing.find_centring`), if any.
            Default None: none imposed (on 30 test patterns "auto"
            changed no top-1 result; see the README).  The one used is
            in ``settings["centring"]``.
        site_search : bool
            For a powder pattern with ``phasing``, or a G(r): choose each
            density's sites among its peaks (single sites, and whole
            orbits of the groups the density shows) by the fit to the
            extracted intensities and rank by the profile Rwp through
            the extraction's profile, or by the G(r) Rw through the
            fitted envelope (:mod:`diffpy_mlsolve.sitesearch`); False:
            sites by peak height, ranked by the quick R factor (the G(r)
            Rw of :func:`~diffpy_mlsolve.rfactor.pdf_rfactor`).
        check_cell : bool
            First make sure the cell indexes the strongest peaks
            (:func:`diffpy_mlsolve.cellcheck.check_cell`); for a G(r),
            that its reflections fit it (intensity-fit Rw at most
            :data:`~diffpy_mlsolve.pdf_intensities.MAX_CELL_RW`).
        refine : str, optional
            A refiner name ("rietveld", "pdf"): refine the best
            ``n_candidates`` (by the quick R factor) and rank by the
            refined Rwp.
        refine_settings : dict, optional
            Passed to the refiner.  For a PDF refined with "pdf" the
            diameter fitted to the data is the default starting diameter.
        refine_top : int, optional
            With ``refine``: refine only the best ``refine_top`` of the
            candidates by the solver's own ranking (default: all
            ``n_candidates``); the refined ones rank first.
        qmax, qdamp, diameter : float, optional
            For a PDF: its Qmax (default: the pattern's metadata, and one
            is needed), the instrument Qdamp and the particle diameter in
            Å (default: fitted).
        **kw
            Passed to :func:`diffpy_mlsolve.atoms.structure_from_density`
            (``min_distance``, ``threshold``, ``symprec``).

        Returns
        -------
        SolveResult
            Ranked by refined Rwp when refined, else by the quick pattern
            R factor; the same structure found twice is ranked after the
            distinct ones.

        Raises
        ------
        ModelNotAvailableError
            If no trained model is shipped and none was given.
        StructureError
            When the composition cannot fill the cell with the given
            ``formula_units``, or the cell leaves strong peaks unindexed.
        """
        from diffpy_mlsolve.errors import StructureError
        from diffpy_mlsolve.model.predict import DensityPredictor
        from diffpy_mlsolve.phasing import (
            centred,
            check_centring,
            find_centring,
        )
        from diffpy_mlsolve.ranking import candidates_from_densities

        if phasing is not None and phasing not in _PHASINGS:
            raise PhysicsInputError(
                f"Unknown phasing {phasing!r}. Please use one of "
                f"{_PHASINGS} or None."
            )
        _check_count(
            "map_groups", map_groups, 0, "space groups", "0: P1 maps only"
        )
        if centring not in (None, "auto"):
            check_centring(centring)
        if refine_top is not None:
            _check_count(
                "refine_top", refine_top, 1, "candidates", "None: all"
            )
        if lattice is None and getattr(pattern, "xtype", None) == "r":
            raise StructureError(
                "A PDF G(r) cannot be indexed here; please give the cell "
                "(lattice=(a, b, c, alpha, beta, gamma), or --cell)."
            )
        if lattice is None:
            return self._solve_indexed(
                pattern,
                composition,
                n_candidates,
                n_cells,
                dict(
                    composition_mode=composition_mode,
                    formula_units=formula_units,
                    grid=grid,
                    seed=seed,
                    latent_steps=latent_steps,
                    phasing=phasing,
                    map_groups=map_groups,
                    centring=centring,
                    site_search=site_search,
                    refine=refine,
                    refine_settings=refine_settings,
                    refine_top=refine_top,
                    **kw,
                ),
            )
        cell = self.check_inputs(pattern, composition, lattice, n_candidates)
        if centring not in (None, "auto"):
            check_centring(centring, cell)  # before the network runs
        kind = "r" if pattern.xtype == "r" and self.weights is None else ""
        if kind not in self._predictors:
            self._predictors[kind] = DensityPredictor(
                self.weights, self.torch_device, xtype=pattern.xtype
            )
        predictor = self._predictors[kind]
        pdf_fit = None
        if pattern.xtype == "r":
            pattern, pdf_fit, data = _from_pdf(
                pattern, cell, qmax, qdamp, diameter, check_cell
            )
            refine_settings = _pdf_refine_settings(
                refine, refine_settings, pdf_fit
            )
        else:
            if (qmax, qdamp, diameter) != (None, None, None):
                raise PhysicsInputError(
                    "qmax, qdamp and diameter apply to a PDF G(r) input; "
                    f"this pattern has xtype {pattern.xtype!r}."
                )
            data = pattern
            if check_cell:
                from diffpy_mlsolve.cellcheck import check_cell as _check

                _check(pattern, cell)
        batch = predictor.batch(data, composition, cell, composition_mode)
        densities = predictor.predict(
            batch,
            cell,
            n_candidates,
            grid,
            seed,
            pattern=data,
            latent_steps=latent_steps,
        )
        refl = None
        if phasing is not None:
            if pdf_fit is not None:
                refl = pdf_fit.for_phasing()
            else:
                from diffpy_mlsolve.phasing import extract_intensities

                refl = extract_intensities(pattern, cell)
            if centring == "auto":
                centring = find_centring(refl)
            refl = centred(refl, centring)
            electrons = None
            if pdf_fit is not None:
                electrons = _pdf_electrons(pattern, composition, cell)
            # the re-divided and symmetry-constrained flips are measured
            # on powder patterns only: a G(r) keeps equal shares in P1
            powder = pdf_fit is None
            flipped = _phased(
                densities,
                refl,
                cell,
                phasing,
                electrons,
                repartition=powder,
                groups=map_groups if powder else 0,
            )
            if pdf_fit is not None and phasing == "flip":
                # flipping on PDF intensities succeeds about one start in
                # two: more starts, the G(r) Rw picks
                starts = (densities * PDF_RANDOM_STARTS)[:PDF_RANDOM_STARTS]
                flipped += _phased(
                    starts, refl, cell, "flip-random", electrons
                )
            densities = flipped + (
                [] if phasing == "flip-random" else densities
            )
        # sites by the fit: to the powder profile, or to the G(r)
        # (sitesearch.scorer_for)
        searched = None
        if site_search:
            searched = refl if pdf_fit is None else pdf_fit.reflections
        candidates = candidates_from_densities(
            densities,
            pattern,
            composition,
            formula_units=formula_units,
            refine=refine,
            refine_settings=refine_settings,
            refine_top=n_candidates if refine_top is None else refine_top,
            reflections=searched,
            **kw,
        )[:n_candidates]
        return SolveResult(
            candidates=candidates,
            inputs={
                "pattern": getattr(pattern, "source", "") or "<arrays>",
                "composition": str(composition),
                "lattice": cell,
                "composition_mode": composition_mode,
                "formula_units": formula_units,
            },
            settings={
                "solver": "crystalnet",
                "weights": str(predictor.path),
                "device": str(predictor.device),
                "n_candidates": n_candidates,
                "seed": seed,
                "latent_steps": latent_steps,
                "phasing": phasing,
                "map_groups": (
                    map_groups if phasing and pdf_fit is None else None
                ),
                "centring": centring if phasing else None,
                "site_search": searched is not None,
                "refine": refine,
                "pdf_fit": (
                    None
                    if pdf_fit is None
                    else {
                        "diameter": pdf_fit.diameter,
                        "qdamp": pdf_fit.qdamp,
                        "qmax": pdf_fit.qmax,
                        "rw": pdf_fit.rw,
                        "groups": pdf_fit.reflections.ngroups,
                    }
                ),
                "model_meta": {
                    k: predictor.meta.get(k) for k in ("step", "val")
                },
            },
        )

    def _solve_indexed(self, pattern, composition, n_candidates, n_cells, kw):
        """Index the pattern, solve in each of the best cells, rank all
        candidates together."""
        from diffpy_mlsolve.errors import (
            MissingBackendError,
            MLSolveError,
            StructureError,
        )
        from diffpy_mlsolve.indexing import index_pattern
        from diffpy_mlsolve.ranking import rank_candidates

        self.check_inputs(pattern, composition, (1,) * 3 + (90,) * 3, 1)
        cells = index_pattern(pattern, n_best=int(n_cells))
        found, tried, last = [], [], None
        for cell in cells:
            entry = {
                "lattice": [round(float(v), 5) for v in cell.lattice],
                "bravais": cell.bravais,
                "figure_of_merit": cell.figure_of_merit,
            }
            tried.append(entry)
            try:
                res = self.solve(
                    pattern,
                    composition,
                    tuple(cell.lattice),
                    n_candidates,
                    check_cell=False,
                    **kw,
                )
            except (ModelNotAvailableError, MissingBackendError):
                raise  # not about this cell: the user must fix it
            except MLSolveError as err:  # this cell gave no structure
                entry["error"] = str(err)
                continue
            last = res
            for cand in res.candidates:
                info = dict(cand.info)
                info["cell"] = entry
                found.append(_replace(cand, info=info))
        if last is None:
            reasons = "; ".join(e.get("error", "") for e in tried)
            raise StructureError(
                f"No indexed cell gave a structure ({reasons}). Please "
                "give the cell."
            )
        ranked = rank_candidates(found)[:n_candidates]
        inputs = dict(last.inputs, lattice=None)
        settings = dict(last.settings, indexed_cells=tried)
        return SolveResult(candidates=ranked, inputs=inputs, settings=settings)


def _replace(cand, **changes):
    from dataclasses import replace

    return replace(cand, **changes)
