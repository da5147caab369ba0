"""Crystal structures for training: tables, CIF folders, generators.

Every source is a map-style, index-stable sequence of
:class:`StructureRecord`, each in its conventional standard cell (spglib
through :func:`diffpy_mlsolve.structures.as_crystal`).  Tables and folders
are parsed once, at construction; a row that cannot be used is skipped with
one :class:`SkippedStructureWarning` naming it and the reason, counted in
:meth:`StructureSource.summary`, and the rest goes on.  Sources keep only
small numpy arrays, so they pickle cheaply into DataLoader workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from abc import ABC, abstractmethod
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from diffpy_mlsolve.errors import DataSourceError, StructureError
from diffpy_mlsolve.structures import (
    DEFAULT_SYMPREC,
    CrystalArrays,
    as_crystal,
    to_pymatgen,
)

__all__ = [
    "CRYSTAL_SYSTEMS",
    "StructureRecord",
    "StructureSource",
    "StructureTable",
    "CifFolder",
    "SkippedStructureWarning",
    "crystal_system_of",
    "open_source",
]

#: The seven crystal systems, from highest to lowest symmetry.
CRYSTAL_SYSTEMS = (
    "cubic",
    "hexagonal",
    "trigonal",
    "tetragonal",
    "orthorhombic",
    "monoclinic",
    "triclinic",
)
_SYSTEM_LAST_GROUP = (
    (2, "triclinic"),
    (15, "monoclinic"),
    (74, "orthorhombic"),
    (142, "tetragonal"),
    (167, "trigonal"),
    (194, "hexagonal"),
    (230, "cubic"),
)
_FORMULA_ELEMENT = re.compile(r"[A-Z][a-z]?")
_log = logging.getLogger(__name__)
#: Heaviest element with an X-ray form factor (physics.formfactors.MAX_Z,
#: not imported here so that parsing workers need no torch).
MAX_Z = 98


def crystal_system_of(spacegroup: int) -> str:
    """The crystal system of an international space-group number 1-230."""
    number = int(spacegroup)
    for last, system in _SYSTEM_LAST_GROUP:
        if 1 <= number <= last:
            return system
    raise ValueError(
        f"Space group {spacegroup!r} does not exist. Please give an "
        "international number from 1 to 230."
    )


class SkippedStructureWarning(UserWarning):
    """A row or file of a structure source was skipped."""


@dataclass(frozen=True)
class StructureRecord:
    """One crystal of a source, in its conventional standard cell.

    Attributes
    ----------
    id : str
        The table's ``material_id``, the CIF file stem, or ``synth-S-I``.
    crystal : CrystalArrays
        The conventional standard cell (spglib, symprec of the source);
        B in Å^2 from the structure, or the default.
    spacegroup : int
        Space-group number of the standardised cell.
    crystal_system : str
        One of :data:`CRYSTAL_SYSTEMS`, from ``spacegroup``.
    formula : str
        Reduced formula.
    """

    id: str
    crystal: CrystalArrays
    spacegroup: int
    crystal_system: str
    formula: str


class StructureSource(ABC):
    """A deterministic, indexable sequence of :class:`StructureRecord`."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _record(self, index: int) -> StructureRecord: ...

    @property
    @abstractmethod
    def ids(self) -> list[str]:
        """Record ids, in index order."""

    @abstractmethod
    def summary(self) -> dict:
        """Counts: ``total``, ``kept``, ``skipped`` and ``filtered``."""

    def __getitem__(self, index: int) -> StructureRecord:
        i = int(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"Record {index} is out of range (0..{n - 1}).")
        return self._record(i)

    def records(self) -> Iterator[StructureRecord]:
        """Every record, in index order."""
        for i in range(len(self)):
            yield self._record(i)

    def __iter__(self) -> Iterator[StructureRecord]:
        return self.records()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} with {len(self)} structures>"


@dataclass(frozen=True)
class _Filters:
    """Which standardised structures a source keeps."""

    systems: tuple | None = None
    max_atoms: int | None = None
    min_atoms: int | None = None
    elements: tuple | None = None
    exclude_elements: tuple | None = None
    max_volume_per_atom: float | None = None

    @classmethod
    def create(cls, systems=None, elements=None, exclude_elements=None, **kw):
        if isinstance(systems, str):
            systems = [systems]
        if systems is not None:
            systems = tuple(sorted({str(s).lower() for s in systems}))
            bad = [s for s in systems if s not in CRYSTAL_SYSTEMS]
            if bad:
                raise DataSourceError(
                    f"Unknown crystal system(s) {bad}. Please choose from "
                    f"{list(CRYSTAL_SYSTEMS)}."
                )
        return cls(
            systems,
            elements=_element_set(elements),
            exclude_elements=_element_set(exclude_elements),
            **kw,
        )

    def rejects(self, rec: StructureRecord) -> str | None:
        """The filter that drops ``rec``, or None to keep it."""
        n = rec.crystal.natoms
        els = set(_FORMULA_ELEMENT.findall(rec.formula))
        return _first_rejection(
            self, rec.crystal_system, n, rec.crystal.volume / n, els
        )


def _first_rejection(f, system, natoms, vpa, elements) -> str | None:
    if f.systems is not None and system not in f.systems:
        return "crystal system"
    if (f.max_atoms is not None and natoms > f.max_atoms) or (
        f.min_atoms is not None and natoms < f.min_atoms
    ):
        return "atoms"
    if f.max_volume_per_atom is not None and vpa > f.max_volume_per_atom:
        return "volume per atom"
    if (f.elements is not None and not elements <= set(f.elements)) or (
        f.exclude_elements and elements & set(f.exclude_elements)
    ):
        return "elements"
    return None


def _element_set(symbols) -> tuple | None:
    if symbols is None:
        return None
    from pymatgen.core.periodic_table import Element

    symbols = [symbols] if isinstance(symbols, str) else list(symbols)
    for s in symbols:
        if not Element.is_valid_symbol(str(s)):
            raise DataSourceError(
                f"Unknown element {s!r} in an element filter. Please use "
                "symbols such as 'Na' or 'O'."
            )
    return tuple(sorted({str(s) for s in symbols}))


class _Skip(Exception):
    """A structure that is left out: ``reason`` (short) and ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, " ".join(str(detail).split())


def record_from_pymatgen(pmg, rid: str, symprec: float) -> StructureRecord:
    """Standardise a pymatgen Structure into a record; raises ``_Skip``."""
    for el in pmg.composition.elements:
        z = getattr(el, "Z", None)
        if z is None:
            raise _Skip("unknown element", f"{el} is not an element")
        if z > MAX_Z:
            raise _Skip("unsupported element", f"{el} (Z={z}) > {MAX_Z}")
    if not pmg.is_ordered:
        raise _Skip("partial occupancy", "sites must be fully occupied")
    try:
        crystal = as_crystal(pmg, symprec=symprec)
    except StructureError as err:
        raise _Skip("standardisation failed", str(err)) from err
    sg = int(crystal.spacegroup)
    crystal = replace(crystal, label=rid)
    formula = pmg.composition.reduced_formula
    return StructureRecord(rid, crystal, sg, crystal_system_of(sg), formula)


class _Packed:
    """Records as a few concatenated arrays: cheap to pickle and cache."""

    _SITE = ("frac", "numbers", "occupancy", "biso")

    def __init__(self, **arrays):
        self.arrays = arrays
        self.offsets = np.concatenate([[0], np.cumsum(arrays["counts"])])

    @classmethod
    def from_records(cls, records: list[StructureRecord]) -> _Packed:
        cs = [r.crystal for r in records]

        def cat(name, shape):
            parts = [getattr(c, name) for c in cs]
            return np.concatenate(parts) if parts else np.zeros(shape)

        return cls(
            ids=np.array([r.id for r in records], dtype=str),
            formulas=np.array([r.formula for r in records], dtype=str),
            spacegroups=np.array([r.spacegroup for r in records], int),
            lattice=np.array([c.lattice for c in cs], float).reshape(-1, 6),
            counts=np.array([c.natoms for c in cs], int),
            frac=cat("frac", (0, 3)).astype(float),
            numbers=cat("numbers", 0).astype(int),
            occupancy=cat("occupancy", 0).astype(float),
            biso=cat("biso", 0).astype(float),
        )

    def __len__(self) -> int:
        return len(self.arrays["ids"])

    def record(self, i: int) -> StructureRecord:
        a, sl = self.arrays, slice(self.offsets[i], self.offsets[i + 1])
        sg, rid = int(a["spacegroups"][i]), str(a["ids"][i])
        site = [a[k][sl].copy() for k in self._SITE]
        crystal = CrystalArrays(
            a["lattice"][i].copy(), *site, label=rid, spacegroup=sg
        )
        formula = str(a["formulas"][i])
        return StructureRecord(
            rid, crystal, sg, crystal_system_of(sg), formula
        )


class _PackedSource(StructureSource):
    """A source parsed eagerly into a :class:`_Packed` store."""

    _packed: _Packed
    _summary: dict

    def __len__(self) -> int:
        return len(self._packed)

    def _record(self, index: int) -> StructureRecord:
        return self._packed.record(index)

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self._packed.arrays["ids"]]

    def summary(self) -> dict:
        return json.loads(json.dumps(self._summary))

    def _collect(self, jobs, filters, symprec, limit, progress, workers):
        """Parse ``(what, id, loader, payload)`` jobs; keep, filter or skip.

        ``loader(payload)`` gives a pymatgen Structure or raises ``_Skip``.
        """
        records, messages = [], []
        skipped, filtered = {}, dict(self._summary.get("filtered", {}))
        work = [(loader, x, rid, symprec) for _, rid, loader, x in jobs]
        pool = None
        if workers and workers > 1 and len(work) > 1:
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers)
            chunk = max(1, min(64, len(work) // (4 * workers)))
            results = pool.map(_parse_one, work, chunksize=chunk)
        else:
            results = map(_parse_one, work)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(
                results, total=len(work), desc=self._name, unit="cif"
            )
        try:
            for (what, *_), rec in zip(jobs, results):
                if limit is not None and len(records) >= limit:
                    break
                if isinstance(rec, _Skip):
                    skipped[rec.reason] = skipped.get(rec.reason, 0) + 1
                    messages.append(
                        f"{self._name}: {what} skipped, {rec.reason}: "
                        f"{rec.detail[:200]}"
                    )
                    continue
                why = filters.rejects(rec)
                if why is None:
                    records.append(rec)
                else:
                    filtered[why] = filtered.get(why, 0) + 1
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        self._summary.update(
            kept=len(records), skipped=skipped, filtered=filtered
        )
        self._summary["unread"] = self._summary["total"] - sum(
            [len(records), sum(skipped.values()), sum(filtered.values())]
        )
        self._packed = _Packed.from_records(records)
        return messages

    def _finish(self, messages, hint, progress=False):
        for m in messages:
            warnings.warn(m, SkippedStructureWarning, stacklevel=3)
        sm = self._summary
        line = (
            f"{self._name}: kept {sm['kept']} of {sm['total']}; skipped "
            f"{sm['skipped'] or 0}; filtered {sm['filtered'] or 0}"
        )
        _log.info(line)
        if progress:
            print(line, file=sys.stderr)
        if len(self._packed) == 0:
            raise DataSourceError(
                f"{self._name} gave no usable structures ({self._summary}). "
                f"{hint}"
            )


def _parse_one(job):
    """A record, or the ``_Skip`` that says why there is none."""
    loader, payload, rid, symprec = job
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return record_from_pymatgen(loader(payload), rid, symprec)
    except _Skip as skip:
        return skip


def _structure_from_cif_text(cif):
    from pymatgen.core import Structure

    if not isinstance(cif, str) or not cif.strip():
        raise _Skip("missing CIF", "the cif cell is empty")
    try:
        return Structure.from_str(cif, fmt="cif")
    except Exception as err:  # pymatgen raises many parser errors
        raise _Skip("CIF parse error", str(err) or repr(err)) from err


class StructureTable(_PackedSource):
    """Structures from a csv/csv.gz table with ``material_id`` and ``cif``.

    Parameters
    ----------
    path : str or Path
        The table, e.g. ``../shared/data/structures/train.csv.gz``.
    systems : list of str, optional
        Crystal systems to keep (of the standardised cell).
    max_atoms, min_atoms : int, optional
        Bounds on atoms in the conventional standard cell.
    elements : iterable of str, optional
        Allowed elements: every element of a kept structure is one of them.
    exclude_elements : iterable of str, optional
        Structures with any of these elements are dropped.
    limit : int, optional
        Keep at most this many structures (the first, in table order).
    max_volume_per_atom : float, optional
        Upper bound on the volume per atom in Å^3.
    symprec : float
        spglib tolerance in Å.
    progress : bool
        Show a tqdm progress bar while parsing.
    cache_dir : str or Path, optional
        Folder for a parse cache, keyed by the file (path, size, mtime),
        the filters, ``symprec`` and the package version.
    workers : int
        Processes that parse and standardise rows (1: in this process).
        Where processes are spawned (macOS, Windows), call from under
        ``if __name__ == "__main__":``.

    Notes
    -----
    The columns ``crystal_system``, ``natoms_conventional``,
    ``volume_per_atom`` and ``formula``, when present, only prefilter rows;
    every kept structure is checked again after standardisation.  Rows are
    numbered from 0, as pandas numbers them.
    """

    def __init__(
        self,
        path,
        *,
        systems=None,
        max_atoms=None,
        min_atoms=None,
        elements=None,
        exclude_elements=None,
        limit=None,
        max_volume_per_atom=None,
        symprec=DEFAULT_SYMPREC,
        progress=False,
        cache_dir=None,
        workers=1,
    ):
        self.path = Path(path)
        self._name = self.path.name
        filters = _Filters.create(
            systems,
            elements,
            exclude_elements,
            max_atoms=max_atoms,
            min_atoms=min_atoms,
            max_volume_per_atom=max_volume_per_atom,
        )
        cache = _cache_file(cache_dir, self.path, filters, symprec, limit)
        messages = _read_cache(self, cache) if cache else None
        if messages is None:
            df = self._read_table()
            self._summary = {"source": str(self.path), "total": len(df)}
            df = self._prefilter(df, filters)
            jobs = [
                (f"row {i} ({rid})", str(rid), _structure_from_cif_text, cif)
                for i, rid, cif in zip(df.index, df["material_id"], df["cif"])
            ]
            messages = self._collect(
                jobs, filters, symprec, limit, progress, workers
            )
            if cache:
                _write_cache(self, cache, messages)
        self._finish(
            messages,
            "Please loosen the filters or check that the cif column holds "
            "CIF text.",
            progress,
        )

    def _read_table(self):
        import pandas as pd

        try:
            df = pd.read_csv(self.path, dtype={"material_id": str})
        except FileNotFoundError as err:
            raise DataSourceError(
                f"No structure table at {str(self.path)!r}. Please check the "
                "path."
            ) from err
        except pd.errors.EmptyDataError as err:
            raise DataSourceError(
                f"The structure table {str(self.path)!r} is empty. Please "
                "give a csv with 'material_id' and 'cif' columns."
            ) from err
        except (ValueError, OSError, EOFError) as err:
            raise DataSourceError(
                f"Could not read {str(self.path)!r} as a csv table: {err}. "
                "Please give a csv or csv.gz file."
            ) from err
        missing = [c for c in ("material_id", "cif") if c not in df.columns]
        if missing:
            raise DataSourceError(
                f"The structure table {str(self.path)!r} has no "
                f"{' or '.join(map(repr, missing))} column (columns: "
                f"{list(df.columns)}). Please give one row per structure "
                "with its id in 'material_id' and its CIF text in 'cif'."
            )
        if len(df) == 0:
            raise DataSourceError(
                f"The structure table {str(self.path)!r} has no rows. "
                "Please give a table with at least one structure."
            )
        return df

    def _prefilter(self, df, f: _Filters):
        """Drop rows the table's own columns already rule out."""
        nan = float("nan")

        def col(name, default):
            return df[name] if name in df.columns else [default] * len(df)

        columns = zip(
            col("crystal_system", None),
            col("natoms_conventional", nan),
            col("volume_per_atom", nan),
            col("formula", None),
        )
        keep, filtered = [], {}
        for system, natoms, vpa, formula in columns:
            if not isinstance(system, str):
                system = None
            els = set(_FORMULA_ELEMENT.findall(formula or "")) or None
            why = _first_rejection(
                _unknowns_pass(f, system, natoms, els),
                system,
                natoms,
                vpa,
                els or set(),
            )
            keep.append(why is None)
            if why is not None:
                filtered[why] = filtered.get(why, 0) + 1
        self._summary["filtered"] = filtered
        return df[np.asarray(keep, bool)]


def _unknowns_pass(f: _Filters, system, natoms, elements) -> _Filters:
    """``f`` without the tests whose table column is missing or empty."""
    return _Filters(
        f.systems if system is not None else None,
        f.max_atoms if natoms == natoms else None,
        f.min_atoms if natoms == natoms else None,
        f.elements if elements else None,
        f.exclude_elements if elements else None,
        f.max_volume_per_atom,
    )


class CifFolder(_PackedSource):
    """Structures from a folder of CIF files, one record per file.

    Files are read with diffpy.structure (site Uiso kept as B = 8π^2 Uiso;
    a file without displacement columns gets the default B).  The id of a
    record is the file stem.  Filters and ``workers`` are those of
    :class:`StructureTable`.
    """

    def __init__(
        self,
        path,
        *,
        pattern="*.cif",
        systems=None,
        max_atoms=None,
        min_atoms=None,
        elements=None,
        exclude_elements=None,
        limit=None,
        max_volume_per_atom=None,
        symprec=DEFAULT_SYMPREC,
        progress=False,
        workers=1,
    ):
        self.path = Path(path)
        self._name = str(self.path)
        filters = _Filters.create(
            systems,
            elements,
            exclude_elements,
            max_atoms=max_atoms,
            min_atoms=min_atoms,
            max_volume_per_atom=max_volume_per_atom,
        )
        if not self.path.is_dir():
            raise DataSourceError(
                f"No folder at {self._name!r}. Please give a folder of CIF "
                "files."
            )
        files = sorted(p for p in self.path.glob(pattern) if p.is_file())
        if not files:
            raise DataSourceError(
                f"The folder {self._name!r} has no files matching "
                f"{pattern!r}. Please check the folder or the pattern."
            )
        self._summary = {"source": self._name, "total": len(files)}
        jobs = [(p.name, p.stem, _structure_from_cif_file, p) for p in files]
        messages = self._collect(
            jobs, filters, symprec, limit, progress, workers
        )
        self._finish(
            messages,
            "Please loosen the filters or check the CIF files.",
            progress,
        )


def _structure_from_cif_file(path: Path):
    try:  # the CIF parser prints syntax errors: keep them quiet
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            crystal = as_crystal(path, standardize=False)
    except StructureError as err:
        unknown = "element" in str(err)
        reason = "unknown element" if unknown else "CIF parse error"
        raise _Skip(reason, str(err)) from err
    return to_pymatgen(crystal)


def _cache_file(cache_dir, path: Path, filters, symprec, limit):
    if cache_dir is None or not path.is_file():
        return None
    from diffpy_mlsolve.version import __version__

    st = path.stat()
    key = json.dumps(
        [
            str(path.resolve()),
            st.st_size,
            st.st_mtime_ns,
            vars(filters),
            float(symprec),
            limit,
            __version__,
        ],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{path.name}-{digest}.npz"


def _read_cache(source, cache: Path):
    """Fill ``source`` from ``cache``; the skip messages, or None."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        source._summary = json.loads(str(arrays.pop("summary")))
        messages = [str(m) for m in arrays.pop("messages")]
        source._packed = _Packed(**arrays)
    except Exception as err:  # a damaged cache is rebuilt, not fatal
        warnings.warn(f"Ignoring the unreadable parse cache {cache}: {err}")
        return None
    return messages


def _write_cache(source, cache: Path, messages) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(
                    fh,
                    summary=np.array(json.dumps(source._summary)),
                    messages=np.array(messages, dtype=str),
                    **source._packed.arrays,
                )
            os.replace(tmp, cache)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as err:
        warnings.warn(f"Could not write the parse cache {cache}: {err}")


def open_source(spec, **filters) -> StructureSource:
    """A source from a table path, a CIF folder or ``"synthetic:N"``.

    ``filters`` are the keywords of :class:`StructureTable`; filters left
    as None are not passed.  For ``"synthetic:N"``, ``limit`` caps N and
    ``progress``, ``cache_dir``, ``pattern`` and ``workers`` are ignored.
    """
    if isinstance(spec, StructureSource):
        return spec
    filters = {k: v for k, v in filters.items() if v is not None}
    text = str(spec)
    if text.startswith("synthetic:"):
        from diffpy_mlsolve.data.synthetic import SyntheticSource

        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            raise DataSourceError(
                f"Cannot read {text!r}. Please write 'synthetic:N' with N "
                "the number of structures, e.g. 'synthetic:1000'."
            ) from None
        n = min(n, filters.pop("limit", n))
        for k in ("progress", "cache_dir", "pattern", "workers"):
            filters.pop(k, None)
        return SyntheticSource(n, **filters)
    path = Path(spec)
    if path.is_dir():
        filters.pop("cache_dir", None)
        return CifFolder(path, **filters)
    if path.name.endswith((".csv", ".csv.gz")):
        return StructureTable(path, **filters)
    raise DataSourceError(
        f"Cannot open {text!r} as structures. Please give a .csv or .csv.gz "
        "table, a folder of CIF files, or 'synthetic:N'."
    )
