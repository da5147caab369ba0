"""Random crystals from pyxtal, with compositions that resemble real ones.

For pre-training and for tests that must not depend on ../shared.  Record
``i`` of ``SyntheticSource(n, seed=s)`` is made as follows, from the random
generator ``numpy.random.default_rng([s, i, attempt])`` alone:

1. Draw a space group (from the given list, or weighted like the real
   tables), a number of elements (weighted like the real tables) and the
   elements (weighted by how many real compounds hold them).
2. Draw a stoichiometry of small integers (1-4 per element) among those
   that balance common oxidation states; if none does (e.g. only metals),
   any stoichiometry, as for an intermetallic.
3. Draw a number of formula units that fits ``max_atoms`` and the Wyckoff
   multiplicities of the group, and let pyxtal place the atoms
   (``pyxtal.from_random``, volume factor 1.0-1.3).
4. Bring the volume per atom into 8-40 Å^3 by isotropic scaling, and put
   the crystal in its conventional standard cell with spglib (the space
   group found may be a supergroup of the one asked for).

When pyxtal or a check fails, the next ``attempt`` starts from step 1.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import OrderedDict
from functools import lru_cache, reduce

import numpy as np

from diffpy_mlsolve.data.sources import (
    MAX_Z,
    StructureRecord,
    StructureSource,
    _Filters,
    _Skip,
    crystal_system_of,
    record_from_pymatgen,
)
from diffpy_mlsolve.errors import DataSourceError, MissingBackendError
from diffpy_mlsolve.structures import DEFAULT_SYMPREC

__all__ = ["SyntheticSource", "ELEMENT_FREQUENCIES", "SPACEGROUP_FREQUENCIES"]

#: Compounds holding each element, for the 64 most common elements of
#: ../shared/data/structures/train.csv.gz (Materials Project; counted once
#: from its ``formula`` column, 21,382 rows).
ELEMENT_FREQUENCIES = {
    "O": 6908, "S": 1783, "P": 1431, "F": 1417, "Si": 1375, "Cu": 1360,
    "H": 1303, "N": 1285, "Li": 1285, "Se": 1284, "Ni": 1265, "Ge": 1212,
    "Ba": 1152, "Al": 1138, "Fe": 1113, "C": 1070, "K": 1056, "Cl": 1055,
    "Co": 1051, "Mn": 1037, "Mg": 1021, "Na": 989, "Sn": 939, "In": 932,
    "Te": 926, "Sr": 909, "Sb": 905, "Ga": 905, "B": 899, "Zn": 863,
    "Ca": 858, "Pd": 846, "La": 826, "V": 780, "Cs": 773, "As": 772,
    "Ag": 742, "Ce": 697, "Rb": 687, "Y": 686, "Bi": 666, "Sm": 642,
    "Nd": 630, "Au": 627, "Rh": 622, "Ti": 622, "Cd": 598, "Pt": 597,
    "I": 584, "Mo": 578, "Pr": 562, "Tl": 546, "Tb": 546, "Pb": 545,
    "Br": 540, "Er": 538, "Ho": 526, "Dy": 521, "Ru": 520, "Cr": 517,
    "Zr": 509, "U": 501, "Eu": 487, "Hg": 478,
}  # fmt: skip
#: Rows per space group (spglib, symprec 0.1) for the 60 most common groups
#: of the same table (91 % of its rows; every crystal system is present).
SPACEGROUP_FREQUENCIES = {
    225: 1920, 62: 1522, 14: 1254, 2: 1023, 12: 961, 15: 852, 139: 845,
    194: 788, 63: 749, 166: 572, 221: 524, 129: 401, 123: 396, 189: 332,
    11: 325, 164: 316, 216: 306, 71: 293, 148: 284, 227: 262, 140: 255,
    187: 216, 191: 215, 127: 208, 65: 184, 186: 184, 193: 179, 38: 177,
    1: 174, 8: 172, 4: 166, 160: 156, 36: 156, 74: 153, 167: 144, 9: 143,
    141: 135, 5: 134, 136: 128, 156: 128, 64: 121, 59: 119, 87: 113,
    44: 101, 55: 97, 19: 94, 82: 93, 31: 91, 13: 89, 176: 87, 204: 87,
    33: 87, 72: 86, 122: 86, 88: 84, 70: 79, 57: 78, 58: 74, 198: 69,
    107: 69,
}  # fmt: skip
#: Compounds with 1, 2, ... 5 elements in the same table.
NELEMENT_FREQUENCIES = {1: 77, 2: 3693, 3: 12576, 4: 4033, 5: 863}
#: Volume per atom (Å^3) kept by isotropic scaling.
VOLUME_PER_ATOM_RANGE = (8.0, 40.0)
_MAX_ATTEMPTS = 60
_MAX_COUNT = 4


class SyntheticSource(StructureSource):
    """``n`` random crystals built with pyxtal, deterministic per record.

    Parameters
    ----------
    n : int
        Number of records.
    spacegroups : list of int, optional
        Space groups to draw from, uniformly; by default the 60 most common
        groups of the real tables, weighted by their frequency.
    systems : list of str, optional
        Keep only the space groups of these crystal systems.
    max_atoms, min_atoms : int
        Bounds on atoms in the conventional cell.
    elements : iterable of str, optional
        Elements to draw from (default: :data:`ELEMENT_FREQUENCIES`).
    exclude_elements : iterable of str, optional
        Elements never drawn.
    max_volume_per_atom : float, optional
        Upper bound on the volume per atom in Å^3 (at most 40).
    symprec : float
        spglib tolerance in Å for the conventional cell.
    seed : int
        Record ``i`` depends on ``(seed, i)`` only; ids are
        ``synth-<seed>-<i>``.
    """

    def __init__(
        self,
        n: int,
        *,
        spacegroups=None,
        systems=None,
        max_atoms: int = 40,
        min_atoms: int = 1,
        elements=None,
        exclude_elements=None,
        max_volume_per_atom: float | None = None,
        symprec: float = DEFAULT_SYMPREC,
        seed: int = 0,
    ):
        _pyxtal()
        if int(n) < 1:
            raise DataSourceError(
                f"A synthetic source needs at least one structure, got "
                f"n={n}. Please ask for 'synthetic:N' with N >= 1."
            )
        f = _Filters.create(systems, elements, exclude_elements)
        self.n, self.seed, self.symprec = int(n), int(seed), float(symprec)
        self.max_atoms, self.min_atoms = int(max_atoms), int(min_atoms)
        self._spacegroups, self._sg_p = _spacegroup_table(spacegroups, f)
        self._elements, self._el_p = _element_table(f)
        top = VOLUME_PER_ATOM_RANGE[1]
        if max_volume_per_atom is not None:
            top = min(top, float(max_volume_per_atom))
        self.volume_range = (VOLUME_PER_ATOM_RANGE[0], top)
        if self.max_atoms < max(1, self.min_atoms) or top <= 8.0:
            raise DataSourceError(
                f"No crystal fits max_atoms={max_atoms}, min_atoms="
                f"{min_atoms}, max_volume_per_atom={max_volume_per_atom}. "
                "Please widen these bounds."
            )
        self._cache = OrderedDict()
        self._cache_size = 256
        self._attempts = {}

    def __len__(self) -> int:
        return self.n

    @property
    def ids(self) -> list[str]:
        return [f"synth-{self.seed}-{i}" for i in range(self.n)]

    def summary(self) -> dict:
        return {
            "source": f"synthetic:{self.n} (seed {self.seed})",
            "total": self.n,
            "kept": self.n,
            "skipped": {},
            "filtered": {},
            "generated": len(self._attempts),
            "attempts": sum(self._attempts.values()),
        }

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"], state["_attempts"] = OrderedDict(), {}
        return state

    def _record(self, index: int) -> StructureRecord:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        record = self._generate(index)
        self._cache[index] = record
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return record

    def _generate(self, index: int) -> StructureRecord:
        rid = f"synth-{self.seed}-{index}"
        for attempt in range(_MAX_ATTEMPTS):
            rng = np.random.default_rng([self.seed, index, attempt])
            record = self._attempt(rng, rid)
            if record is not None:
                self._attempts[index] = attempt + 1
                return record
        raise DataSourceError(
            f"pyxtal could not build {rid} in {_MAX_ATTEMPTS} attempts "
            f"(space groups {self._spacegroups[:10]}, max_atoms="
            f"{self.max_atoms}). Please allow more atoms or other groups."
        )

    def _attempt(self, rng, rid: str) -> StructureRecord | None:
        sg = int(rng.choice(self._spacegroups, p=self._sg_p))
        species, ratio = self._composition(rng)
        group = _group(sg)
        fits = [
            z
            for z in range(1, self.max_atoms // sum(ratio) + 1)
            if z * sum(ratio) >= self.min_atoms
            and group.check_compatible([z * r for r in ratio])[0]
        ]
        if not fits:
            return None
        z = int(rng.choice(fits))
        num_ions = [z * r for r in ratio]
        crystal = _pyxtal()()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                crystal.from_random(
                    3,
                    sg,
                    species,
                    num_ions,
                    factor=float(rng.uniform(1.0, 1.3)),
                    random_state=rng,
                )
                pmg = crystal.to_pymatgen()
                lo, hi = self.volume_range
                vpa = pmg.volume / len(pmg)
                if not lo <= vpa <= hi:
                    pmg.scale_lattice(len(pmg) * min(max(vpa, lo), hi))
                record = record_from_pymatgen(pmg, rid, self.symprec)
        except _Skip:
            return None
        except Exception:  # pyxtal raises many kinds of error
            return None
        if not self.min_atoms <= record.crystal.natoms <= self.max_atoms:
            return None
        return record

    def _composition(self, rng) -> tuple[list[str], list[int]]:
        ks = [k for k in NELEMENT_FREQUENCIES if k <= len(self._elements)]
        ks = [k for k in ks if k <= self.max_atoms]
        p = np.array([NELEMENT_FREQUENCIES[k] for k in ks], float)
        k = int(rng.choice(ks, p=p / p.sum()))
        idx = rng.choice(
            len(self._elements), size=k, replace=False, p=self._el_p
        )
        species = sorted((self._elements[i] for i in idx), key=_z)
        counts = _balanced_counts(tuple(species))
        counts = counts[counts.sum(axis=1) <= self.max_atoms]
        if len(counts) == 0:
            counts = _count_grid(k)
            counts = counts[counts.sum(axis=1) <= self.max_atoms]
        pick = counts[int(rng.integers(len(counts)))]
        return species, [int(c) for c in pick]


def _pyxtal():
    try:
        from pyxtal import pyxtal
    except ImportError as err:
        raise MissingBackendError(
            "Synthetic structures need pyxtal. Please install it with "
            "'pip install diffpy-mlsolve[synth]' (or 'pip install pyxtal')."
        ) from err
    return pyxtal


@lru_cache(maxsize=None)
def _group(sg: int):
    from pyxtal.symmetry import Group

    return Group(sg)


@lru_cache(maxsize=None)
def _z(symbol: str) -> int:
    from pymatgen.core.periodic_table import Element

    return int(Element(symbol).Z)


@lru_cache(maxsize=None)
def _oxidation_states(symbol: str) -> tuple[int, ...]:
    from pymatgen.core.periodic_table import Element

    return tuple(Element(symbol).common_oxidation_states) or (0,)


@lru_cache(maxsize=8)
def _count_grid(k: int) -> np.ndarray:
    """Primitive stoichiometries: integer vectors in 1..4, gcd 1."""
    grid = itertools.product(range(1, _MAX_COUNT + 1), repeat=k)
    rows = [g for g in grid if reduce(math.gcd, g) == 1]
    return np.array(rows, int).reshape(-1, k)


@lru_cache(maxsize=4096)
def _balanced_counts(species: tuple[str, ...]) -> np.ndarray:
    """Stoichiometries of ``species`` that some oxidation states balance."""
    counts = _count_grid(len(species))
    states = itertools.product(*(_oxidation_states(s) for s in species))
    charges = np.array(list(states), int)  # (n_states, k)
    ok = np.any(charges @ counts.T == 0, axis=0)
    return counts[ok]


def _spacegroup_table(spacegroups, f: _Filters):
    if spacegroups is None:
        sgs = list(SPACEGROUP_FREQUENCIES)
        w = np.array([SPACEGROUP_FREQUENCIES[s] for s in sgs], float)
    else:
        sgs = [int(s) for s in np.atleast_1d(spacegroups)]
        bad = [s for s in sgs if not 1 <= s <= 230]
        if bad or not sgs:
            raise DataSourceError(
                f"Space groups must be numbers 1-230, got {spacegroups!r}. "
                "Please give a list such as [225, 62, 14]."
            )
        w = np.ones(len(sgs))
    keep = [
        f.systems is None or crystal_system_of(s) in f.systems for s in sgs
    ]
    if not any(keep):
        raise DataSourceError(
            f"None of the space groups {sgs[:20]} is in the crystal systems "
            f"{list(f.systems)}. Please change spacegroups or systems."
        )
    w = w[np.array(keep)]
    return [s for s, k in zip(sgs, keep) if k], w / w.sum()


def _element_table(f: _Filters):
    floor = min(ELEMENT_FREQUENCIES.values())
    pool = f.elements if f.elements is not None else ELEMENT_FREQUENCIES
    els = [e for e in pool if e not in (f.exclude_elements or ())]
    bad = [e for e in els if _z(e) > MAX_Z]
    if bad or not els:
        raise DataSourceError(
            f"Cannot draw elements from {els} (Z > {MAX_Z} has no X-ray "
            "form factor). Please give other elements."
        )
    w = np.array([ELEMENT_FREQUENCIES.get(e, floor) for e in els], float)
    return els, w / w.sum()
