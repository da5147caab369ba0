"""From a density to atom sites: peak picking, elements, symmetry.

1. Local maxima of ρ on the N^3 fractional grid, periodic (a peak across
   a cell face is one peak): a 3x3x3 max-pool with circular padding in
   torch, so it runs on the GPU beside the network.
2. Sub-voxel positions: along each axis, the vertex of the parabola
   through log ρ at the peak and its two neighbours (exact for a Gaussian
   peak), clipped to half a voxel.
3. Peaks below ``threshold`` × the highest are dropped; the rest come
   sorted by height.

:func:`find_peaks_skimage` is the CPU path with scikit-image's
``peak_local_max`` on a wrap-padded grid; the tests hold the two to the
same sites.

Then :func:`structure_from_density`:

4. how many atoms of each element the cell holds (:func:`cell_contents`):
   the composition's ratios times the formula units Z, with Z from the
   cell volume and a table of atomic volumes (:mod:`diffpy_mlsolve.
   volumes`) or from the density's electron count (∫ρ dV) unless given;
5. peaks closer than ``min_distance`` merge into the higher one;
6. peaks are assigned to element slots by a linear assignment
   (:func:`scipy.optimize.linear_sum_assignment`) on the misfit of log
   peak height to each element's expected height (a lone atom of that
   element in the same cell, band limit and B), after one common scale;
7. the sites are symmetrised with spglib at a tolerance ladder
   (:func:`diffpy_mlsolve.symmetry.find_symmetry`).

Bad cases raise :class:`~diffpy_mlsolve.errors.StructureError` with the
reason (too few peaks, a composition that cannot fill the cell), so the
solver flags the candidate instead of writing a wrong CIF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from diffpy_mlsolve.errors import StructureError

__all__ = [
    "Peaks",
    "Sites",
    "find_peaks",
    "find_peaks_skimage",
    "parse_composition",
    "cell_contents",
    "formula_unit_options",
    "assign_sites",
    "structure_from_density",
    "structures_in_group",
    "atomic_radius",
    "contact_limits",
]

# Å^3 per atom outside which a cell's contents are not a crystal
_VOLUME_PER_ATOM = (3.0, 150.0)

#: A Z whose cell volume per formula unit is off the atomic-volume
#: estimate by more than this (|ln(Z / estimate)|) is not tried: the
#: conventional cells of every second structure of the validation split
#: (1,376) are off by more than 0.3 for 1.5 %, by more than 0.4 for 0.3 %.
#: A network density's electron count, off by a factor of two for some,
#: then chooses only among Z the volume allows.
Z_TOLERANCE = 0.3
#: The spread of ln(Z / volume estimate) on that sample (0.095), with
#: which :func:`formula_unit_options` weighs a Z against its crystal
#: system's prior.
Z_SIGMA = 0.1


@dataclass(frozen=True)
class Peaks:
    """Density maxima of one cell, highest first.

    Attributes
    ----------
    frac : ndarray (K, 3)
        Fractional positions in [0, 1).
    height : ndarray (K,)
        ρ at the grid maximum (e/Å^3).
    """

    frac: np.ndarray
    height: np.ndarray

    def __len__(self) -> int:
        return int(self.height.shape[0])


def _subvoxel(logv: torch.Tensor, idx: torch.Tensor, n: int):
    """Parabola-vertex offsets (K, 3) in voxels around integer peaks."""
    offsets = []
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.long, device=idx.device)
        step[axis] = 1
        lo = torch.remainder(idx - step, n)
        hi = torch.remainder(idx + step, n)
        f0 = logv[idx[:, 0], idx[:, 1], idx[:, 2]]
        fm = logv[lo[:, 0], lo[:, 1], lo[:, 2]]
        fp = logv[hi[:, 0], hi[:, 1], hi[:, 2]]
        curv = fm - 2 * f0 + fp
        off = torch.where(
            curv < 0, 0.5 * (fm - fp) / curv, torch.zeros_like(curv)
        )
        offsets.append(off.clamp(-0.5, 0.5))
    return torch.stack(offsets, -1)


def find_peaks(values, threshold: float = 0.05, max_peaks: int = 256):
    """Periodic local maxima of a density grid.

    Parameters
    ----------
    values : array or Tensor (N, N, N)
        ρ on the fractional grid (e/Å^3), axes a, b, c.
    threshold : float
        Keep peaks at least this fraction of the highest one.
    max_peaks : int
        At most this many, highest first.

    Returns
    -------
    Peaks
    """
    if torch.is_tensor(values):
        rho = values.detach()
    else:
        rho = torch.tensor(np.array(values, dtype=float))
    if rho.dtype != torch.float64:
        rho = rho.float()
    n = rho.shape[0]
    padded = torch.nn.functional.pad(
        rho[None, None], (1, 1, 1, 1, 1, 1), mode="circular"
    )
    pooled = torch.nn.functional.max_pool3d(padded, 3, stride=1)[0, 0]
    top = rho.max()
    is_peak = (rho >= pooled) & (rho >= threshold * top) & (rho > 0)
    idx = torch.nonzero(is_peak)
    heights = rho[idx[:, 0], idx[:, 1], idx[:, 2]]
    order = torch.argsort(heights, descending=True)[:max_peaks]
    idx, heights = idx[order], heights[order]
    floor = torch.clamp(rho, min=float(top) * 1e-6)
    off = _subvoxel(torch.log(floor), idx, n)
    frac = torch.remainder((idx.to(off.dtype) + off) / n, 1.0)
    return Peaks(frac.cpu().numpy(), heights.cpu().numpy())


def find_peaks_skimage(values, threshold: float = 0.05, max_peaks=256):
    """The CPU path: scikit-image's peak_local_max on a wrap-padded grid,
    the same sub-voxel step; returns :class:`Peaks`."""
    from skimage.feature import peak_local_max

    rho = np.array(values, dtype=float)  # a writable copy
    n = rho.shape[0]
    padded = np.pad(rho, 1, mode="wrap")
    coords = peak_local_max(
        padded,
        min_distance=1,
        threshold_abs=max(threshold * rho.max(), np.finfo(float).tiny),
        exclude_border=False,
    )
    inside = np.all((coords >= 1) & (coords <= n), axis=1)
    idx = coords[inside] - 1
    heights = rho[idx[:, 0], idx[:, 1], idx[:, 2]]
    order = np.argsort(-heights, kind="stable")[:max_peaks]
    idx, heights = idx[order], heights[order]
    logv = torch.log(torch.clamp(torch.as_tensor(rho), min=rho.max() * 1e-6))
    off = _subvoxel(logv, torch.as_tensor(idx), n).numpy()
    frac = np.mod((idx + off) / n, 1.0)
    return Peaks(frac, heights)


def parse_composition(composition) -> dict[str, float]:
    """Element -> amount of a formula ("NaCl", "Fe2O3") or a mapping.

    Raises
    ------
    StructureError
        For an empty composition, an unknown element or a non-positive
        amount.
    """
    from pymatgen.core import Composition

    try:
        comp = Composition(
            dict(composition)
            if isinstance(composition, Mapping)
            else str(composition)
        )
    except Exception as err:  # pymatgen raises several kinds
        raise StructureError(
            f"Cannot read the composition {composition!r}: {err}. Please "
            "give a formula such as 'NaCl' or a mapping such as "
            "{'Na': 4, 'Cl': 4}."
        ) from err
    from pymatgen.core import Element

    bad = [str(el) for el in comp if not isinstance(el, Element)]
    if bad:
        raise StructureError(
            f"Cannot read the composition {composition!r}: {bad} "
            "are not elements. Please use element symbols, e.g. 'NaCl'."
        )
    amounts = {str(el): float(n) for el, n in comp.items()}
    if not amounts or any(n <= 0 for n in amounts.values()):
        raise StructureError(
            f"The composition {composition!r} has no positive amounts. "
            "Please give the cell contents, e.g. 'NaCl'."
        )
    return amounts


def _reduced(amounts: dict[str, float]) -> dict[str, int]:
    from pymatgen.core import Composition

    reduced, _ = Composition(amounts).get_reduced_composition_and_factor()
    out = {str(el): int(round(n)) for el, n in reduced.items()}
    if any(abs(n - round(n)) > 1e-6 for n in reduced.values()):
        raise StructureError(
            f"The composition {amounts} is not a whole-number formula. "
            "Please give whole numbers of atoms (disorder is not solved)."
        )
    return out


def cell_contents(
    composition,
    volume: float,
    *,
    electrons: float | None = None,
    formula_units: int | None = None,
) -> dict[str, int]:
    """Atoms of each element in the cell.

    Parameters
    ----------
    composition : str or Mapping
        The ratios of the elements ("NaCl" and "Na4Cl4" are the same).
    volume : float
        Cell volume (Å^3).
    electrons : float, optional
        Electrons in the cell (∫ρ dV of a density).
    formula_units : int, optional
        Formula units per cell (Z), when known.  Otherwise the first of
        :func:`formula_unit_options`: the estimate, from the atomic
        volumes (:mod:`diffpy_mlsolve.volumes`) or from ``electrons``,
        nearer a whole number.

    Raises
    ------
    StructureError
        When Z cannot be estimated (an element without a tabulated volume
        and no ``electrons``), or the contents cannot fill the cell
        (outside 3-150 Å^3 per atom).
    """
    reduced = _reduced(parse_composition(composition))
    if formula_units is None:
        options = formula_unit_options(
            composition, volume, electrons, spread=0, bounded=False
        )
        if not options:
            raise StructureError(
                "The number of formula units per cell is unknown: the "
                "volume table lacks an element of "
                f"{_formula(reduced)} and no density was given. Please "
                "pass formula_units= (Z)."
            )
        formula_units = options[0]
    elif isinstance(formula_units, bool) or int(formula_units) < 1:
        raise StructureError(
            f"formula_units must be a whole number >= 1, got "
            f"{formula_units!r}."
        )
    contents = {e: n * int(formula_units) for e, n in reduced.items()}
    natoms = sum(contents.values())
    per_atom = volume / natoms
    lo, hi = _VOLUME_PER_ATOM
    if not lo <= per_atom <= hi:
        what = "too many" if per_atom < lo else "too few"
        raise StructureError(
            f"{natoms} atoms ({_formula(contents)}) in a cell of "
            f"{volume:.1f} Å^3 is {per_atom:.1f} Å^3 per atom: {what} "
            f"atoms to fill the cell (a crystal has {lo:g}-{hi:g}). Please "
            "check the composition, the cell and formula_units."
        )
    return contents


def formula_unit_options(
    composition,
    volume: float,
    electrons: float | None = None,
    spread: int = 1,
    bounded: bool = True,
    tolerance: float | None = Z_TOLERANCE,
    systems=None,
) -> list[int]:
    """Plausible formula units per cell (Z), most likely first.

    Two estimates: the cell volume over the formula's atomic volumes
    (:func:`diffpy_mlsolve.volumes.formula_units_from_volume`, right for
    90 % of the test split when rounded) and, when given, the electrons
    of a density over the formula's (exact for a true density, off by a
    factor of two for some network densities).  Each gives its rounded
    value ± ``spread``; the options are sorted by their distance to the
    nearer estimate, so the rounded value of each comes first.  With
    ``bounded`` only Z filling the cell with 3-150 Å^3 per atom are kept,
    and with a ``tolerance`` (default :data:`Z_TOLERANCE`) only Z within
    it of the volume estimate, |ln(Z / estimate)| (the nearest if none
    is).  With the crystal ``systems`` (one or several names) the options
    are sorted instead by how likely each is: the system's prior
    (:func:`~diffpy_mlsolve.volumes.formula_unit_prior`) times a normal
    likelihood of ln(Z / volume estimate) of spread :data:`Z_SIGMA`
    (Nd2MgS4, cubic, Z = 8, estimate 9.8: 8 before 10, 9 and 11).  Empty
    when there is no estimate.
    """
    from pymatgen.core import Element

    from diffpy_mlsolve.volumes import formula_units_from_volume

    reduced = _reduced(parse_composition(composition))
    by_volume = formula_units_from_volume(reduced, volume)
    guesses = [by_volume]
    if electrons is not None and math.isfinite(electrons):
        per_formula = sum(Element(e).Z * n for e, n in reduced.items())
        guesses.append(electrons / per_formula)
    guesses = [g for g in guesses if g is not None]
    options = set()
    for guess in guesses:
        centre = max(1, int(round(guess)))
        options.update(range(max(1, centre - spread), centre + spread + 1))
    if bounded:
        lo, hi = _VOLUME_PER_ATOM
        atoms = sum(reduced.values())
        options = {z for z in options if lo <= volume / (z * atoms) <= hi}
    if tolerance is not None and by_volume and options:
        off = {z: abs(math.log(z / by_volume)) for z in options}
        least = min(off.values())
        options = {z for z in options if off[z] <= max(tolerance, least)}
    if systems is not None and by_volume:
        from diffpy_mlsolve.volumes import formula_unit_prior

        def unlikely(z):
            off = math.log(z / by_volume) / Z_SIGMA
            return 0.5 * off**2 - math.log(formula_unit_prior(systems, z))

        return sorted(options, key=lambda z: (unlikely(z), z))
    return sorted(options, key=lambda z: (min(abs(z - g) for g in guesses), z))


def _formula(contents: Mapping[str, int]) -> str:
    return "".join(f"{e}{n}" for e, n in contents.items())


@dataclass(frozen=True)
class Sites:
    """Atom sites read from a density, before symmetrisation.

    Attributes
    ----------
    elements : tuple of str
    frac : ndarray (n, 3)
    height : ndarray (n,)
        ρ at each site's peak (e/Å^3).
    expected : ndarray (n,)
        The height expected for the assigned element, after the common
        scale.
    contents : dict
        Element -> number of atoms in the cell.
    """

    elements: tuple
    frac: np.ndarray
    height: np.ndarray
    expected: np.ndarray
    contents: dict

    @property
    def misfit(self) -> float:
        """RMS log misfit of the peak heights to the elements'."""
        return float(
            np.sqrt(np.mean(np.log(self.height / self.expected) ** 2))
        )


#: Two atoms closer than this fraction of the sum of their atomic radii
#: clash: the site search keeps them apart and the position refinement
#: pushes them apart.  The shortest contact of 2000 training structures
#: (every 7th of train.csv.gz) was 0.68 of that sum, the median 0.95.
CONTACT_FLOOR = 0.6


@lru_cache(maxsize=None)
def atomic_radius(symbol: str) -> float:
    """pymatgen's atomic radius of an element (Å); 1 where it has none."""
    from pymatgen.core import Element

    return float(Element(symbol).atomic_radius or 1.0)


def contact_limits(elements, min_distance: float = 0.0) -> dict:
    """Element -> element -> the shortest plausible distance (Å):
    :data:`CONTACT_FLOOR` times the sum of the two atomic radii, and at
    least ``min_distance``."""
    els = sorted(set(elements))
    return {
        a: {
            b: max(
                float(min_distance),
                CONTACT_FLOOR * (atomic_radius(a) + atomic_radius(b)),
            )
            for b in els
        }
        for a in els
    }


def _lattice_matrix(lattice) -> np.ndarray:
    from diffpy_mlsolve.symmetry import _matrix

    return _matrix(lattice)


def _pair_distances(
    frac: np.ndarray, matrix: np.ndarray, other: np.ndarray | None = None
) -> np.ndarray:
    """Shortest periodic distances (Å) between fractional points (of
    ``frac`` to ``other``, default ``frac`` itself)."""
    frac = np.asarray(frac, float).reshape(-1, 3)
    other = frac if other is None else np.asarray(other, float)
    d = frac[:, None, :] - other.reshape(-1, 3)[None, :, :]
    d -= np.round(d)
    shifts = np.array(
        [[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    )
    cart = (d[:, :, None, :] + shifts[None, None]) @ matrix
    return np.sqrt((cart**2).sum(-1)).min(-1)


def merge_close(peaks: Peaks, lattice, min_distance: float) -> Peaks:
    """Drop every peak closer than ``min_distance`` (Å) to a higher one."""
    if len(peaks) < 2:
        return peaks
    dist = _pair_distances(peaks.frac, _lattice_matrix(lattice))
    keep = []
    for i in range(len(peaks)):  # highest first
        if all(dist[i, j] >= min_distance for j in keep):
            keep.append(i)
    return Peaks(peaks.frac[keep], peaks.height[keep])


def expected_heights(elements, lattice, grid: int, biso: float = 1.0):
    """Peak ρ (e/Å^3) of a lone atom of each element in the cell, at the
    band limit and auto smoothing of an ``grid``^3 density."""
    cell = tuple(float(v) for v in np.asarray(lattice, float))
    return {
        el: _lone_atom_height(el, cell, int(grid), float(biso))
        for el in elements
    }


@lru_cache(maxsize=512)
def _lone_atom_height(el: str, cell: tuple, grid: int, biso: float):
    from diffpy_mlsolve.simulate import electron_density
    from diffpy_mlsolve.structures import CrystalArrays, _symbol_to_z

    crystal = CrystalArrays(
        np.asarray(cell, float),
        np.zeros((1, 3)),
        np.array([_symbol_to_z(el, el)]),
        np.ones(1),
        np.full(1, biso),
        el,
    )
    rho = electron_density(crystal, grid=grid, standardize=False)
    return float(rho.values.max())


def assign_sites(
    peaks: Peaks,
    contents: Mapping[str, int],
    heights: Mapping[str, float],
) -> Sites:
    """Choose which peaks are atoms of which element.

    A linear assignment of peaks to one slot per atom, the cost being
    |log h_peak − log(s · h_element)| with one common scale s (the median
    ratio of the sorted top peaks to the sorted expected heights), so the
    network's overall density scale does not matter.

    Raises
    ------
    StructureError
        With fewer peaks than atoms.
    """
    rows, elements, scale = _assignment(peaks, contents, heights)
    return _sites(peaks, rows, elements, heights, scale, contents)


def _assignment(peaks: Peaks, contents, heights) -> tuple:
    """(peak rows, their elements, the common height scale) of
    :func:`assign_sites`."""
    from scipy.optimize import linear_sum_assignment

    slots = [e for e, n in contents.items() for _ in range(n)]
    if len(peaks) < len(slots):
        raise StructureError(
            f"The density shows {len(peaks)} separate peaks for the "
            f"{len(slots)} atoms of {_formula(contents)}."
        )
    log_h = np.log(peaks.height)
    log_e = np.log(np.array([heights[e] for e in slots]))
    top = np.sort(log_h)[::-1][: len(slots)]
    offset = float(np.median(top - np.sort(log_e)[::-1]))
    cost = np.abs(log_h[:, None] - (log_e[None, :] + offset))
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(rows)
    rows, cols = rows[order], cols[order]
    return list(rows), [slots[c] for c in cols], math.exp(offset)


def _sites(peaks, rows, elements, heights, scale, contents) -> Sites:
    rows = np.asarray(rows, int)
    return Sites(
        elements=tuple(elements),
        frac=peaks.frac[rows],
        height=peaks.height[rows],
        expected=np.array([heights[e] * scale for e in elements]),
        contents=dict(contents),
    )


def structure_from_density(
    density,
    composition,
    *,
    formula_units: int | None = None,
    reference_grid: int | None = None,
    min_distance: float = 0.9,
    threshold: float = 0.01,
    biso: float = 1.0,
    symprec=None,
    scorer=None,
):
    """Atoms and space group from a density and the composition.

    Parameters
    ----------
    density : Density
        ρ (e/Å^3) on a fractional grid of the cell.
    composition : str or Mapping
        The element ratios ("NaCl").
    formula_units : int, optional
        Z; otherwise from the density's electron count.
    reference_grid : int, optional
        The grid whose band limit shaped the density (a network's target
        grid, ``density.metadata["target_grid"]``); sets the expected
        peak heights.  Default: the density's own grid.
    min_distance : float
        No two atoms closer than this (Å).
    threshold : float
        Peaks below this fraction of the highest are ignored.
    biso : float
        B (Å^2) of the sites (and of the expected heights).
    symprec : float or sequence, optional
        spglib tolerances; default :data:`~diffpy_mlsolve.symmetry.
        SYMPREC_LADDER`.
    scorer : ProfileScorer, optional
        The pattern the density is for, as a
        :class:`~diffpy_mlsolve.sitesearch.ProfileScorer` in the density's
        cell: the height-based sites then move between peaks and swap
        elements while the fit improves
        (:func:`~diffpy_mlsolve.sitesearch.search_sites`).

    Returns
    -------
    (SymmetrizedStructure, Sites)

    Raises
    ------
    StructureError
        When the composition cannot fill the cell, the density has too
        few peaks, or no symmetry keeps the contents.
    """
    from diffpy_mlsolve.structures import CrystalArrays, _symbol_to_z
    from diffpy_mlsolve.symmetry import SYMPREC_LADDER, find_symmetry

    values = np.asarray(density.values, float)
    volume = density.volume
    electrons = float(values.mean() * volume)
    contents = cell_contents(
        composition, volume, electrons=electrons, formula_units=formula_units
    )
    natoms = sum(contents.values())
    peaks = find_peaks(values, threshold=threshold, max_peaks=4 * natoms + 64)
    peaks = merge_close(peaks, density.lattice, min_distance)
    grid = int(
        reference_grid
        or (density.metadata or {}).get("target_grid")
        or values.shape[0]
    )
    heights = expected_heights(contents, density.lattice, grid, biso)
    rows, elements, scale = _assignment(peaks, contents, heights)
    if scorer is not None:
        from diffpy_mlsolve.sitesearch import search_sites

        rows, elements, _ = search_sites(
            scorer,
            peaks,
            rows,
            elements,
            density.lattice,
            min_distance=min_distance,
            biso=biso,
        )
    sites = _sites(peaks, rows, elements, heights, scale, contents)
    crystal = CrystalArrays(
        np.asarray(density.lattice, float),
        sites.frac,
        np.array([_symbol_to_z(e, e) for e in sites.elements]),
        np.ones(natoms),
        np.full(natoms, float(biso)),
        _formula(contents),
    )
    sym = find_symmetry(
        crystal, SYMPREC_LADDER if symprec is None else symprec
    )
    return sym, sites


def structures_in_group(
    density,
    composition,
    group,
    scorer,
    *,
    formula_units: int | None = None,
    reference_grid: int | None = None,
    min_distance: float = 0.9,
    threshold: float = 0.01,
    biso: float = 1.0,
    symprec=None,
):
    """Atoms as whole orbits of a space group the density shows, chosen
    among its peaks by the fit to the pattern: one structure per way of
    filling the counts that the search ended on, best fit first.

    The density (resampled to a grid of a multiple of 12 if need be) is
    moved to the group's origin and averaged over its operations
    (:func:`~diffpy_mlsolve.mapsymmetry.symmetrize`); its peaks become
    the group's orbits, and orbits are chosen to fill each element's
    count by the profile Rwp
    (:func:`~diffpy_mlsolve.sitesearch.search_orbits`).  A search site
    by site in P1 can break the symmetry a map shows into a P1 overfit;
    whole orbits cannot.

    Parameters
    ----------
    density : Density
    composition : str or Mapping
    group : MapSymmetry
        From :func:`~diffpy_mlsolve.mapsymmetry.find_map_symmetry` on the
        density (on its grid or a resampled one).
    scorer : ProfileScorer
        The pattern, in the density's cell.
    formula_units, reference_grid, min_distance, threshold, biso, symprec
        As in :func:`structure_from_density`.

    Returns
    -------
    list of (SymmetrizedStructure, Sites)
        Lowest profile Rwp first; the sites in the density's own frame.

    Raises
    ------
    StructureError
        When the composition cannot fill the cell or the group's orbits
        of the density's peaks cannot hold its contents.
    """
    from diffpy_mlsolve.mapsymmetry import (
        resampled,
        symmetrize,
        symmetry_grid,
    )
    from diffpy_mlsolve.sitesearch import search_orbits
    from diffpy_mlsolve.structures import CrystalArrays, _symbol_to_z
    from diffpy_mlsolve.symmetry import SYMPREC_LADDER, find_symmetry

    values = np.asarray(density.values, float)
    electrons = float(values.mean() * density.volume)
    contents = cell_contents(
        composition,
        density.volume,
        electrons=electrons,
        formula_units=formula_units,
    )
    natoms = sum(contents.values())
    n = values.shape[0]
    averaged = symmetrize(resampled(density, symmetry_grid(n)), group)
    peaks = find_peaks(
        averaged.values, threshold=threshold, max_peaks=4 * natoms + 64
    )
    peaks = merge_close(peaks, density.lattice, min_distance)
    grid = int(
        reference_grid
        or (density.metadata or {}).get("target_grid")
        or values.shape[0]
    )
    heights = expected_heights(contents, density.lattice, grid, biso)
    found = search_orbits(
        scorer,
        peaks,
        contents,
        heights,
        group.rotations,
        group.translations,
        density.lattice,
        min_distance=min_distance,
        biso=biso,
    )
    if not found:
        raise StructureError(
            f"The {group.symbol} orbits of the density's peaks cannot hold "
            f"the {natoms} atoms of {_formula(contents)}."
        )
    out = []
    for frac, elements, height, _ in found:
        frac = np.mod(frac + np.asarray(group.origin, float), 1.0)
        expected = np.array([heights[e] for e in elements])
        scale = math.exp(float(np.median(np.log(height / expected))))
        sites = Sites(
            elements=tuple(elements),
            frac=frac,
            height=height,
            expected=expected * scale,
            contents=dict(contents),
        )
        crystal = CrystalArrays(
            np.asarray(density.lattice, float),
            frac,
            np.array([_symbol_to_z(e, e) for e in elements]),
            np.ones(natoms),
            np.full(natoms, float(biso)),
            _formula(contents),
        )
        sym = find_symmetry(
            crystal, SYMPREC_LADDER if symprec is None else symprec
        )
        out.append((sym, sites))
    return out
