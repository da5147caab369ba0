"""Pattern: loading every format, axes, conversions, background."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

from diffpy_mlsolve.errors import PatternFormatError, WavelengthError
from diffpy_mlsolve.pattern import MIN_POINTS, Pattern, load_pattern

CU_KA1 = 1.540593


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(x, *cols, fmt="{:.10g}", sep=" "):
    return "".join(
        sep.join(fmt.format(v) for v in row) + "\n" for row in zip(x, *cols)
    )


TTH = np.linspace(10.0, 20.0, 11)
Y = 100.0 + 10.0 * np.arange(11)
SIG = np.sqrt(Y)


# ------------------------------------------------------------ file formats
def test_xy_plain(tmp_path):
    path = write(tmp_path, "a.xy", "# my sample\n" + rows(TTH, Y))
    pat = load_pattern(path)
    assert pat.xtype == "tth"
    np.testing.assert_allclose(pat.x, TTH)
    np.testing.assert_allclose(pat.intensity, Y)
    assert pat.sigma is None
    assert pat.wavelength is None
    assert pat.metadata["wavelength_from"] is None
    assert pat.metadata["format"] == "xy"
    assert pat.source == str(path)
    assert pat.npoints == 11


def test_xye_third_column_is_sigma(tmp_path):
    path = write(tmp_path, "a.xye", rows(TTH, Y, SIG))
    pat = load_pattern(path, wavelength=1.5406)
    np.testing.assert_allclose(pat.sigma, SIG, rtol=1e-6)
    assert pat.wavelength == 1.5406
    assert pat.metadata["wavelength_from"] == "argument"


def test_xy_third_column_without_name_is_ignored(tmp_path):
    path = write(tmp_path, "a.xy", rows(TTH, Y, Y * 0 + 5))
    assert load_pattern(path).sigma is None
    pat = load_pattern(path, columns=(0, 1, 2))
    np.testing.assert_allclose(pat.sigma, 5.0)


@pytest.mark.parametrize("ext", [".dat", ".txt"])
def test_dat_txt_with_q_column_name(tmp_path, ext):
    q = np.linspace(0.5, 5.0, 10)
    path = write(tmp_path, "a" + ext, "# Q  I\n" + rows(q, q + 1))
    pat = load_pattern(path)
    assert pat.xtype == "q"
    np.testing.assert_allclose(pat.x, q, rtol=1e-6)
    assert pat.metadata["column_names"] == ("Q", "I")


def test_csv_with_header_and_sigma(tmp_path):
    text = "2theta,intensity,esd\n" + rows(TTH, Y, SIG, sep=",")
    pat = load_pattern(write(tmp_path, "a.csv", text), wavelength="CuKa1")
    assert pat.xtype == "tth"
    np.testing.assert_allclose(pat.intensity, Y)
    np.testing.assert_allclose(pat.sigma, SIG, rtol=1e-6)
    assert pat.wavelength == CU_KA1
    assert pat.metadata["source_name"] == "CuKa1"


def test_csv_semicolon_decimal_comma(tmp_path):
    body = "".join(
        f"{t:.2f};{y:.1f}\n".replace(".", ",") for t, y in zip(TTH, Y)
    )
    pat = load_pattern(write(tmp_path, "b.csv", "Angle;Counts\n" + body))
    np.testing.assert_allclose(pat.x, TTH)
    np.testing.assert_allclose(pat.intensity, Y)


def test_fit2d_chi(tmp_path):
    text = (
        "Ni_0001.tif: Integration\n2-Theta Angle (Degrees)\nIntensity\n"
        f"{len(TTH):>10d}\n" + rows(TTH, Y, fmt="{:14.6e}")
    )
    pat = load_pattern(write(tmp_path, "ni.chi", text), wavelength=0.1665)
    assert pat.xtype == "tth"
    np.testing.assert_allclose(pat.x, TTH)
    np.testing.assert_allclose(pat.intensity, Y)


def test_fit2d_chi_in_q_nm(tmp_path):
    q_nm = np.linspace(5.0, 50.0, 10)
    text = (
        "title\nq_nm^-1\nIntensity\n" + f"{len(q_nm):>8d}\n" + rows(q_nm, q_nm)
    )
    pat = load_pattern(write(tmp_path, "n.chi", text))
    assert pat.xtype == "q"
    np.testing.assert_allclose(pat.x, q_nm / 10.0)


def test_pyfai_dat_nm_and_wavelength_in_metres(tmp_path):
    q_nm = np.linspace(5.0, 50.0, 10)
    header = (
        "# == pyFAI calibration ==\n"
        "# Distance Sample to Detector: 0.2 m\n"
        "# Detector Detector  Spline= None  PixelSize= 1.720e-04, 1.720e-04\n"
        "# Wavelength: 1.5406e-10 m\n"
        "# Mask applied: False\n"
        "#       q_nm^-1             I         sigma\n"
    )
    path = write(tmp_path, "int.dat", header + rows(q_nm, q_nm, q_nm * 0.1))
    pat = load_pattern(path)
    assert pat.xtype == "q"
    np.testing.assert_allclose(pat.x, q_nm / 10.0)
    np.testing.assert_allclose(pat.sigma, q_nm * 0.1)
    assert pat.wavelength == pytest.approx(1.5406)
    assert pat.metadata["wavelength_from"] == "header"
    assert pat.metadata["x_unit"] == "q_nm^-1"


def test_pyfai_2th_deg_units(tmp_path):
    header = "# Wavelength: 0.7093e-10\n#  2th_deg  I\n"
    pat = load_pattern(write(tmp_path, "p.dat", header + rows(TTH, Y)))
    assert pat.xtype == "tth"
    assert pat.wavelength == pytest.approx(0.7093)


PDFGETX3_HEADER = """[DEFAULT]

version = 2.2.1

# input and output specifications
dataformat = QA
inputfile = Ni.chi
backgroundfile =
outputtype = {kind}

# PDF calculation setup
mode = xray
wavelength = 0.1665
composition = Ni
qmaxinst = 25.0
qmin = 0.5
qmax = 25.0
qdamp = 0.04
rmin = 0
rmax = 30
rstep = 0.01

# End of config -------------------------------------------------------------

#### start data
#S 1
#L {cols}
"""


def test_pdfgetx3_gr(tmp_path):
    r = np.arange(0.0, 0.5, 0.01)
    g = np.sin(5 * r) - 0.3
    text = PDFGETX3_HEADER.format(kind="gr", cols=r"r($\AA$)  G($\AA^{-2}$)")
    pat = load_pattern(write(tmp_path, "ni.gr", text + rows(r, g)))
    assert pat.xtype == "r"
    np.testing.assert_allclose(pat.x, r)
    np.testing.assert_allclose(pat.intensity, g, atol=1e-5)
    assert pat.wavelength == pytest.approx(0.1665)
    assert pat.metadata["wavelength_from"] == "header"
    md = pat.metadata
    assert md["qmax"] == 25.0 and md["qdamp"] == 0.04 and md["rmax"] == 30
    assert md["composition"] == "Ni" and md["dataformat"] == "QA"
    assert "backgroundfile" not in md  # empty value
    assert md["column_names"][0] == r"r($\AA$)"
    with pytest.raises(PatternFormatError, match="no Q axis"):
        pat.q


def test_pdfgui_gr_four_columns_sigma(tmp_path):
    r = np.arange(1.0, 2.0, 0.1)
    text = "#L r G dr dG\n" + rows(r, np.cos(r), r * 0, r * 0 + 0.01)
    pat = load_pattern(write(tmp_path, "x.gr", text))
    np.testing.assert_allclose(pat.sigma, 0.01)


@pytest.mark.parametrize("ext", ["fq", "sq", "iq"])
def test_pdfgetx3_q_files(tmp_path, ext):
    q = np.linspace(0.5, 25.0, 50)
    text = PDFGETX3_HEADER.format(kind=ext, cols=r"Q($\AA^{-1}$)  F")
    pat = load_pattern(write(tmp_path, "ni." + ext, text + rows(q, q + 1)))
    assert pat.xtype == "q"
    np.testing.assert_allclose(pat.x, q, rtol=1e-6)
    assert pat.metadata["qdamp"] == 0.04


def test_reversed_file_is_reversed(tmp_path):
    path = write(tmp_path, "rev.xy", rows(TTH[::-1], Y[::-1]))
    pat = load_pattern(path)
    np.testing.assert_allclose(pat.x, TTH)
    np.testing.assert_allclose(pat.intensity, Y)
    assert pat.metadata["reversed"] is True


def test_latin1_header_is_text(tmp_path):
    path = tmp_path / "old.xy"
    path.write_bytes(b"# T = 25 \xb0C\n" + rows(TTH, Y).encode())
    np.testing.assert_allclose(load_pattern(path).x, TTH)


def test_inline_comments_and_blank_lines(tmp_path):
    text = "10 5\n\n11 6  # a note\n12 7\n"
    np.testing.assert_allclose(
        load_pattern(write(tmp_path, "c.xy", text)).x, [10, 11, 12]
    )


def test_mlsolve_simulate_output_round_trip(tmp_path):
    q = np.linspace(0.5, 8.0, 30)
    header = "# xtype = q\n# wavelength = 1.5406\n# simulated_by = x 0.1\n"
    pat = load_pattern(write(tmp_path, "sim.xy", header + rows(q, q + 1)))
    assert pat.xtype == "q" and pat.wavelength == 1.5406
    assert "column_names" not in pat.metadata
    assert pat.metadata["simulated_by"] == "x 0.1"


# ---------------------------------------------------------------- wavelength
def test_argument_wavelength_wins_over_header(tmp_path):
    text = "# wavelength = 0.7093\n" + rows(TTH, Y)
    path = write(tmp_path, "w.xy", text)
    assert load_pattern(path).wavelength == pytest.approx(0.7093)
    pat = load_pattern(path, wavelength=1.2)
    assert pat.wavelength == 1.2
    assert pat.metadata["wavelength_from"] == "argument"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("# Wavelength (nm): 0.15406", 1.5406),
        ("# lambda = 1.5406 A", 1.5406),
        ("wavelength: 0.5", 0.5),
    ],
)
def test_header_wavelength_units(tmp_path, line, expected):
    path = write(tmp_path, "u.xy", line + "\n" + rows(TTH, Y))
    assert load_pattern(path).wavelength == pytest.approx(expected)


@pytest.mark.parametrize(
    "name, value", [("CuKa1", CU_KA1), ("MoKa1", 0.709317), ("cukα1", CU_KA1)]
)
def test_named_sources(name, value):
    pat = Pattern.from_arrays(TTH, Y, wavelength=name)
    assert pat.wavelength == value
    assert pat.metadata["source_name"].lower() == name.lower().replace(
        "α", "a"
    )


def test_no_wavelength_loads_but_refuses_q(tmp_path):
    pat = load_pattern(write(tmp_path, "a.xy", rows(TTH, Y)))
    for attr in ("q", "d"):
        with pytest.raises(WavelengthError, match=r"wavelength=1\.5406"):
            getattr(pat, attr)
    with pytest.raises(WavelengthError, match="CuKa1"):
        pat.on_q()
    with pytest.raises(WavelengthError):
        pat.on_grid([1.0, 2.0])
    assert pat.with_wavelength("CuKa1").q[0] > 0


# ----------------------------------------------------------------- physics
def test_bragg_q_nacl_200():
    d = 2.82
    tth = np.degrees(2 * np.arcsin(CU_KA1 / (2 * d)))
    pat = Pattern.from_arrays(
        [tth - 1, tth, tth + 1], [1, 2, 1], "tth", wavelength="CuKa1"
    )
    assert pat.q[1] == pytest.approx(2 * math.pi / d, rel=1e-12)
    assert pat.d[1] == pytest.approx(d, rel=1e-12)
    assert tth == pytest.approx(31.70, abs=0.01)


def test_on_q_on_tth_round_trip():
    pat = Pattern.from_arrays(TTH, Y, wavelength=1.5406, sigma=SIG)
    onq = pat.on_q()
    assert onq.xtype == "q" and onq.wavelength == 1.5406
    np.testing.assert_allclose(onq.intensity, Y)  # per point unchanged
    np.testing.assert_allclose(
        onq.x, 4 * np.pi * np.sin(np.radians(TTH / 2)) / 1.5406
    )
    back = onq.on_tth()
    np.testing.assert_allclose(back.x, TTH, rtol=1e-12)
    np.testing.assert_allclose(back.sigma, SIG)
    np.testing.assert_allclose(pat.tth, TTH)


def test_on_tth_other_wavelength_keeps_q():
    pat = Pattern.from_arrays(TTH, Y, wavelength="CuKa1")
    mo = pat.on_tth("MoKa1")
    assert mo.wavelength == 0.709317 and mo.metadata["source_name"] == "MoKa1"
    np.testing.assert_allclose(mo.q, pat.q, rtol=1e-12)
    assert mo.x[-1] < pat.x[-1]


def test_on_tth_beyond_reach_is_error():
    pat = Pattern.from_arrays([1.0, 5.0, 9.0], [1, 2, 3], xtype="q")
    with pytest.raises(PatternFormatError, match="4π/λ"):
        pat.on_tth(1.5406)
    assert pat.on_tth(0.5).xtype == "tth"


def test_d_pattern_on_q_is_sorted():
    d = np.array([1.0, 2.0, 4.0])
    pat = Pattern.from_arrays(d, [3.0, 2.0, 1.0], xtype="d")
    onq = pat.on_q()
    np.testing.assert_allclose(onq.x, 2 * np.pi / d[::-1])
    np.testing.assert_allclose(onq.intensity, [1.0, 2.0, 3.0])
    with pytest.raises(WavelengthError):
        pat.tth


def test_on_grid_mask_and_values():
    pat = Pattern.from_arrays([1.0, 2.0, 3.0], [10.0, 20.0, 30.0], "q")
    grid = np.array([0.5, 1.0, 1.5, 3.0, 3.5])
    values, mask = pat.on_grid(grid)
    np.testing.assert_array_equal(mask, [False, True, True, True, False])
    np.testing.assert_allclose(values, [0.0, 10.0, 15.0, 30.0, 0.0])
    assert values.dtype == np.float64 and mask.dtype == bool


def test_resample():
    pat = Pattern.from_arrays(TTH, Y, sigma=SIG)
    new = pat.resample([10.5, 11.5, 12.5])
    np.testing.assert_allclose(new.intensity, [105.0, 115.0, 125.0])
    assert new.sigma is not None
    with pytest.raises(PatternFormatError, match="fill="):
        pat.resample([5.0, 10.0, 15.0])
    padded = pat.resample([5.0, 10.0, 15.0], fill=0.0)
    np.testing.assert_allclose(padded.intensity, [0.0, 100.0, 150.0])
    assert padded.sigma is None


def synthetic(seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(5.0, 90.0, 4000)
    t = (x - 47.5) / 42.5
    true = 200.0 + 80.0 * t - 60.0 * t**2 + 30.0 * t**3
    peaks = sum(
        h * np.exp(-0.5 * ((x - c) / 0.15) ** 2)
        for c, h in [
            (20, 900),
            (31.7, 1500),
            (45.5, 700),
            (56.5, 400),
            (66.2, 300),
            (75.3, 250),
        ]
    )
    y = true + peaks + rng.normal(0.0, 3.0, x.size)
    away = np.all(
        [np.abs(x - c) > 1.5 for c in (20, 31.7, 45.5, 56.5, 66.2, 75.3)],
        axis=0,
    )
    return Pattern.from_arrays(x, y, wavelength="CuKa1"), true, away


def test_chebyshev_background_recovers_polynomial():
    pat, true, away = synthetic()
    bg = pat.estimate_background()
    rel = np.abs(bg - true) / true
    assert rel[away].max() < 0.02
    assert rel.max() < 0.05


def test_snip_background_recovers_polynomial():
    pat, true, away = synthetic(1)
    bg = pat.estimate_background("snip", width=1.0)
    rel = np.abs(bg - true) / true
    assert np.median(rel[away]) < 0.02
    assert rel[away].max() < 0.06
    top = np.argmin(np.abs(pat.x - 31.7))  # under the strongest peak
    assert abs(bg[top] - true[top]) / true[top] < 0.05


def test_subtract_background_and_normalize():
    pat, true, away = synthetic(2)
    sub = pat.subtract_background()
    assert sub.metadata["background"] == "chebyshev"
    assert abs(np.mean(sub.intensity[away])) < 1.0
    given = pat.subtract_background(true)
    np.testing.assert_allclose(given.intensity, pat.intensity - true)
    norm = sub.normalized("max")
    assert norm.intensity.max() == pytest.approx(1.0)
    area = pat.normalized("area")
    y = area.intensity
    integral = np.sum(np.diff(area.x) * (y[1:] + y[:-1]) / 2)
    assert integral == pytest.approx(1.0)
    with pytest.raises(PatternFormatError, match="'max' or 'area'"):
        pat.normalized("sum")
    with pytest.raises(PatternFormatError, match="'chebyshev' or 'snip'"):
        pat.estimate_background("spline")


# ------------------------------------------------------- immutability, misc
def test_immutable():
    data = np.array(Y)
    pat = Pattern.from_arrays(TTH, data, sigma=SIG, metadata={"a": 1})
    data[0] = -1.0  # the pattern holds a copy
    assert pat.intensity[0] == Y[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pat.wavelength = 1.0
    for arr in (pat.x, pat.intensity, pat.sigma):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0.0
    with pytest.raises(TypeError):
        pat.metadata["a"] = 2
    assert pat.x.dtype == np.float64


def test_default_metadata_not_shared():
    a = Pattern(TTH, Y)
    b = Pattern(TTH, Y)
    assert dict(a.metadata) == {} and a.metadata is not b.metadata


def test_pickle_round_trip():
    pat = Pattern.from_arrays(TTH, Y, wavelength="CuKa1", sigma=SIG)
    again = pickle.loads(pickle.dumps(pat))
    np.testing.assert_array_equal(again.x, pat.x)
    assert again.metadata == pat.metadata and again.wavelength == CU_KA1


def test_repr():
    pat = Pattern.from_arrays(TTH, Y, wavelength=1.5406, source="a.xy")
    text = repr(pat)
    assert "tth" in text and "npoints=11" in text and "10..20" in text
    assert "1.5406" in text and "a.xy" in text


def test_minimum_points_constant():
    assert MIN_POINTS == 3
    Pattern.from_arrays([1, 2, 3], [1, 2, 3])


def test_xtype_aliases():
    assert Pattern.from_arrays(TTH, Y, xtype="2theta").xtype == "tth"
    assert Pattern.from_arrays([1, 2, 3], Y[:3], xtype="dspace").xtype == "d"


def test_pattern_passthrough(tmp_path):
    pat = Pattern.from_arrays(TTH, Y)
    assert load_pattern(pat) is pat
    assert load_pattern(pat, wavelength="CuKa1").wavelength == CU_KA1


def test_signed_pdf_allowed():
    r = np.linspace(0.5, 5.0, 10)
    pat = Pattern.from_arrays(r, -np.ones(10), xtype="r")
    assert pat.xtype == "r"


# ---------------------------------------------------------- diffpy.utils
def test_diffraction_object_q():
    from diffpy.utils.diffraction_objects import DiffractionObject

    q = np.linspace(1.0, 5.0, 20)
    do = DiffractionObject(
        q, q**2, "q", wavelength=0.71, name="s1", metadata={"T": 300}
    )
    pat = load_pattern(do)
    assert pat.xtype == "q" and pat.wavelength == 0.71
    np.testing.assert_allclose(pat.x, q)
    np.testing.assert_allclose(pat.intensity, q**2)
    assert pat.metadata["T"] == 300 and pat.metadata["name"] == "s1"
    assert pat.metadata["wavelength_from"] == "object"


def test_diffraction_object_tth_with_argument_wavelength():
    from diffpy.utils.diffraction_objects import DiffractionObject

    do = DiffractionObject(TTH, Y, "tth", wavelength=1.5406)
    pat = load_pattern(do, wavelength="CuKa1")
    assert pat.xtype == "tth" and pat.wavelength == CU_KA1
    np.testing.assert_allclose(pat.x, TTH)
    assert pat.metadata["wavelength_from"] == "argument"
