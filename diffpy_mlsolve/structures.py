"""Crystal structures in, plain arrays out.

Every simulator and the solver take a structure as a diffpy.structure
``Structure``, a pymatgen ``Structure``, a CIF path, or a
:class:`CrystalArrays`.  :func:`as_crystal` turns any of them into a
:class:`CrystalArrays` in the conventional standard cell (spglib, through
pymatgen's SpacegroupAnalyzer), the one cell that patterns, densities and
atoms refer to throughout diffpy-mlsolve.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffpy_mlsolve.errors import StructureError

__all__ = [
    "CrystalArrays",
    "as_crystal",
    "as_crystals",
    "to_pymatgen",
    "to_diffpy",
    "DEFAULT_BISO",
    "DEFAULT_SYMPREC",
]

#: Isotropic displacement (Å^2) given to sites whose structure has none.
DEFAULT_BISO = 1.0
#: spglib tolerance (Å) used to find the conventional standard cell; the
#: same as the tables in ../shared/data/structures.
DEFAULT_SYMPREC = 0.1
_B_FROM_U = 8.0 * math.pi**2


@dataclass(frozen=True)
class CrystalArrays:
    """A crystal as arrays: the input of every physics kernel.

    Attributes
    ----------
    lattice : ndarray, shape (6,)
        a, b, c in Å and alpha, beta, gamma in degrees.
    frac : ndarray, shape (n, 3)
        Fractional coordinates.
    numbers : ndarray of int, shape (n,)
        Atomic numbers Z.
    occupancy : ndarray, shape (n,)
        Site occupancies (0, 1].
    biso : ndarray, shape (n,)
        Isotropic displacement parameters B in Å^2 (B = 8 π^2 Uiso).
    label : str
        A name for messages (formula or file name).
    """

    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray
    occupancy: np.ndarray
    biso: np.ndarray
    label: str = ""
    spacegroup: int | None = field(default=None, compare=False)

    def __post_init__(self):
        validate_crystal(self)

    @property
    def natoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def electrons(self) -> float:
        """Electrons in the cell, Σ Z·occupancy."""
        return float(np.sum(self.numbers * self.occupancy))

    @property
    def volume(self) -> float:
        """Cell volume in Å^3."""
        return float(cell_volume(self.lattice))

    def with_biso(self, biso) -> CrystalArrays:
        """A copy with every site's B (Å^2) replaced by ``biso``."""
        b = np.broadcast_to(np.asarray(biso, float), self.numbers.shape)
        return CrystalArrays(
            self.lattice,
            self.frac,
            self.numbers,
            self.occupancy,
            b.copy(),
            self.label,
            self.spacegroup,
        )


def cell_volume(lattice) -> float:
    """Volume (Å^3) of a cell given as (a, b, c, alpha, beta, gamma)."""
    a, b, c = lattice[:3]
    ca, cb, cg = np.cos(np.radians(np.asarray(lattice[3:6], float)))
    arg = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
    return a * b * c * math.sqrt(arg) if arg > 0 else 0.0


def validate_crystal(c: CrystalArrays) -> None:
    """Raise :class:`StructureError` for a structure no kernel can use."""
    name = f" {c.label!r}" if c.label else ""
    lat = np.asarray(c.lattice, float)
    if lat.shape != (6,) or not np.all(np.isfinite(lat)):
        raise StructureError(
            f"Structure{name}: the cell must be six finite numbers "
            f"(a, b, c in Å, alpha, beta, gamma in degrees), got {lat}."
        )
    if np.any(lat[:3] <= 0) or cell_volume(lat) <= 1e-6:
        raise StructureError(
            f"Structure{name}: the cell {tuple(lat)} has zero or negative "
            "volume. Please check the lattice lengths and angles."
        )
    if c.numbers.shape[0] == 0:
        raise StructureError(
            f"Structure{name} has no atoms. Please give at least one site."
        )
    n = c.numbers.shape[0]
    if c.frac.shape != (n, 3):
        raise StructureError(
            f"Structure{name}: coordinates must have shape ({n}, 3), got "
            f"{c.frac.shape}."
        )
    if not np.all(np.isfinite(c.frac)):
        bad = int(np.argwhere(~np.isfinite(c.frac))[0, 0])
        raise StructureError(
            f"Structure{name}: site {bad} has NaN or infinite coordinates "
            f"{c.frac[bad]}. Please fix or remove that site."
        )
    if np.any(c.numbers < 1) or np.any(c.numbers > 118):
        raise StructureError(
            f"Structure{name}: atomic numbers must be 1-118, got "
            f"{sorted(set(c.numbers.tolist()))}."
        )
    occ = c.occupancy
    if occ.shape != (n,) or not np.all(np.isfinite(occ)):
        raise StructureError(f"Structure{name}: bad occupancies {occ}.")
    if np.any(occ <= 0) or np.any(occ > 1 + 1e-6):
        raise StructureError(
            f"Structure{name}: occupancies must be in (0, 1], got "
            f"{occ.min()}..{occ.max()}."
        )
    b = c.biso
    if b.shape != (n,) or not np.all(np.isfinite(b)) or np.any(b < 0):
        raise StructureError(
            f"Structure{name}: displacement parameters must be finite and "
            f">= 0 Å^2, got {b}."
        )


_ELEMENT_RE = re.compile(r"^([A-Z][a-z]?)")


def _symbol_to_z(symbol: str, label: str) -> int:
    from pymatgen.core.periodic_table import Element

    m = _ELEMENT_RE.match(symbol.strip().capitalize())
    try:
        if m is None:
            raise ValueError(symbol)
        return int(Element(m.group(1)).Z)
    except ValueError:
        raise StructureError(
            f"Structure {label!r}: unknown element {symbol!r}. Please use "
            "element symbols such as 'Na' or 'O2-'."
        ) from None


def _load_cif(path: Path):
    """A pymatgen Structure (with a 'biso' site property) from a CIF."""
    from diffpy.structure import loadStructure

    if not path.is_file():
        raise StructureError(
            f"No such structure file: {str(path)!r}. Please check the path."
        )
    try:
        stru = loadStructure(str(path))
    except Exception as err:  # diffpy raises several parser errors
        raise StructureError(
            f"Could not read a structure from {str(path)!r}: {err}. Please "
            "give a valid CIF (or another format diffpy.structure reads)."
        ) from err
    # diffpy reads a CIF without displacement columns as Uiso = 0: such
    # sites get the default B like any structure without ADPs
    text = path.read_text(errors="replace")
    has_adp = _ADP_TAG.search(text) is not None
    return _diffpy_to_pymatgen(stru, label=path.name, has_adp=has_adp)


_ADP_TAG = re.compile(r"_atom_site_(aniso_)?[UB]_", re.IGNORECASE)


def _diffpy_to_pymatgen(stru, label="", has_adp=True):
    from pymatgen.core import Lattice, Structure

    lat = stru.lattice
    species, coords, biso = [], [], []
    for atom in stru:
        z = _symbol_to_z(atom.element, label)
        species.append({_z_to_symbol(z): float(atom.occupancy)})
        coords.append(np.asarray(atom.xyz, float))
        biso.append(_B_FROM_U * float(atom.Uisoequiv) if has_adp else None)
    if not species:
        raise StructureError(f"Structure {label!r} has no atoms.")
    lattice = Lattice.from_parameters(
        lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma
    )
    return Structure(lattice, species, coords, site_properties={"biso": biso})


def _z_to_symbol(z: int) -> str:
    from pymatgen.core.periodic_table import Element

    return Element.from_Z(int(z)).symbol


def _to_pymatgen_input(structure, label=""):
    """pymatgen Structure for any accepted input."""
    from pymatgen.core import Structure as PmgStructure

    if isinstance(structure, PmgStructure):
        return structure
    if isinstance(structure, (str, Path)):
        return _load_cif(Path(structure))
    if isinstance(structure, CrystalArrays):
        return to_pymatgen(structure)
    try:
        from diffpy.structure import Structure as DiffpyStructure
    except ImportError:  # pragma: no cover - a hard dependency
        DiffpyStructure = ()
    if isinstance(structure, DiffpyStructure):
        return _diffpy_to_pymatgen(structure, label=label)
    raise StructureError(
        f"Cannot use a {type(structure).__name__} as a structure. Please "
        "pass a diffpy.structure Structure, a pymatgen Structure or a CIF "
        "path."
    )


def _from_pymatgen(s, biso, default_biso, label) -> CrystalArrays:
    frac, numbers, occ, bs = [], [], [], []
    props = s.site_properties
    site_b = props.get("biso")
    if site_b is None and "Uiso" in props:
        site_b = [None if u is None else _B_FROM_U * u for u in props["Uiso"]]
    for i, site in enumerate(s):
        for sp, amount in site.species.items():
            z = getattr(sp, "Z", None)
            if z is None:
                raise StructureError(
                    f"Structure {label!r}: site {i} holds {sp}, which is not "
                    "an element. Please replace dummy species with elements."
                )
            frac.append(site.frac_coords)
            numbers.append(int(z))
            occ.append(float(amount))
            if biso is not None:
                bs.append(float(biso))
            elif site_b is not None and site_b[i] is not None:
                bs.append(float(site_b[i]))
            else:
                bs.append(float(default_biso))
    lat = s.lattice
    return CrystalArrays(
        lattice=np.array(
            [lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma], float
        ),
        frac=np.mod(np.asarray(frac, float).reshape(-1, 3), 1.0),
        numbers=np.asarray(numbers, int),
        occupancy=np.asarray(occ, float),
        biso=np.asarray(bs, float),
        label=label or s.composition.reduced_formula,
    )


def as_crystal(
    structure,
    *,
    standardize: bool = True,
    biso: float | None = None,
    default_biso: float = DEFAULT_BISO,
    symprec: float = DEFAULT_SYMPREC,
) -> CrystalArrays:
    """Turn any accepted structure into :class:`CrystalArrays`.

    Parameters
    ----------
    structure : diffpy or pymatgen Structure, str, Path or CrystalArrays
        The crystal; a path is read as a CIF with diffpy.structure (its
        Uiso/Biso are kept).
    standardize : bool
        Put the structure in its conventional standard cell (spglib at
        ``symprec``).  A CrystalArrays is taken as it is.
    biso : float or None
        If given, every site's B (Å^2); otherwise each site keeps its own
        (diffpy Uiso, CIF U/B, pymatgen site property ``biso`` or ``Uiso``).
    default_biso : float
        B (Å^2) for sites that carry none (pymatgen structures without a
        ``biso`` property).
    symprec : float
        spglib tolerance in Å.

    Raises
    ------
    StructureError
        For an unreadable file, an unknown element, an empty structure,
        NaN coordinates or a cell of no volume.
    """
    if isinstance(structure, CrystalArrays):
        if biso is not None:
            return structure.with_biso(biso)
        return structure
    label = Path(structure).name if isinstance(structure, (str, Path)) else ""
    pmg = _to_pymatgen_input(structure, label)
    if len(pmg) == 0:
        raise StructureError(
            f"Structure {label!r} has no atoms. Please give at least one "
            "site."
        )
    _check_pymatgen(pmg, label)
    spacegroup = None
    if standardize:
        pmg, spacegroup = _standardize(pmg, symprec, label)
    crystal = _from_pymatgen(pmg, biso, default_biso, label)
    if spacegroup is not None:
        object.__setattr__(crystal, "spacegroup", spacegroup)
    return crystal


def _check_pymatgen(pmg, label):
    if not np.all(np.isfinite(pmg.frac_coords)):
        bad = int(np.argwhere(~np.isfinite(pmg.frac_coords))[0, 0])
        raise StructureError(
            f"Structure {label!r}: site {bad} has NaN or infinite "
            "coordinates. Please fix or remove that site."
        )
    vol = pmg.lattice.volume
    if not np.isfinite(vol) or vol <= 1e-6:
        raise StructureError(
            f"Structure {label!r}: the cell has zero or negative volume. "
            "Please check the lattice lengths and angles."
        )


def _standardize(pmg, symprec, label):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(pmg, symprec=symprec)
        conv = sga.get_conventional_standard_structure(
            keep_site_properties=True
        )
        return conv, int(sga.get_space_group_number())
    except Exception as err:  # spglib gives up on odd input
        raise StructureError(
            f"Could not find the conventional cell of {label!r} with "
            f"spglib (symprec={symprec} Å): {err}. Please pass "
            "standardize=False to use the cell as given."
        ) from err


def as_crystals(structures, **kwargs) -> tuple[list[CrystalArrays], bool]:
    """:func:`as_crystal` over one structure or a list.

    Returns the list and whether the input was a single structure.
    """
    from diffpy.structure import Structure as DiffpyStructure

    # a diffpy Structure is itself a list (of atoms): one structure
    if isinstance(structures, (list, tuple)) and not isinstance(
        structures, DiffpyStructure
    ):
        return [as_crystal(s, **kwargs) for s in structures], False
    return [as_crystal(structures, **kwargs)], True


def to_pymatgen(crystal: CrystalArrays):
    """A pymatgen Structure (site property ``biso``) of a CrystalArrays."""
    from pymatgen.core import Lattice, Structure

    lattice = Lattice.from_parameters(*crystal.lattice)
    species = [
        {_z_to_symbol(z): float(o)}
        for z, o in zip(crystal.numbers, crystal.occupancy)
    ]
    return Structure(
        lattice,
        species,
        crystal.frac,
        site_properties={"biso": [float(b) for b in crystal.biso]},
    )


def to_diffpy(crystal: CrystalArrays):
    """A diffpy.structure Structure of a CrystalArrays (Uiso = B / 8π^2)."""
    from diffpy.structure import Atom, Lattice, Structure

    atoms = [
        Atom(
            _z_to_symbol(z),
            xyz=list(map(float, x)),
            occupancy=float(o),
            Uisoequiv=float(b) / _B_FROM_U,
        )
        for z, x, o, b in zip(
            crystal.numbers, crystal.frac, crystal.occupancy, crystal.biso
        )
    ]
    return Structure(atoms, lattice=Lattice(*map(float, crystal.lattice)))
