"""Every bad pattern input raises a typed error that says where and why."""

from __future__ import annotations

import numpy as np
import pytest

from diffpy_mlsolve.errors import (
    MLSolveError,
    PatternFileError,
    PatternFormatError,
    WavelengthError,
)
from diffpy_mlsolve.pattern import Pattern, load_pattern

GOOD = "10.0 5\n10.1 6\n10.2 7\n10.3 8\n"

# fmt: off
BAD_FILES = [
    # (id, file name, content, error class, message pattern)
    ("empty", "e.xy", "", PatternFormatError, "is empty"),
    ("blank", "b.xy", "  \n\n", PatternFormatError, "is empty"),
    ("nul bytes", "n.xy", b"\x00\x01\x02abc\x00", PatternFormatError,
     "not a text file"),
    ("binary garbage", "g.xy", bytes(range(128, 256)) * 4,
     PatternFormatError, "not a text file"),
    ("tiff header", "img.tif", b"II*\x00\x08\x00\x00\x00" + b"\xff" * 64,
     PatternFormatError, "export the pattern as text"),
    ("header only", "h.xy", "# 2theta intensity\n# nothing else\n",
     PatternFormatError, "no numeric data rows"),
    ("one column", "o.xy", "1\n2\n3\n", PatternFormatError,
     "only one column"),
    ("ragged", "r.xy", "10 1\n11 2\n12 3 4\n13 4\n", PatternFormatError,
     r"line 3: 3 column\(s\).*line 1 has 2"),
    ("token", "t.xy", "10 1\n11 2\n12 abc\n13 4\n", PatternFormatError,
     r"line 3: 'abc' is not a number"),
    ("token first row", "f.xy", "# head\n10 x1\n11 2\n12 3\n",
     PatternFormatError, r"line 2: 'x1' is not a number"),
    ("trailing text", "z.xy", GOOD + "END\n", PatternFormatError,
     r"line 5: 1 column\(s\)"),
    ("nan", "nan.xy", "10 1\n11 nan\n12 3\n", PatternFormatError,
     r"line 2: intensity is nan, not a finite number"),
    ("inf x", "inf.xy", "10 1\n11 2\ninf 3\n", PatternFormatError,
     r"line 3: x is inf"),
    ("all zero", "zero.xy", "10 0\n11 0\n12 0\n", PatternFormatError,
     "every intensity is zero"),
    ("all negative", "neg.xy", "10 -1\n11 -2\n12 -3\n", PatternFormatError,
     "no intensity is positive"),
    ("all zero G(r)", "zero.gr", "1 0\n2 0\n3 0\n", PatternFormatError,
     "every intensity is zero"),
    ("not increasing", "ni.xy", "10 1\n12 2\n11 3\n13 4\n",
     PatternFormatError, r"line 3: x is not strictly increasing"),
    ("duplicate x", "dup.xy", "10 1\n11 2\n11 3\n12 4\n", PatternFormatError,
     r"line 3: duplicate x value 11"),
    ("single point", "one.xy", "10 1\n", PatternFormatError,
     r"1 data point.*at least 3"),
    ("two points", "two.xy", "10 1\n11 2\n", PatternFormatError,
     r"at least 3"),
    ("2theta > 180", "big.xy", "170 1\n180 2\n190 3\n", PatternFormatError,
     r"line 3: 2θ = 190.*within 0–180°"),
    ("2theta < 0", "small.xy", "-1 1\n0 2\n1 3\n", PatternFormatError,
     r"line 1: 2θ = -1"),
    ("q < 0", "q.iq", "-0.1 1\n0.5 2\n1 3\n", PatternFormatError,
     r"line 1: Q = -0.1"),
    ("d <= 0", "d.xy", "0 1\n1 2\n2 3\n", PatternFormatError,
     r"d-spacing = 0.0.*positive"),
    ("sigma <= 0", "s.xye", "10 1 1\n11 2 0\n12 3 1\n", PatternFormatError,
     r"line 2: sigma is 0.0.*positive"),
    ("zero wavelength", "w0.xy", "# wavelength = 0\n" + GOOD,
     WavelengthError, r"line 1: .*not a usable wavelength.*positive"),
    ("negative wavelength", "wn.xy", "# Wavelength: -1.5 A\n" + GOOD,
     WavelengthError, r"wavelength=1\.5406.*overrides the header"),
    ("bad columns", "c.xy", GOOD, PatternFormatError, r"columns=\(0, 5\)"),
]
# fmt: on

KWARGS = {"d <= 0": {"xtype": "d"}, "bad columns": {"columns": (0, 5)}}


@pytest.mark.parametrize(
    "name, content, cls, match",
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_file(tmp_path, request, name, content, cls, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    kwargs = KWARGS.get(request.node.callspec.id, {})
    with pytest.raises(cls, match=match) as info:
        load_pattern(path, **kwargs)
    assert str(path) in str(info.value)
    assert isinstance(info.value, MLSolveError)
    assert isinstance(info.value, ValueError)


def test_reversed_with_one_step_back_is_not_accepted(tmp_path):
    path = tmp_path / "x.xy"
    path.write_text("13 1\n12 2\n12.5 3\n11 4\n")
    with pytest.raises(PatternFormatError, match="line 3.*Please sort"):
        load_pattern(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.xy"
    with pytest.raises(PatternFileError, match="does not exist") as info:
        load_pattern(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError)
    with pytest.raises(OSError):
        load_pattern(str(path))


def test_directory(tmp_path):
    with pytest.raises(PatternFileError, match="is a folder") as info:
        load_pattern(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unknown_keyword(tmp_path):
    with pytest.raises(TypeError, match="columns"):
        load_pattern(tmp_path / "a.xy", colums=(0, 1))


def test_not_a_path():
    with pytest.raises(PatternFormatError, match="DiffractionObject"):
        load_pattern(42)


def test_unknown_xtype_in_load(tmp_path):
    path = tmp_path / "a.xy"
    path.write_text(GOOD)
    with pytest.raises(PatternFormatError, match="tth, q, d, r"):
        load_pattern(path, xtype="energy")


def test_argument_wavelength_zero_names_file(tmp_path):
    path = tmp_path / "a.xy"
    path.write_text(GOOD)
    with pytest.raises(WavelengthError, match="positive") as info:
        load_pattern(path, wavelength=0)
    assert str(path) in str(info.value)


# ------------------------------------------------------------ from_arrays
X3 = [10.0, 11.0, 12.0]
# fmt: off
BAD_ARRAYS = [
    ("length mismatch", dict(x=X3, y=[1, 2]), PatternFormatError,
     r"different lengths \[3, 2\]"),
    ("sigma length", dict(x=X3, y=[1, 2, 3], sigma=[1, 1]),
     PatternFormatError, "different lengths"),
    ("2-D", dict(x=[X3, X3], y=[X3, X3]), PatternFormatError, "1-D"),
    ("strings", dict(x=["a", "b", "c"], y=[1, 2, 3]), PatternFormatError,
     "cannot be read as numbers"),
    ("xtype", dict(x=X3, y=[1, 2, 3], xtype="2q"), PatternFormatError,
     r"Unknown xtype '2q'.*tth, q, d, r"),
    ("nan", dict(x=X3, y=[1, np.nan, 3]), PatternFormatError,
     r"Pattern data\[1\]: intensity is nan"),
    ("few", dict(x=[1, 2], y=[1, 2]), PatternFormatError, "at least 3"),
    ("dup", dict(x=[1, 1, 2], y=[1, 2, 3]), PatternFormatError,
     "duplicate"),
    ("zeros", dict(x=X3, y=[0, 0, 0]), PatternFormatError, "zero"),
    ("negative", dict(x=X3, y=[-1, -2, -3]), PatternFormatError,
     "positive"),
    ("zero G(r)", dict(x=X3, y=[0, 0, 0], xtype="r"), PatternFormatError,
     "zero"),
    ("r < 0", dict(x=[-1, 0, 1], y=[1, 2, 3], xtype="r"),
     PatternFormatError, "r = -1"),
    ("wavelength 0", dict(x=X3, y=[1, 2, 3], wavelength=0.0),
     WavelengthError, "positive"),
    ("wavelength < 0", dict(x=X3, y=[1, 2, 3], wavelength=-1.54),
     WavelengthError, "positive"),
    ("wavelength name", dict(x=X3, y=[1, 2, 3], wavelength="CuKb"),
     WavelengthError, "Unknown X-ray source"),
    ("sigma negative", dict(x=X3, y=[1, 2, 3], sigma=[1, -1, 1]),
     PatternFormatError, "sigma is -1.0"),
]
# fmt: on


@pytest.mark.parametrize(
    "kwargs, cls, match",
    [case[1:] for case in BAD_ARRAYS],
    ids=[case[0] for case in BAD_ARRAYS],
)
def test_bad_arrays(kwargs, cls, match):
    with pytest.raises(cls, match=match):
        Pattern.from_arrays(**kwargs)


def test_from_arrays_names_source():
    with pytest.raises(PatternFormatError, match="File 'scan7.xy'"):
        Pattern.from_arrays(
            X3, [1, 2, 1], xtype="tth", source="scan7.xy", sigma=[0, 1, 1]
        )


def test_conversion_errors():
    pat = Pattern.from_arrays(X3, [1, 2, 1])
    with pytest.raises(WavelengthError, match="wavelength='CuKa1'"):
        pat.q
    with pytest.raises(WavelengthError, match=r"with_wavelength"):
        pat.on_grid(np.linspace(0, 5, 10))
    gr = Pattern.from_arrays(X3, [1, -2, 1], xtype="r")
    with pytest.raises(PatternFormatError, match="no Q axis"):
        gr.on_q()
    with pytest.raises(PatternFormatError, match="no background"):
        gr.estimate_background()
    with pytest.raises(PatternFormatError, match="1-D"):
        pat.with_wavelength(1.0).on_grid([[1.0, 2.0]])
    with pytest.raises(PatternFormatError, match="one value per point"):
        pat.subtract_background(np.zeros(5))
