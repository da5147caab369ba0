"""Space groups of atom sets: spglib at a tolerance ladder, Wyckoff
snapping, the asymmetric unit, and CIFs with their symmetry.

:func:`find_symmetry` tries spglib tolerances from tight to loose and
keeps the highest-symmetry group that leaves the cell and its contents
unchanged (no atoms merged, the same cell size).  The result,
:class:`SymmetrizedStructure`, holds the standardized (spglib) setting:
its lattice, the asymmetric unit with idealised (Wyckoff-snapped)
coordinates, and the symmetry operations, so refiners can constrain by
symmetry and CIFs name their space group instead of P1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffpy_mlsolve.errors import StructureError

__all__ = [
    "SYMPREC_LADDER",
    "SymmetrizedStructure",
    "find_symmetry",
    "lattice_parameters",
]

# Å: of the groups these find that keep the contents, the one with the
# most operations wins (the tighter tolerance on a tie)
SYMPREC_LADDER = (1e-3, 0.01, 0.03, 0.1, 0.2, 0.3, 0.45, 0.6)


def lattice_parameters(matrix) -> tuple[float, ...]:
    """(a, b, c, alpha, beta, gamma) of a 3x3 row-vector lattice matrix."""
    m = np.asarray(matrix, float)
    a, b, c = np.linalg.norm(m, axis=1)

    def angle(u, v):
        cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
        return math.degrees(math.acos(float(np.clip(cos, -1, 1))))

    return (
        float(a),
        float(b),
        float(c),
        angle(m[1], m[2]),
        angle(m[0], m[2]),
        angle(m[0], m[1]),
    )


def _matrix(lattice) -> np.ndarray:
    from pymatgen.core import Lattice

    return np.array(Lattice.from_parameters(*lattice).matrix)


@dataclass(frozen=True, eq=False)
class SymmetrizedStructure:
    """A crystal as space group + asymmetric unit (spglib's setting).

    Attributes
    ----------
    number : int
        Space-group number (1-230).
    symbol : str
        International (Hermann-Mauguin) short symbol, e.g. ``"Fm-3m"``.
    hall_number : int
        spglib's Hall number: the setting (origin choice, axes) of
        ``frac`` and ``rotations``/``translations``.
    lattice : tuple of 6 floats
        a, b, c (Å), alpha, beta, gamma (degrees) of the standardized
        cell.
    elements : tuple of str
        Element of each asymmetric-unit site.
    frac : ndarray (K, 3)
        Idealised fractional coordinates of the asymmetric unit.
    biso : ndarray (K,)
        B (Å^2) of each asymmetric-unit site.
    occupancy : ndarray (K,)
    wyckoff : tuple of str
        Wyckoff letters with multiplicity, e.g. ``"4a"``.
    rotations, translations : ndarray (S, 3, 3), (S, 3)
        The space group's operations in this setting.
    symprec : float
        The spglib tolerance (Å) that found the group.
    """

    number: int
    symbol: str
    hall_number: int
    lattice: tuple
    elements: tuple
    frac: np.ndarray
    biso: np.ndarray
    occupancy: np.ndarray
    wyckoff: tuple
    rotations: np.ndarray
    translations: np.ndarray
    symprec: float

    @property
    def choice(self) -> str:
        """spglib's setting choice ("1", "2", "H", "R" or "")."""
        import spglib

        return spglib.get_spacegroup_type(self.hall_number).choice

    def expand(self, tol: float = 1e-3):
        """Every site of the cell: (elements, frac (n, 3), biso, occ)."""
        elements, frac, biso, occ = [], [], [], []
        for el, x, b, o in zip(
            self.elements, self.frac, self.biso, self.occupancy
        ):
            orbit = []
            for rot, tr in zip(self.rotations, self.translations):
                y = np.mod(rot @ x + tr, 1.0)
                if not any(
                    np.all(np.abs((y - p + 0.5) % 1.0 - 0.5) < tol)
                    for p in orbit
                ):
                    orbit.append(y)
            for y in orbit:
                elements.append(el)
                frac.append(y)
                biso.append(b)
                occ.append(o)
        return (
            elements,
            np.mod(np.array(frac), 1.0),
            np.array(biso),
            np.array(occ),
        )

    def to_crystal(self, label: str = ""):
        """The full cell as :class:`~diffpy_mlsolve.structures.CrystalArrays`
        (with ``spacegroup`` set)."""
        from diffpy_mlsolve.structures import CrystalArrays, _symbol_to_z

        elements, frac, biso, occ = self.expand()
        return CrystalArrays(
            np.array(self.lattice, float),
            frac,
            np.array([_symbol_to_z(e, label) for e in elements]),
            occ,
            biso,
            label,
            self.number,
        )

    def to_diffpy(self):
        """The full cell as a diffpy.structure Structure."""
        from diffpy_mlsolve.structures import to_diffpy

        return to_diffpy(self.to_crystal())

    def to_pymatgen(self):
        """The full cell as a pymatgen Structure (site property ``biso``)."""
        from diffpy_mlsolve.structures import to_pymatgen

        return to_pymatgen(self.to_crystal())

    def cif(self, name: str = "mlsolve") -> str:
        """CIF text with the space group, its operations and the
        asymmetric unit (Biso per site)."""
        a, b, c, al, be, ga = self.lattice
        ops = [
            _xyz_op(rot, tr)
            for rot, tr in zip(self.rotations, self.translations)
        ]
        lines = [
            f"data_{_cif_token(name)}",
            f"_symmetry_space_group_name_H-M   '{self.symbol}'",
            f"_space_group_name_H-M_alt   '{self.symbol}'",
            f"_symmetry_Int_Tables_number   {self.number}",
            f"_cell_length_a   {a:.6f}",
            f"_cell_length_b   {b:.6f}",
            f"_cell_length_c   {c:.6f}",
            f"_cell_angle_alpha   {al:.6f}",
            f"_cell_angle_beta   {be:.6f}",
            f"_cell_angle_gamma   {ga:.6f}",
            "loop_",
            "_symmetry_equiv_pos_site_id",
            "_symmetry_equiv_pos_as_xyz",
        ]
        lines += [f"{i + 1} '{op}'" for i, op in enumerate(ops)]
        lines += [
            "loop_",
            "_atom_site_label",
            "_atom_site_type_symbol",
            "_atom_site_symmetry_multiplicity",
            "_atom_site_Wyckoff_symbol",
            "_atom_site_fract_x",
            "_atom_site_fract_y",
            "_atom_site_fract_z",
            "_atom_site_occupancy",
            "_atom_site_B_iso_or_equiv",
        ]
        counts: dict[str, int] = {}
        for el, x, bi, occ, wy in zip(
            self.elements, self.frac, self.biso, self.occupancy, self.wyckoff
        ):
            counts[el] = counts.get(el, 0) + 1
            mult, letter = wy[:-1], wy[-1]
            lines.append(
                f"{el}{counts[el]} {el} {mult} {letter} "
                f"{x[0]:.6f} {x[1]:.6f} {x[2]:.6f} {occ:.4f} {bi:.4f}"
            )
        return "\n".join(lines) + "\n"

    def write_cif(self, path, name: str | None = None) -> Path:
        """Write :meth:`cif` to ``path``."""
        path = Path(path)
        path.write_text(self.cif(name or path.stem), encoding="utf-8")
        return path


def _cif_token(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _xyz_op(rot, tr) -> str:
    out = []
    for row, t in zip(np.rint(rot).astype(int), tr):
        terms = []
        for coef, axis in zip(row, "xyz"):
            if coef:
                sign = "-" if coef < 0 else "+"
                mag = "" if abs(coef) == 1 else str(abs(coef))
                terms.append(f"{sign}{mag}{axis}")
        t = float(np.mod(t, 1.0))
        if abs(t) > 1e-6 and abs(t - 1) > 1e-6:
            from fractions import Fraction

            frac = Fraction(t).limit_denominator(12)
            terms.append(f"+{frac.numerator}/{frac.denominator}")
        text = "".join(terms).lstrip("+")
        out.append(text or "0")
    return ",".join(out)


def _dataset(lattice_matrix, frac, numbers, symprec):
    import spglib

    return spglib.get_symmetry_dataset(
        (lattice_matrix, frac, numbers), symprec=symprec
    )


def find_symmetry(
    structure,
    symprec=SYMPREC_LADDER,
    *,
    min_number: int = 1,
    keep_cell: bool = True,
) -> SymmetrizedStructure:
    """The space group and asymmetric unit of ``structure``.

    Parameters
    ----------
    structure : CrystalArrays, diffpy or pymatgen Structure, or CIF path
        The atoms, taken in the cell given (not re-standardized first).
    symprec : float or sequence of float
        spglib tolerances (Å) to try.  Of the groups found that keep the
        number of atoms of each element and the cell size, the one with
        the most operations wins (the tighter tolerance on a tie).  Give
        one tolerance to use only that.
    min_number : int
        Skip groups with a lower number than this (e.g. 2 to refuse P1).
    keep_cell : bool
        Require spglib's conventional cell to hold exactly the given
        atoms (the given cell is the conventional one).  With False a
        standard cell of another size is accepted when it keeps the
        number of atoms of each element per volume (no atoms merged).

    Returns
    -------
    SymmetrizedStructure
        In spglib's standardized setting, with per-element mean B and
        occupancy.

    Raises
    ------
    StructureError
        If no tolerance gives a group that keeps the contents.
    """
    from diffpy_mlsolve.structures import _z_to_symbol, as_crystal

    crystal = as_crystal(structure, standardize=False)
    ladder = [symprec] if np.isscalar(symprec) else list(symprec)
    lat = _matrix(crystal.lattice)
    numbers = np.asarray(crystal.numbers, int)
    counts = np.bincount(numbers, minlength=120)
    tried, kept = [], []
    for tol in sorted(ladder):
        ds = _dataset(lat, crystal.frac, numbers, tol)
        if ds is None:
            tried.append(f"{tol}: spglib failed")
            continue
        std_types = np.asarray(ds.std_types, int)
        if ds.number < min_number:
            tried.append(f"{tol}: {ds.international} below {min_number}")
            continue
        std_counts = np.bincount(std_types, minlength=120)
        if keep_cell:
            same = np.array_equal(std_counts, counts)
        else:
            ratio = abs(np.linalg.det(ds.std_lattice)) / crystal.volume
            same = np.allclose(std_counts, counts * ratio, atol=1e-3)
        if not same:
            tried.append(f"{tol}: {ds.international} changes the contents")
            continue
        kept.append((_order(ds.hall_number), -len(kept), ds, tol))
    # the highest order, at the tightest tolerance that finds it; spglib
    # can fail on its own standardized cell: then the next
    for _, _, ds, tol in sorted(kept, key=lambda t: t[:2], reverse=True):
        try:
            return _from_dataset(ds, crystal, tol, _z_to_symbol)
        except StructureError as err:
            tried.append(f"{tol}: {err}")
    raise StructureError(
        f"No space group keeps the {crystal.natoms} sites of "
        f"{crystal.label or 'the structure'} (tried symprec "
        f"{'; '.join(tried)}). Please check the sites or give a tighter "
        "tolerance."
    )


def _order(hall_number: int) -> int:
    import spglib

    return len(spglib.get_symmetry_from_database(hall_number)["rotations"])


def _from_dataset(ds, crystal, tol, z_to_symbol) -> SymmetrizedStructure:
    import spglib

    std_lat = np.asarray(ds.std_lattice, float)
    std_frac = np.mod(np.asarray(ds.std_positions, float), 1.0)
    std_types = np.asarray(ds.std_types, int)
    # the standardized cell again, tightly, for orbits and Wyckoff letters
    ds2 = _dataset(std_lat, std_frac, std_types, 1e-4)
    if ds2 is None or ds2.hall_number != ds.hall_number:
        ds2 = _dataset(std_lat, std_frac, std_types, tol)
    if ds2 is None:  # spglib failed on its own standardized cell
        raise StructureError(
            f"spglib could not analyse its standardized cell of this "
            f"structure at {tol:g} Å."
        )
    sym = spglib.get_symmetry_from_database(ds.hall_number)
    reps = sorted(set(int(i) for i in ds2.equivalent_atoms))
    mean_b = {}
    mean_occ = {}
    for z in set(crystal.numbers.tolist()):
        sel = crystal.numbers == z
        mean_b[z] = float(np.mean(crystal.biso[sel]))
        mean_occ[z] = float(np.mean(crystal.occupancy[sel]))
    mult = np.bincount(
        np.asarray(ds2.equivalent_atoms), minlength=len(std_types)
    )
    rotations = np.asarray(sym["rotations"], int)
    translations = np.asarray(sym["translations"], float)
    frac = _on_wyckoff_positions(
        std_frac[reps], mult[reps], rotations, translations, std_lat
    )
    return SymmetrizedStructure(
        number=int(ds.number),
        symbol=str(ds.international),
        hall_number=int(ds.hall_number),
        lattice=lattice_parameters(std_lat),
        elements=tuple(z_to_symbol(int(std_types[i])) for i in reps),
        frac=frac,
        biso=np.array([mean_b[int(std_types[i])] for i in reps]),
        occupancy=np.array([mean_occ[int(std_types[i])] for i in reps]),
        wyckoff=tuple(f"{mult[i]}{ds2.wyckoffs[i]}" for i in reps),
        rotations=rotations,
        translations=translations,
        symprec=float(tol),
    )


def _on_wyckoff_positions(frac, mult, rotations, translations, lattice):
    """Each site moved onto its Wyckoff position: the mean of its images
    under its site-symmetry group (the |G| / multiplicity operations that
    move it least).  spglib's standardized positions at a loose tolerance
    are not idealised (a 4f site of P4_2/mnm found at 0.03 Å came out at
    (0.3061, 0.3053, 0.0015)), and expanding them doubled the site."""
    out = []
    for x, m in zip(np.asarray(frac, float), mult):
        shifts = np.einsum("kij,j->ki", rotations, x) + translations - x
        shifts -= np.round(shifts)
        dist = np.linalg.norm(shifts @ lattice, axis=1)
        order = max(1, len(rotations) // max(int(m), 1))
        near = np.argsort(dist, kind="stable")[:order]
        out.append(np.mod(x + shifts[near].mean(0), 1.0))
    return np.array(out).reshape(-1, 3)
