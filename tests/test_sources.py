"""Structure sources: tables, CIF folders, synthetic crystals."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure

from diffpy_mlsolve.data import (
    CifFolder,
    SkippedStructureWarning,
    StructureTable,
    SyntheticSource,
    crystal_system_of,
    open_source,
)
from diffpy_mlsolve.data import sources as sources_module
from diffpy_mlsolve.errors import DataSourceError
from diffpy_mlsolve.structures import DEFAULT_BISO

VAL_TABLE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "structures"
    / "val.csv.gz"
)


def _nacl_primitive():
    conv = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]
    )
    return conv.get_primitive_structure()


def _good_structures():
    """id -> (structure, conventional atoms, space group, crystal system)."""
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3])
    rutile = Structure.from_spacegroup(
        "P4_2/mnm",
        Lattice.tetragonal(4.59, 2.96),
        ["Ti", "O"],
        [[0, 0, 0], [0.305, 0.305, 0]],
    )
    zno = Structure.from_spacegroup(
        "P6_3mc",
        Lattice.hexagonal(3.25, 5.21),
        ["Zn", "O"],
        [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]],
    )
    return {
        "nacl": (_nacl_primitive(), 8, 225, "cubic"),
        "cscl": (cscl, 2, 221, "cubic"),
        "rutile": (rutile, 6, 136, "tetragonal"),
        "zno": (zno, 4, 186, "hexagonal"),
    }


def _bad_rows():
    """id -> (cif text or None, reason)."""
    partial = Structure(Lattice.cubic(4.0), [{"Na": 0.5}], [[0, 0, 0]])
    es = Structure(Lattice.cubic(4.0), ["Es"], [[0, 0, 0]])
    return {
        "garbage": ("this is not a CIF\n", "CIF parse error"),
        "half-na": (partial.to(fmt="cif"), "partial occupancy"),
        "es": (es.to(fmt="cif"), "unsupported element"),
        "empty": (None, "missing CIF"),
    }


def _write_table(path, rows, **columns):
    df = pd.DataFrame(
        {"material_id": [r[0] for r in rows], "cif": [r[1] for r in rows]}
    )
    for name, values in columns.items():
        df[name] = values
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def good_table(tmp_path):
    rows = [(k, v[0].to(fmt="cif")) for k, v in _good_structures().items()]
    # a wrong crystal_system for ZnO: the table's column must not be trusted
    systems = ["cubic", "cubic", "tetragonal", "cubic"]
    return _write_table(tmp_path / "good.csv.gz", rows, crystal_system=systems)


@pytest.fixture
def mixed_table(tmp_path):
    good = [(k, v[0].to(fmt="cif")) for k, v in _good_structures().items()]
    bad = [(k, v[0]) for k, v in _bad_rows().items()]
    rows = [good[0], bad[0], good[1], bad[1], good[2], bad[2], bad[3]]
    return _write_table(tmp_path / "mixed.csv.gz", rows + [good[3]])


def _same(a, b):
    ca, cb = a.crystal, b.crystal
    assert (a.id, a.formula, a.spacegroup) == (b.id, b.formula, b.spacegroup)
    for name in ("lattice", "frac", "numbers", "occupancy", "biso"):
        np.testing.assert_array_equal(getattr(ca, name), getattr(cb, name))


def test_bad_rows_are_skipped_with_one_warning_each(mixed_table):
    with pytest.warns(SkippedStructureWarning) as caught:
        table = StructureTable(mixed_table)
    messages = [str(w.message) for w in caught]
    expected = [
        (1, "garbage", "CIF parse error"),
        (3, "half-na", "partial occupancy"),
        (5, "es", "unsupported element"),
        (6, "empty", "missing CIF"),
    ]
    assert len(messages) == len(expected)
    for message, (row, rid, reason) in zip(messages, expected):
        pattern = rf"^mixed\.csv\.gz: row {row} \({rid}\) skipped, {reason}"
        assert re.match(pattern, message), message
        assert "\n" not in message
    summary = table.summary()
    assert summary["total"] == 8 and summary["kept"] == 4
    assert summary["skipped"] == {reason: 1 for _, _, reason in expected}
    assert table.ids == ["nacl", "cscl", "rutile", "zno"]


def test_parallel_parsing_gives_the_same_records(mixed_table):
    with pytest.warns(SkippedStructureWarning) as serial_warnings:
        serial = StructureTable(mixed_table)
    with pytest.warns(SkippedStructureWarning) as parallel_warnings:
        parallel = StructureTable(mixed_table, workers=2)
    assert [str(w.message) for w in serial_warnings] == [
        str(w.message) for w in parallel_warnings
    ]
    assert parallel.summary() == serial.summary()
    for a, b in zip(serial.records(), parallel.records()):
        _same(a, b)


def test_max_z_matches_the_form_factor_table():
    from diffpy_mlsolve.physics.formfactors import MAX_Z

    assert sources_module.MAX_Z == MAX_Z


def test_records_are_conventional_standard_cells(good_table):
    table = StructureTable(good_table)
    truth = _good_structures()
    assert len(table) == len(truth)
    for record in table.records():
        _, natoms, sg, system = truth[record.id]
        assert record.crystal.natoms == natoms
        assert record.spacegroup == sg == record.crystal.spacegroup
        assert record.crystal_system == system
        np.testing.assert_allclose(record.crystal.biso, DEFAULT_BISO)
    nacl = table[0]
    assert nacl.formula == "NaCl" and nacl.crystal.label == "nacl"
    np.testing.assert_allclose(nacl.crystal.lattice[:3], 5.64, atol=1e-6)
    np.testing.assert_allclose(nacl.crystal.lattice[3:], 90.0, atol=1e-6)
    assert sorted(nacl.crystal.numbers.tolist()) == [11] * 4 + [17] * 4
    _same(table[-1], table[3])
    with pytest.raises(IndexError):
        table[4]


@pytest.mark.parametrize(
    "filters, ids, filtered",
    [
        ({"systems": ["cubic"]}, ["nacl", "cscl"], {"crystal system": 2}),
        ({"systems": "tetragonal"}, ["rutile"], {"crystal system": 3}),
        ({"max_atoms": 4}, ["cscl", "zno"], {"atoms": 2}),
        ({"min_atoms": 6}, ["nacl", "rutile"], {"atoms": 2}),
        ({"elements": ["Na", "Cs", "Cl"]}, ["nacl", "cscl"], {"elements": 2}),
        ({"exclude_elements": ["O"]}, ["nacl", "cscl"], {"elements": 2}),
        ({"max_volume_per_atom": 15.0}, ["rutile", "zno"], None),
        ({"limit": 3}, ["nacl", "cscl", "rutile"], {}),
    ],
)
def test_filters(good_table, filters, ids, filtered):
    table = StructureTable(good_table, **filters)
    assert table.ids == ids
    if filtered is not None:
        assert table.summary()["filtered"] == filtered
    assert table.summary()["kept"] == len(ids)


def test_table_column_prefilters_but_is_verified(good_table):
    # The table calls ZnO cubic: the prefilter lets it through and the
    # standardised cell drops it; the real tetragonal rutile is dropped
    # without parsing.
    summary = StructureTable(good_table, systems=["cubic"]).summary()
    assert summary["filtered"] == {"crystal system": 2}
    assert summary["kept"] == 2


def test_table_errors(tmp_path, mixed_table):
    no_cif = tmp_path / "no_cif.csv"
    pd.DataFrame({"material_id": ["a"], "structure": ["x"]}).to_csv(no_cif)
    with pytest.raises(DataSourceError, match=r"no 'cif' column"):
        StructureTable(no_cif)
    header_only = tmp_path / "header.csv"
    header_only.write_text("material_id,cif\n")
    with pytest.raises(DataSourceError, match=r"has no rows"):
        StructureTable(header_only)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(DataSourceError, match=r"is empty"):
        StructureTable(blank)
    with pytest.raises(DataSourceError, match=r"No structure table"):
        StructureTable(tmp_path / "missing.csv.gz")
    all_bad = [(k, v[0]) for k, v in _bad_rows().items()]
    path = _write_table(tmp_path / "bad.csv.gz", all_bad)
    with pytest.warns(SkippedStructureWarning):
        with pytest.raises(DataSourceError, match=r"no usable structures"):
            StructureTable(path)
    with pytest.raises(DataSourceError, match=r"Unknown crystal system"):
        StructureTable(mixed_table, systems=["cubc"])


def test_parse_cache_is_reused(good_table, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = StructureTable(good_table, systems=["cubic"], cache_dir=cache)
    files = list(cache.glob("good.csv.gz-*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def no_parsing(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(sources_module, "record_from_pymatgen", no_parsing)
    again = StructureTable(good_table, systems=["cubic"], cache_dir=cache)
    assert again.summary() == first.summary()
    for a, b in zip(first.records(), again.records()):
        _same(a, b)
    with pytest.raises(AssertionError, match="cache was not used"):
        StructureTable(good_table, systems=["tetragonal"], cache_dir=cache)


CSCL_WITH_U = """data_CsCl
_cell_length_a 4.12
_cell_length_b 4.12
_cell_length_c 4.12
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_U_iso_or_equiv
Cs1 Cs 0 0 0 0.02
Cl1 Cl 0.5 0.5 0.5 0.015
"""


def test_cif_folder(tmp_path):
    (tmp_path / "nacl.cif").write_text(_nacl_primitive().to(fmt="cif"))
    (tmp_path / "cscl.cif").write_text(CSCL_WITH_U)
    (tmp_path / "broken.cif").write_text("this is not a CIF\n")
    (tmp_path / "notes.txt").write_text("not a structure")
    with pytest.warns(SkippedStructureWarning, match=r"broken\.cif skipped"):
        folder = CifFolder(tmp_path)
    (tmp_path / "broken.cif").unlink()
    assert folder.ids == ["cscl", "nacl"]
    assert folder.summary()["skipped"] == {"CIF parse error": 1}
    cscl, nacl = folder[0], folder[1]
    assert (cscl.spacegroup, cscl.crystal.natoms) == (221, 2)
    b = 8 * np.pi**2 * np.array([0.02, 0.015])
    np.testing.assert_allclose(sorted(cscl.crystal.biso), sorted(b))
    assert (nacl.spacegroup, nacl.crystal.natoms) == (225, 8)
    np.testing.assert_allclose(nacl.crystal.biso, DEFAULT_BISO)
    assert CifFolder(tmp_path, systems=["cubic"], max_atoms=2).ids == ["cscl"]
    assert isinstance(open_source(tmp_path), CifFolder)
    with pytest.raises(DataSourceError, match=r"no files matching"):
        CifFolder(tmp_path, pattern="*.xyz")


def test_synthetic_is_deterministic_per_record():
    forward = SyntheticSource(5, seed=3, max_atoms=20)
    backward = SyntheticSource(5, seed=3, max_atoms=20)
    got = {i: backward[i] for i in (4, 2, 0)}
    for i in (0, 2, 4):
        _same(forward[i], got[i])
        assert got[i].id == f"synth-3-{i}"
    other = SyntheticSource(5, seed=4, max_atoms=20)
    assert any(
        a.formula != b.formula
        or not np.allclose(a.crystal.lattice, b.crystal.lattice)
        for a, b in zip(forward.records(), other.records())
    )


@pytest.mark.parametrize("spacegroup", [225, 62, 14])
def test_synthetic_spacegroups_are_honoured(spacegroup):
    source = SyntheticSource(6, spacegroups=[spacegroup], max_atoms=24)
    found = [r.spacegroup for r in source]
    # pyxtal sometimes places atoms with higher symmetry (a supergroup)
    assert sum(sg == spacegroup for sg in found) >= 4, found


def test_synthetic_compositions_resemble_real_ones():
    source = SyntheticSource(20, seed=0, max_atoms=30)
    records = list(source)
    for r in records:
        vpa = r.crystal.volume / r.crystal.natoms
        assert 8.0 - 1e-6 <= vpa <= 40.0 + 1e-6
        assert 1 <= r.crystal.natoms <= 30
        assert r.crystal_system == crystal_system_of(r.spacegroup)
    balanced = [
        bool(Composition(r.formula).oxi_state_guesses()) for r in records
    ]
    assert sum(balanced) >= len(records) // 2, [r.formula for r in records]
    systems = {r.crystal_system for r in records}
    assert len(systems) >= 4
    assert source.summary()["kept"] == 20


def test_synthetic_element_and_system_choices():
    source = SyntheticSource(
        4, elements=["Na", "Cl", "O", "Mg"], systems=["cubic"], max_atoms=16
    )
    for r in source:
        assert set(re.findall(r"[A-Z][a-z]?", r.formula)) <= {
            "Na",
            "Cl",
            "O",
            "Mg",
        }
        assert r.crystal_system == "cubic"
    with pytest.raises(DataSourceError, match=r"crystal systems"):
        SyntheticSource(3, spacegroups=[14], systems=["cubic"])
    with pytest.raises(DataSourceError, match=r"form factor"):
        SyntheticSource(3, elements=["Es", "O"])


def test_sources_pickle(good_table):
    table = StructureTable(good_table)
    synth = SyntheticSource(3, seed=7, max_atoms=16)
    before = list(synth)
    for source, records in ((table, list(table)), (synth, before)):
        clone = pickle.loads(pickle.dumps(source))
        assert len(clone) == len(source) and clone.ids == source.ids
        for a, b in zip(records, clone.records()):
            _same(a, b)
    assert len(pickle.dumps(synth)) < 10_000


def test_open_source(good_table, tmp_path):
    assert isinstance(open_source(good_table, max_atoms=None), StructureTable)
    synth = open_source("synthetic:30", limit=2, seed=1, progress=True)
    assert isinstance(synth, SyntheticSource) and len(synth) == 2
    with pytest.raises(DataSourceError, match=r"synthetic:N"):
        open_source("synthetic:many")
    with pytest.raises(DataSourceError, match=r"Cannot open"):
        open_source(tmp_path / "structures.json")


@pytest.mark.parametrize(
    "number, system",
    [
        (1, "triclinic"), (2, "triclinic"), (3, "monoclinic"),
        (15, "monoclinic"), (16, "orthorhombic"), (74, "orthorhombic"),
        (75, "tetragonal"), (142, "tetragonal"), (143, "trigonal"),
        (167, "trigonal"), (168, "hexagonal"), (194, "hexagonal"),
        (195, "cubic"), (230, "cubic"),
    ],
)  # fmt: skip
def test_crystal_system_of(number, system):
    assert crystal_system_of(number) == system


@pytest.mark.parametrize("number", [0, 231])
def test_crystal_system_of_bad_number(number):
    with pytest.raises(ValueError, match=r"1 to 230"):
        crystal_system_of(number)


def _cubic_source(table: Path):
    """Twenty cubic structures: the shared table, or synthetic without it."""
    if table.is_file():
        return open_source(table, systems=["cubic"], limit=20)
    return open_source("synthetic:20", systems=["cubic"], max_atoms=16)


@pytest.mark.parametrize(
    "table", [VAL_TABLE, VAL_TABLE.with_name("absent.csv.gz")]
)
def test_shared_table_or_synthetic_fallback(table):
    source = _cubic_source(table)
    assert len(source) == 20
    assert all(r.crystal_system == "cubic" for r in source)
    assert all(195 <= r.spacegroup <= 230 for r in source)
