"""The space group of a phased map, and the map averaged in it.

Charge flipping works in P1: its map has the structure's symmetry only
approximately and its origin anywhere, and a flipped map that is almost
right (a light atom weak or missing, a ghost) gives sites whose group
spglib cannot find at any tolerance.  As Superflip does (Palatinus &
Chapuis, J. Appl. Cryst. 40, 786 (2007)), we look for the symmetry in
the map itself:

* the candidate groups are every Hall setting whose rotations keep the
  cell's metric (:func:`lattice_groups`);
* for each rotation R the correlation C_R(u) = Σ_x ρ(x) ρ(Rx + u) comes
  from one FFT, normalised so that an exact symmetry scores 1;
* with the group's origin at s in the map, its operation (R, t) reads
  x → Rx + t + (I - R)s there, so each operation's agreement at every
  origin on the grid is a lookup in C_R;
* a group is kept when all its operations agree at least ``threshold``
  at one common origin (:func:`find_map_symmetry`), and
  :func:`symmetrize` moves that origin to the group's and averages the
  map over the operations.

The physics is in plain numpy on the map's grid: translations of space
groups are multiples of 1/6 or 1/4, so a grid of a multiple of 12 points
(:func:`symmetry_grid`) holds every operation exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from diffpy_mlsolve.errors import PhysicsInputError

__all__ = [
    "MAP_SYMMETRY_THRESHOLD",
    "MapSymmetry",
    "average",
    "find_map_symmetry",
    "flip_in_groups",
    "lattice_groups",
    "resampled",
    "averager",
    "symmetrize",
    "symmetry_grid",
    "symmetry_ops",
]

#: Least correlation of every operation with the map for a group to be
#: kept (1 is exact symmetry; a P1 flipped map of a right structure
#: scores 0.7-0.95 on its true operations, a wrong operation < 0.5).
MAP_SYMMETRY_THRESHOLD = 0.6


def symmetry_grid(n: int) -> int:
    """The least multiple of 12 at or above ``n``: a grid on which every
    space-group translation falls on a grid point."""
    return int(12 * math.ceil(int(n) / 12))


#: The lattice translations of each centring (besides 0 0 0); "R" is the
#: obverse rhombohedral lattice on hexagonal axes.
CENTRING_TRANSLATIONS = {
    "P": (),
    "A": ((0, 0.5, 0.5),),
    "B": ((0.5, 0, 0.5),),
    "C": ((0.5, 0.5, 0),),
    "I": ((0.5, 0.5, 0.5),),
    "F": ((0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)),
    "R": ((2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)),
}


def lattice_centring(rotations, translations) -> str | None:
    """The letter of :data:`CENTRING_TRANSLATIONS` whose translations are
    the group's pure translations (None when none is): read from the
    operations, since a symbol names the standard setting only (spglib
    calls the A and I settings of C2/m "C2/m")."""
    rotations = np.asarray(rotations, int)
    ident = np.all(rotations == np.eye(3, dtype=int), axis=(1, 2))
    pure = {
        tuple(np.round(np.mod(t, 1.0) * 12).astype(int) % 12)
        for t in np.asarray(translations, float)[ident]
    }
    for letter, shifts in CENTRING_TRANSLATIONS.items():
        want = {(0, 0, 0)} | {
            tuple(np.round(np.asarray(v) * 12).astype(int) % 12)
            for v in shifts
        }
        if pure == want:
            return letter
    return None


@dataclass(frozen=True, eq=False)
class MapSymmetry:
    """A space group found in a map.

    Attributes
    ----------
    hall_number : int
        spglib's Hall number (the setting: axes and origin choice).
    number : int
        Space-group number.
    symbol : str
        International short symbol.
    origin : ndarray (3,)
        Fractional position in the map of the group's origin.
    agreement : ndarray (nops,)
        Each operation's correlation with the map at that origin.
    rotations : ndarray (nops, 3, 3) int
    translations : ndarray (nops, 3)
    """

    hall_number: int
    number: int
    symbol: str
    origin: np.ndarray
    agreement: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray

    @property
    def order(self) -> int:
        return len(self.rotations)

    @property
    def min_agreement(self) -> float:
        return float(self.agreement.min())

    @property
    def centring(self) -> str | None:
        """The lattice centring of the setting (:func:`lattice_centring`)."""
        return lattice_centring(self.rotations, self.translations)

    def __repr__(self) -> str:
        return (
            f"MapSymmetry({self.symbol} (Hall {self.hall_number}), origin "
            f"{np.round(self.origin, 3).tolist()}, min agreement "
            f"{self.min_agreement:.2f})"
        )


def _metric(lattice) -> np.ndarray:
    from diffpy_mlsolve.symmetry import _matrix

    m = _matrix(tuple(float(v) for v in lattice))
    return m @ m.T


@lru_cache(maxsize=1)
def _database() -> tuple:
    """(hall number, rotations, translations, number, symbol) of all 530
    Hall settings."""
    import spglib

    out = []
    for hall in range(1, 531):
        ops = spglib.get_symmetry_from_database(hall)
        kind = spglib.get_spacegroup_type(hall)
        out.append(
            (
                hall,
                np.asarray(ops["rotations"], int),
                np.mod(np.asarray(ops["translations"], float), 1.0),
                int(kind.number),
                str(kind.international_short),
            )
        )
    return tuple(out)


def lattice_groups(lattice, tol: float = 0.01) -> list[int]:
    """Hall numbers of the settings whose rotations keep the metric of
    ``lattice`` (a, b, c, alpha, beta, gamma) to a relative ``tol``:
    the groups a structure in this cell, on these axes, can have."""
    g = _metric(lattice)
    scale = float(np.abs(g).max())
    out = []
    for hall, rots, _, _, _ in _database():
        kept = np.einsum("nji,jk,nkl->nil", rots, g, rots)
        if np.all(np.abs(kept - g) <= tol * scale):
            out.append(hall)
    return out


def _grid_points(n: int) -> np.ndarray:
    return np.indices((n, n, n)).reshape(3, -1)


def _flat(idx: np.ndarray, n: int) -> np.ndarray:
    """Flat indices of (3, ...) integer grid positions, wrapped."""
    i = np.mod(idx, n)
    return (i[0] * n + i[1]) * n + i[2]


def _correlation(rho_flat, f_conj, rot, n) -> np.ndarray:
    """C_R(u) = Σ_x ρ(x) ρ(Rx + u) / Σ ρ², flat over u."""
    pts = _grid_points(n)
    rotated = rho_flat[_flat(rot @ pts, n)].reshape(n, n, n)  # ρ(Rx)
    corr = np.fft.ifftn(f_conj * np.fft.fftn(rotated)).real.ravel()
    # Σ_x ρ(x) ρ(R(x + v)) at v = R^-1 u
    inv = np.rint(np.linalg.inv(rot)).astype(int)
    return corr[_flat(inv @ pts, n)] / float(rho_flat @ rho_flat)


@lru_cache(maxsize=64)
def _origin_shifts(rot_key: bytes, n: int) -> np.ndarray:
    """The distinct (I - R)s (3, K) for s on the grid, wrapped."""
    rot = np.frombuffer(rot_key, dtype=np.int64).reshape(3, 3)
    shifts = np.mod((np.eye(3, dtype=int) - rot) @ _grid_points(n), n)
    return np.unique(shifts, axis=1)


def _translation_index(t, n: int) -> np.ndarray:
    ti = np.asarray(t, float) * n
    out = np.rint(ti).astype(int)
    if np.any(np.abs(ti - out) > 1e-6):
        raise PhysicsInputError(
            f"A {n}-point grid cannot hold the translation {tuple(t)}; "
            f"please use a grid of a multiple of 12 (symmetry_grid({n}) = "
            f"{symmetry_grid(n)})."
        )
    return out


def resampled(density, n: int):
    """The density Fourier-interpolated onto an ``n``^3 grid (a Density in
    the same cell, its band limit kept; the Nyquist planes dropped).  The
    network's 32-point maps need a grid of a multiple of 12 to be
    searched for symmetry (:func:`symmetry_grid`)."""
    from dataclasses import replace

    values = _values(density)
    m = values.shape[0]
    if m == n:
        return density
    half = (min(m, n) - 1) // 2
    idx = np.r_[0 : half + 1, -half:0]
    coeff = np.fft.fftn(values)[np.ix_(idx % m, idx % m, idx % m)]
    out = np.zeros((n, n, n), complex)
    out[np.ix_(idx % n, idx % n, idx % n)] = coeff
    return replace(density, values=np.fft.ifftn(out).real * (n**3 / m**3))


def _values(density) -> np.ndarray:
    values = np.asarray(getattr(density, "values", density), float)
    n = values.shape[0]
    if values.ndim != 3 or values.shape != (n, n, n):
        raise PhysicsInputError(
            f"The map must be on an N×N×N grid, got shape {values.shape}."
        )
    return values


def find_map_symmetry(
    density,
    lattice=None,
    *,
    threshold: float = MAP_SYMMETRY_THRESHOLD,
    max_groups: int = 3,
    min_order: int = 2,
    centring: str | None = None,
) -> list[MapSymmetry]:
    """The space groups a phased map has, highest order first.

    Parameters
    ----------
    density : Density or ndarray (N, N, N)
        The map, N a multiple of 12 (:func:`symmetry_grid`); with an
        array, ``lattice`` is needed.
    lattice : (a, b, c, alpha, beta, gamma), optional
        Default: the density's.
    threshold : float
        Least correlation with the map of every operation of a group.
    max_groups : int
        At most this many groups (distinct space-group numbers).
    min_order : int
        Skip groups of fewer operations (2: not P1).
    centring : str, optional
        Only groups of this lattice centring in the cell's setting (a key
        of :data:`CENTRING_TRANSLATIONS`, see :func:`lattice_centring`),
        e.g. the one the pattern's extinctions show.

    Returns
    -------
    list of MapSymmetry
        Highest order first, then best least agreement; empty when the
        map has no symmetry at the threshold.
    """
    values = _values(density)
    n = values.shape[0]
    lat = getattr(density, "lattice", None) if lattice is None else lattice
    if lat is None:
        raise PhysicsInputError(
            "find_map_symmetry needs the cell: pass a Density or lattice=."
        )
    rho = (values - values.mean()).ravel()
    if not np.any(rho):
        return []
    f_conj = np.conj(np.fft.fftn(rho.reshape(n, n, n)))
    allowed = set(lattice_groups(lat))
    groups = [
        g
        for g in _database()
        if g[0] in allowed
        and len(g[1]) >= min_order
        and (centring is None or lattice_centring(g[1], g[2]) == centring)
    ]
    corr: dict[bytes, np.ndarray] = {}

    def c_of(rot):
        key = np.ascontiguousarray(rot, dtype=np.int64).tobytes()
        if key not in corr:
            corr[key] = _correlation(rho, f_conj, rot, n)
        return key, corr[key]

    # 1. every operation on its own: its best agreement at any origin
    best_op: dict[tuple, float] = {}

    def op_ok(rot, t):
        key, c = c_of(rot)
        tk = (key, tuple(_translation_index(t, n)))
        if tk not in best_op:
            shifts = _origin_shifts(key, n)
            best_op[tk] = float(
                c[_flat(np.asarray(tk[1])[:, None] + shifts, n)].max()
            )
        return best_op[tk] >= threshold

    screened = [
        g for g in groups if all(op_ok(r, t) for r, t in zip(g[1], g[2]))
    ]
    # 2. all operations of a group at one common origin
    screened.sort(key=lambda g: -len(g[1]))
    pts = _grid_points(n)
    found: list[MapSymmetry] = []
    numbers: set[int] = set()
    for hall, rots, trans, number, symbol in screened:
        if number in numbers:
            continue
        if max_groups < 1:
            break
        if len(found) >= max_groups and len(rots) < found[-1].order:
            break
        scores = np.empty((len(rots), n**3))
        for i, (r, t) in enumerate(zip(rots, trans)):
            _, c = c_of(r)
            ti = _translation_index(t, n)[:, None]
            scores[i] = c[_flat(ti + (np.eye(3, dtype=int) - r) @ pts, n)]
        worst = scores.min(axis=0)
        s = int(np.argmax(worst + 1e-3 * scores.mean(axis=0)))
        if worst[s] < threshold:
            continue
        numbers.add(number)
        found.append(
            MapSymmetry(
                hall_number=hall,
                number=number,
                symbol=symbol,
                origin=pts[:, s] / n,
                agreement=scores[:, s],
                rotations=rots,
                translations=trans,
            )
        )
    found.sort(key=lambda m: (-m.order, -m.min_agreement))
    return found[:max_groups]


def centred_map(density, centring: str):
    """The map averaged over the lattice translations of ``centring``
    (origin-free: it needs no origin), on a grid that holds them (a
    multiple of 12 holds all).

    Raises
    ------
    PhysicsInputError
        For an unknown centring letter.
    """
    from dataclasses import replace

    if centring not in CENTRING_TRANSLATIONS:
        raise PhysicsInputError(
            f"Unknown centring {centring!r}; please use one of "
            f"{tuple(CENTRING_TRANSLATIONS)}."
        )
    shifts = ((0.0, 0.0, 0.0),) + CENTRING_TRANSLATIONS[centring]
    rotations = np.repeat(np.eye(3, dtype=int)[None], len(shifts), axis=0)
    values = average(density, rotations, np.array(shifts, float))
    return (
        replace(density, values=values)
        if hasattr(density, "values")
        else values
    )


def symmetry_ops(symmetry) -> tuple:
    """(rotations, translations) of a MapSymmetry or of such a pair."""
    if isinstance(symmetry, MapSymmetry):
        return symmetry.rotations, symmetry.translations
    rotations, translations = symmetry
    return np.asarray(rotations, int), np.asarray(translations, float)


def averager(rotations, translations, n: int):
    """A function ρ → ρ averaged over the operations x → Rx + t (all on
    the ``n``-point grid): ρ'(x) = Σ_i ρ(R_i x + t_i) / n_ops.

    The pure translations (centring) are averaged first by rolling the
    map, then the map is gathered once per distinct rotation: for Fm-3m
    4 rolls and 48 gathers instead of 192 gathers.
    """
    rotations = np.asarray(rotations, int)
    tidx = np.array(
        [_translation_index(np.mod(t, 1.0), n) for t in translations]
    ).reshape(-1, 3)
    ident = np.all(rotations == np.eye(3, dtype=int), axis=(1, 2))
    centring = {tuple(np.mod(t, n)) for t in tidx[ident]} or {(0, 0, 0)}
    pts = _grid_points(n)
    reps, seen = [], set()
    for rot, t in zip(rotations, tidx):
        key = rot.tobytes()
        if key not in seen:
            seen.add(key)
            reps.append(_flat(rot @ pts + t[:, None], n))
    if len(reps) * len(centring) != len(rotations):
        raise PhysicsInputError(
            "The operations are not a space group (the pure translations "
            "times the distinct rotations do not give them all)."
        )
    shifts = [tuple(-v for v in c) for c in sorted(centring)]

    def apply(values):
        values = _values(values)
        if len(shifts) > 1:
            values = sum(
                np.roll(values, c, axis=(0, 1, 2)) for c in shifts
            ) / len(shifts)
        flat = values.ravel()
        out = np.zeros(n**3)
        for idx in reps:
            out += flat[idx]
        return (out / len(reps)).reshape(n, n, n)

    return apply


def average(values, rotations, translations) -> np.ndarray:
    """The map averaged over the operations x → Rx + t (all of them on
    the grid): ρ'(x) = Σ_i ρ(R_i x + t_i) / n_ops (see :func:`averager`
    to average many maps over the same operations)."""
    values = _values(values)
    return averager(rotations, translations, values.shape[0])(values)


def symmetrize(density, sym: MapSymmetry):
    """The density with its origin moved to the group's and averaged
    over the group's operations (a Density in the same cell)."""
    from dataclasses import replace

    values = _values(density)
    n = values.shape[0]
    shift = np.rint(np.asarray(sym.origin) * n).astype(int)
    moved = np.roll(values, tuple(-shift), axis=(0, 1, 2))  # ρ(y + s)
    out = average(moved, sym.rotations, sym.translations)
    meta = dict(getattr(density, "metadata", {}) or {})
    meta["map_symmetry"] = {
        "spacegroup": sym.symbol,
        "number": sym.number,
        "hall_number": sym.hall_number,
        "origin": [float(v) for v in sym.origin],
        "min_agreement": sym.min_agreement,
    }
    return replace(density, values=out, metadata=meta)


def flip_in_groups(
    flipped,
    reflections,
    *,
    electrons: float | None = None,
    max_groups: int = 3,
    iterations: int = 100,
    threshold: float = MAP_SYMMETRY_THRESHOLD,
) -> list:
    """Maps phased under the symmetry a P1 flipped map shows.

    For each group of ``flipped`` (:func:`find_map_symmetry`), the map
    moved to the group's origin and averaged over its operations starts
    ``iterations`` more cycles of charge flipping averaged the same way
    every cycle (``charge_flip(symmetry=...)``).  Averaging restores an
    atom a P1 map has weak or missing from its symmetry mates; flipping
    then makes the result agree with the intensities again.

    Parameters
    ----------
    flipped : Density
        A map from :func:`diffpy_mlsolve.phasing.charge_flip`, on a grid
        of a multiple of 12.
    reflections : Reflections
        The intensities it was phased from.
    electrons : float, optional
        Electrons in the cell (passed to ``charge_flip``).
    max_groups, threshold
        As in :func:`find_map_symmetry`.
    iterations : int
        Constrained flip cycles.

    Returns
    -------
    list of Density
        One per group, highest order first; ``metadata["map_symmetry"]``
        names the group (its origin moved to 0) and its agreement.
    """
    from dataclasses import replace

    from diffpy_mlsolve.phasing import charge_flip

    n = flipped.values.shape[0]
    out = []
    for sym in find_map_symmetry(
        flipped, threshold=threshold, max_groups=max_groups
    ):
        start = symmetrize(flipped, sym)
        again = charge_flip(
            reflections,
            flipped.lattice,
            n,
            start=start,
            symmetry=sym,
            iterations=iterations,
            seed=int(flipped.metadata.get("seed", 0)),
            electrons=electrons,
        )
        meta = dict(again.metadata)
        meta["map_symmetry"] = start.metadata["map_symmetry"]
        meta["start"] = (
            f"{flipped.metadata.get('start') or 'random phases'}, then "
            f"{sym.symbol}"
        )
        out.append(replace(again, metadata=meta))
    return out
