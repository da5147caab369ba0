"""Powder patterns against pymatgen's XRDCalculator, and the instrument
effects each against its textbook formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pymatgen.analysis.diffraction.xrd import XRDCalculator
from textbook import real_structures

import diffpy_mlsolve as ms
from diffpy_mlsolve.errors import (
    PhysicsInputError,
    StructureError,
    WavelengthError,
)
from diffpy_mlsolve.physics.lattice import inv_d_spacing, reciprocal_metric
from diffpy_mlsolve.physics.reflections import (
    reflections_within,
    structure_factors,
)
from diffpy_mlsolve.simulate import crystal_tensors
from diffpy_mlsolve.structures import as_crystal

CU_KA1 = 1.540593
FWHM = 0.1


def _pymatgen_broadened(structure, x, fwhm=FWHM):
    calc = XRDCalculator(wavelength=CU_KA1)
    pat = calc.get_pattern(
        structure, scaled=False, two_theta_range=(x[0], x[-1])
    )
    sig = fwhm / (2 * math.sqrt(2 * math.log(2)))
    y = np.exp(-((x[None, :] - pat.x[:, None]) ** 2) / (2 * sig**2))
    return pat, (pat.y[:, None] * y).sum(0)


@pytest.fixture(scope="module")
def oracle_set(textbook_structures):
    """30 real structures when ../shared is there, plus the textbook ones."""
    return real_structures(30) + list(textbook_structures.items())


def test_against_pymatgen(oracle_set):
    assert len(oracle_set) >= 9
    names = [name for name, _ in oracle_set]
    ours = ms.simulate_pxrd(
        [s for _, s in oracle_set],
        wavelength="CuKa1",
        tth_range=(5, 90),
        npoints=4251,
        fwhm=FWHM,
        biso=0.0,  # pymatgen applies no Debye-Waller factor
        dtype=torch.float64,
    )
    worst = []
    for name, (_, s), pat in zip(names, oracle_set, ours):
        ref_sticks, ref = _pymatgen_broadened(s, pat.x)
        r = np.corrcoef(pat.intensity, ref)[0, 1]
        worst.append((r, name))
        assert r >= 0.995, f"{name}: r = {r:.5f}"
        # every visible pymatgen peak has one of ours within 0.01 degrees
        ours_tth = _reflection_angles(s, pat.x[-1])
        strong = ref_sticks.x[ref_sticks.y > 0.01 * ref_sticks.y.max()]
        gap = np.abs(strong[:, None] - ours_tth[None, :]).min(1)
        assert gap.max() < 0.01, f"{name}: peak off by {gap.max():.4f} deg"
    assert min(worst)[0] > 0.999  # measured: 0.99985 on 40 MP structures


def _reflection_angles(structure, tth_max):
    crystal = as_crystal(structure, standardize=False)
    batch = crystal_tensors([crystal], "cpu", torch.float64)
    dmax = 2 * math.sin(math.radians(tth_max) / 2) / CU_KA1
    _, dstar, _ = reflections_within(batch["cell"], dmax)
    return np.degrees(2 * np.arcsin(CU_KA1 * dstar[0].numpy() / 2))


def _peak(pat, near, half=1.0):
    sel = np.abs(pat.x - near) < half
    x, y = pat.x[sel], pat.intensity[sel]
    return x, y


def _fwhm(x, y):
    above = x[y >= y.max() / 2]
    return above[-1] - above[0]


def test_every_structure_kind_is_accepted(textbook_structures, tmp_path):
    """pymatgen, diffpy (a list subclass!), a CIF path, and lists of them."""
    from diffpy_mlsolve.structures import to_diffpy

    pmg = textbook_structures["CsCl"]
    crystal = as_crystal(pmg)
    cif = tmp_path / "CsCl.cif"
    pmg.to(filename=str(cif))
    kinds = [pmg, to_diffpy(crystal), str(cif), cif, crystal]
    pats = [ms.simulate_pxrd(k, "CuKa1", npoints=500) for k in kinds]
    for p in pats:
        assert isinstance(p, ms.Pattern)
        np.testing.assert_allclose(p.intensity, pats[0].intensity, atol=1e-5)
    many = ms.simulate_pxrd(kinds, "CuKa1", npoints=500)
    assert isinstance(many, list) and len(many) == len(kinds)


def test_kalpha2_doublet_separation(textbook_structures):
    nacl = textbook_structures["NaCl"]
    pat = ms.simulate_pxrd(
        nacl, "CuKa", tth_range=(117, 122), npoints=5001, fwhm=0.02
    )
    # NaCl 620 (d = 5.64 / sqrt(40)) near 119.5 degrees
    d = 5.64 / math.sqrt(40)
    t1 = 2 * math.degrees(math.asin(CU_KA1 / (2 * d)))
    t2 = 2 * math.degrees(math.asin(1.544427 / (2 * d)))
    x, y = _peak(pat, (t1 + t2) / 2, 0.6)
    i1 = y[np.argmin(np.abs(x - t1))]
    i2 = y[np.argmin(np.abs(x - t2))]
    assert i2 / i1 == pytest.approx(0.5, rel=0.05)
    assert abs(x[np.argmax(y)] - t1) < 0.005


def test_scherrer_width(textbook_structures):
    size = 100.0  # Å
    pat = ms.simulate_pxrd(
        textbook_structures["NaCl"],
        "CuKa1",
        tth_range=(25, 40),
        npoints=6001,
        fwhm=1e-3,
        crystallite_size=size,
    )
    t = 2 * math.degrees(math.asin(CU_KA1 / (2 * 2.82)))  # 200
    expected = math.degrees(
        0.9 * CU_KA1 / (size * math.cos(math.radians(t / 2)))
    )
    x, y = _peak(pat, t, 3 * expected)
    assert _fwhm(x, y) == pytest.approx(expected, rel=0.03)


def test_caglioti_strain_and_zero_shift(textbook_structures):
    nacl = textbook_structures["NaCl"]
    t = 2 * math.degrees(math.asin(CU_KA1 / (2 * 2.82)))
    base = dict(tth_range=(30, 34), npoints=4001)
    cag = ms.simulate_pxrd(nacl, "CuKa1", caglioti=(0.0, 0.0, 0.04), **base)
    x, y = _peak(cag, t, 0.8)
    assert _fwhm(x, y) == pytest.approx(0.2, rel=0.03)
    strain = 2e-3
    st = ms.simulate_pxrd(nacl, "CuKa1", fwhm=1e-3, strain=strain, **base)
    x, y = _peak(st, t, 0.8)
    expect = math.degrees(4 * strain * math.tan(math.radians(t / 2)))
    assert _fwhm(x, y) == pytest.approx(expect, rel=0.03)
    shifted = ms.simulate_pxrd(nacl, "CuKa1", zero_shift=0.3, **base)
    plain = ms.simulate_pxrd(nacl, "CuKa1", **base)
    moved = shifted.x[np.argmax(shifted.intensity)]
    assert moved - plain.x[np.argmax(plain.intensity)] == pytest.approx(
        0.3, abs=2e-3
    )


def test_pseudo_voigt_eta_and_tails(textbook_structures):
    nacl = textbook_structures["NaCl"]
    kw = dict(tth_range=(28, 36), npoints=8001, fwhm=0.1)
    gauss = ms.simulate_pxrd(nacl, "CuKa1", eta=0.0, **kw)
    lor = ms.simulate_pxrd(nacl, "CuKa1", eta=1.0, **kw)
    t = 2 * math.degrees(math.asin(CU_KA1 / (2 * 2.82)))
    for pat in (gauss, lor):
        x, y = _peak(pat, t, 0.4)
        assert _fwhm(x, y) == pytest.approx(0.1, rel=0.03)
    # one FWHM from the centre a Lorentzian keeps 1/5, a Gaussian 1/16
    i0 = np.argmin(np.abs(gauss.x - t))
    off = np.argmin(np.abs(gauss.x - (t + 0.1)))
    assert lor.intensity[off] / lor.intensity[i0] == pytest.approx(
        0.2, abs=0.01
    )
    assert gauss.intensity[off] / gauss.intensity[i0] == pytest.approx(
        1 / 16, abs=0.005
    )


def test_preferred_orientation_favours_the_direction(textbook_structures):
    bts = textbook_structures["Bi2Se3"]
    kw = dict(tth_range=(5, 60), npoints=5501, biso=0.5)
    plain = ms.simulate_pxrd(bts, "CuKa1", **kw)
    plates = ms.simulate_pxrd(
        bts, "CuKa1", preferred_orientation=((0, 0, 1), 0.7), **kw
    )
    # 006 (d = c/6) against 015-type reflections: platelets along c
    # (r < 1) raise the 00l lines relative to the others
    t006 = 2 * math.degrees(math.asin(CU_KA1 / (2 * 28.636 / 6)))
    i = np.argmin(np.abs(plain.x - t006))
    assert plates.intensity[i] > 1.5 * plain.intensity[i]


def test_monochromator_polarisation(textbook_structures):
    nacl = textbook_structures["NaCl"]
    kw = dict(tth_range=(20, 120), npoints=10001)
    plain = ms.simulate_pxrd(nacl, "CuKa1", **kw)
    mono = ms.simulate_pxrd(nacl, "CuKa1", monochromator_tth=26.6, **kw)
    # the 220 to 200 ratio follows (1 + cos^2 2θ cos^2 2θm) / (1 + cos^2 2θ)
    ratios = []
    for hkl2 in (4, 8):
        t = 2 * math.asin(CU_KA1 * math.sqrt(hkl2) / (2 * 5.64))
        i = np.argmin(np.abs(plain.x - math.degrees(t)))
        ratios.append((mono.intensity[i] / plain.intensity[i], t))
    cm2 = math.cos(math.radians(26.6)) ** 2

    def pol(t, c):
        return (1 + math.cos(t) ** 2 * c) / (1 + c)

    expect = (pol(ratios[1][1], cm2) / pol(ratios[1][1], 1)) / (
        pol(ratios[0][1], cm2) / pol(ratios[0][1], 1)
    )
    assert ratios[1][0] / ratios[0][0] == pytest.approx(expect, rel=1e-3)


def test_poisson_noise_and_background(textbook_structures):
    nacl = textbook_structures["NaCl"]
    kw = dict(tth_range=(10, 80), npoints=3501, background=[0.2, 0.05])
    a = ms.simulate_pxrd(nacl, "CuKa1", counts=1e4, seed=3, **kw)
    b = ms.simulate_pxrd(nacl, "CuKa1", counts=1e4, seed=3, **kw)
    c = ms.simulate_pxrd(nacl, "CuKa1", counts=1e4, seed=4, **kw)
    clean = ms.simulate_pxrd(nacl, "CuKa1", **kw)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    assert not np.array_equal(a.intensity, c.intensity)
    assert np.all(a.intensity == np.round(a.intensity))
    expect = clean.intensity / clean.intensity.max() * 1e4
    resid = (a.intensity - expect) / np.sqrt(np.maximum(expect, 1))
    assert abs(resid.mean()) < 0.1 and resid.std() == pytest.approx(1, abs=0.1)
    # the background is the Chebyshev series: 0.2 + 0.05 t, t in [-1, 1]
    assert clean.intensity[0] == pytest.approx(0.15, abs=2e-3)


def test_float32_matches_float64(textbook_structures):
    s = textbook_structures["Al2O3"]
    p32 = ms.simulate_pxrd(s, "CuKa", dtype=torch.float32)
    p64 = ms.simulate_pxrd(s, "CuKa", dtype=torch.float64)
    # float32 places a 2θ near 100 deg to ~1e-5 deg: on a 0.1 deg peak
    # that is a few 1e-4 of the maximum, the precision float32 can give
    assert np.abs(p32.intensity - p64.intensity).max() < 5e-4


def test_gradients_flow_to_cell_and_coordinates(textbook_structures):
    crystal = as_crystal(textbook_structures["TiO2"], biso=0.5)
    batch = crystal_tensors([crystal], "cpu", torch.float64)
    hkl, _, _ = reflections_within(batch["cell"], 0.6)
    frac0 = batch["frac"].clone()

    def intensity(cell, frac):
        dstar = inv_d_spacing(hkl, reciprocal_metric(cell))
        f = structure_factors(
            hkl,
            dstar,
            frac,
            batch["type_coeffs"],
            batch["type_biso"],
            batch["type_index"],
            batch["weight"],
        )
        return (f.real**2 + f.imag**2).sum()

    cell = batch["cell"].clone().requires_grad_(True)
    frac = frac0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda c: intensity(c, frac0), (cell,), eps=1e-6, atol=1e-4
    )
    assert torch.autograd.gradcheck(
        lambda x: intensity(batch["cell"], x), (frac,), eps=1e-6, atol=1e-4
    )
    grad = torch.autograd.grad(intensity(cell, frac0), cell)[0]
    assert grad[0, 0].abs() > 0  # the pattern depends on a


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(wavelength=0.0), WavelengthError, "positive wavelength"),
        (dict(wavelength=None), WavelengthError, "needs its wavelength"),
        (dict(wavelength="CuKb9"), WavelengthError, "Unknown X-ray source"),
        (dict(tth_range=(5, 200)), PhysicsInputError, "<= 180"),
        (dict(tth_range=(50, 10)), PhysicsInputError, "start < end"),
        (dict(npoints=1), PhysicsInputError, "npoints"),
    ],
)
def test_bad_settings(textbook_structures, kwargs, error, match):
    args = dict(wavelength="CuKa1")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ms.simulate_pxrd(textbook_structures["NaCl"], **args)


def test_bad_structures():
    from pymatgen.core import Lattice, Structure

    es = Structure(Lattice.cubic(5), ["Es"], [[0, 0, 0]])
    with pytest.raises(PhysicsInputError, match="No X-ray form factor"):
        ms.simulate_pxrd(es, "CuKa1")
    nan = Structure(Lattice.cubic(5), ["Na"], [[0, 0, 0]])
    nan.replace(0, "Na", [float("nan"), 0, 0])
    with pytest.raises(StructureError, match="NaN"):
        ms.simulate_pxrd(nan, "CuKa1")
    with pytest.raises(StructureError, match="no atoms"):
        ms.simulate_pxrd(Structure(Lattice.cubic(5), [], []), "CuKa1")
    with pytest.raises(StructureError, match="No such structure file"):
        ms.simulate_pxrd("no/such/file.cif", "CuKa1")
    flat = ms.CrystalArrays(
        np.array([5.0, 5, 5, 90, 90, 90]),
        np.zeros((1, 3)),
        np.array([11]),
        np.ones(1),
        np.ones(1),
    )
    with pytest.raises(StructureError, match="zero or negative volume"):
        ms.CrystalArrays(
            np.array([5.0, 5, 5, 90, 90, 180]),
            flat.frac,
            flat.numbers,
            flat.occupancy,
            flat.biso,
        )
