"""Indexing simulated powder patterns with ObjCryst++ (pyobjcryst).

Patterns are realistic: Cu Kα1, 5-90° 2θ in 0.02° steps, pseudo-Voigt
peaks widening with angle (Caglioti), a sloping background and Poisson
noise.  A cell is right when its lengths are within 0.5 % and its volume
within 1 % of the true conventional cell.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from diffpy_mlsolve.errors import (
    MissingBackendError,
    MLSolveError,
    WavelengthError,
)
from diffpy_mlsolve.pattern import Pattern

pytest.importorskip("pyobjcryst")

from diffpy_mlsolve.indexing import (  # noqa: E402
    MIN_PEAKS,
    CellCandidate,
    IndexingError,
    PatternPeaks,
    TooFewPeaksError,
    find_pattern_peaks,
    index_pattern,
    score_spacegroups,
)

LAM = 1.5406
SIM = dict(
    wavelength=LAM,
    tth_range=(5.0, 90.0),
    npoints=4251,
    eta=0.5,
    caglioti=(0.004, -0.002, 0.006),  # FWHM 0.08° at 10°, 0.11° at 90°
    background=[0.08, -0.04, 0.015],
    counts=2e4,
    device="cpu",
)


def _extra_structures():
    """An orthorhombic and a monoclinic structure (textbook-like)."""
    sns = Structure.from_spacegroup(  # SnS, Pnma
        "Pnma",
        Lattice.orthorhombic(11.20, 3.99, 4.33),
        ["Sn", "S"],
        [[0.118, 0.25, 0.121], [0.851, 0.25, 0.479]],
    )
    mono = Structure.from_spacegroup(  # a P2_1/c salt, 8 atoms per cell
        "P2_1/c",
        Lattice.monoclinic(5.21, 6.13, 7.38, 104.5),
        ["Ca", "Cl"],
        [[0.21, 0.13, 0.34], [0.68, 0.41, 0.09]],
    )
    return {"SnS": sns, "P21c": mono}


@pytest.fixture(scope="module")
def patterns():
    """Simulated patterns (one noise draw each), by name."""
    from textbook import textbook

    from diffpy_mlsolve.simulate import simulate_pxrd

    structs = {**textbook(), **_extra_structures()}
    names = ["NaCl", "CsCl", "TiO2", "Al2O3", "SnS", "P21c"]
    pats = simulate_pxrd([structs[n] for n in names], seed=7, **SIM)
    return dict(zip(names, pats))


def _close(cand: CellCandidate, abc, angles=(90, 90, 90), vol=None):
    a, b, c, al, be, ga = cand.lattice
    ok = np.allclose((a, b, c), abc, rtol=0.005) and np.allclose(
        (al, be, ga), angles, atol=0.3
    )
    if vol is None:
        vol = Lattice.from_parameters(*abc, *angles).volume
    return ok and math.isclose(cand.volume, vol, rel_tol=0.01)


# ------------------------------------------------------------------ peaks
def test_peaks_of_nacl_are_its_reflections(patterns):
    pat = patterns["NaCl"]
    peaks = find_pattern_peaks(pat)
    assert isinstance(peaks, PatternPeaks)
    assert np.all(np.diff(peaks.d) < 0)  # largest d first
    assert np.all(peaks.d_sigma > 0) and np.all(peaks.intensity > 0)
    a = 5.64
    hkl2 = np.array([3, 4, 8, 11, 12, 16, 19, 20, 24])  # F: 111, 200, ...
    d_true = a / np.sqrt(hkl2)
    # every peak found is a true reflection, within 0.02° in 2θ
    tth = 2 * np.degrees(np.arcsin(LAM / (2 * peaks.d)))
    tth_true = 2 * np.degrees(np.arcsin(LAM / (2 * d_true)))
    err = np.abs(tth[:, None] - tth_true[None, :]).min(axis=1)
    assert err.max() < 0.02
    # and the strong ones are all found (200, 220, 222, 420, 422 ...)
    assert len(peaks) >= 7
    np.testing.assert_allclose(peaks.position, tth, atol=1e-9)


@pytest.mark.parametrize("xtype", ["q", "d"])
def test_peaks_do_not_depend_on_the_axis(patterns, xtype):
    pat = patterns["Al2O3"]
    on_tth = find_pattern_peaks(pat)
    axis = pat.q if xtype == "q" else pat.d  # no wavelength on Q or d
    other = find_pattern_peaks(
        Pattern.from_arrays(axis, pat.intensity, xtype=xtype)
    )
    assert other.xtype == xtype and len(other) == len(on_tth)
    np.testing.assert_allclose(other.d, on_tth.d, rtol=2e-4)


def test_tth_pattern_without_wavelength_is_refused(patterns):
    pat = patterns["NaCl"]
    bare = Pattern.from_arrays(pat.x, pat.intensity, xtype="tth")
    with pytest.raises(WavelengthError, match="wavelength"):
        find_pattern_peaks(bare)
    with pytest.raises(WavelengthError):
        index_pattern(bare)
    # given here instead, it works
    assert index_pattern(bare, wavelength=LAM, n_best=1)[0].centring == "F"


# --------------------------------------------------------------- indexing
def test_nacl_is_f_cubic_with_the_conventional_cell(patterns):
    best = index_pattern(patterns["NaCl"])[0]
    assert best.crystal_system == "cubic" and best.centring == "F"
    assert best.bravais == "cF"
    assert _close(best, (5.64,) * 3)  # not the 3.99 Å primitive cell
    assert best.n_indexed == best.n_peaks
    assert best.figure_of_merit > 20


def test_cscl_is_p_cubic(patterns):
    best = index_pattern(patterns["CsCl"])[0]
    assert (best.crystal_system, best.centring) == ("cubic", "P")
    assert _close(best, (4.12,) * 3)


def test_rutile_is_p_tetragonal(patterns):
    cands = index_pattern(patterns["TiO2"])
    hits = [c for c in cands[:3] if _close(c, (4.594, 4.594, 2.959))]
    assert hits and hits[0].crystal_system == "tetragonal"
    assert cands[0] is hits[0]  # and in fact the best


def test_corundum_is_r_on_hexagonal_axes(patterns):
    cands = index_pattern(patterns["Al2O3"])
    hexa = (90, 90, 120)
    hits = [c for c in cands[:3] if _close(c, (4.759, 4.759, 12.991), hexa)]
    assert hits
    assert (hits[0].crystal_system, hits[0].centring) == ("trigonal", "R")


def test_orthorhombic_sns(patterns):
    cands = index_pattern(patterns["SnS"])
    abc = sorted((11.20, 3.99, 4.33))
    hits = [
        c
        for c in cands[:3]
        if c.crystal_system == "orthorhombic"
        and np.allclose(sorted(c.lattice[:3]), abc, rtol=0.005)
        and math.isclose(c.volume, 11.20 * 3.99 * 4.33, rel_tol=0.01)
    ]
    assert hits and hits[0].centring == "P"


def test_monoclinic_p21c(patterns):
    cands = index_pattern(patterns["P21c"])
    hits = [
        c for c in cands[:3] if _close(c, (5.21, 6.13, 7.38), (90, 104.5, 90))
    ]
    assert hits and (hits[0].crystal_system, hits[0].centring) == (
        "monoclinic",
        "P",
    )


def test_q_pattern_needs_no_wavelength(patterns):
    pat = patterns["NaCl"]
    on_q = Pattern.from_arrays(pat.q, pat.intensity, xtype="q")
    assert on_q.wavelength is None
    best = index_pattern(on_q, systems=["cubic"])[0]
    assert best.centring == "F" and _close(best, (5.64,) * 3)


def test_a_peak_list_of_d_spacings(patterns):
    a = 4.12  # CsCl: every hkl
    d = a / np.sqrt([1, 2, 3, 4, 5, 6, 8, 9, 10])
    best = index_pattern(peaks=d, systems="cubic")[0]
    assert (best.crystal_system, best.centring) == ("cubic", "P")
    assert _close(best, (a,) * 3)


def test_kalpha2_doublet_is_stripped():
    from textbook import textbook

    from diffpy_mlsolve.simulate import simulate_pxrd

    pat = simulate_pxrd(
        textbook()["TiO2"], seed=3, **{**SIM, "wavelength": "CuKa"}
    )
    single = find_pattern_peaks(pat, kalpha2=None)
    peaks = find_pattern_peaks(pat)  # "auto": the doublet of "CuKa"
    assert len(peaks) < len(single)  # the resolved Kα2 peaks are gone
    best = index_pattern(peaks=peaks)[0]
    assert best.n_indexed == best.n_peaks
    assert _close(best, (4.594, 4.594, 2.959))


# ------------------------------------------------------------------ errors
def test_flat_pattern_has_too_few_peaks():
    rng = np.random.default_rng(0)
    x = np.linspace(5, 90, 4251)
    y = rng.poisson(1000.0, x.size).astype(float)
    pat = Pattern.from_arrays(x, y, wavelength=LAM)
    with pytest.raises(TooFewPeaksError, match=f"at least {MIN_PEAKS}"):
        index_pattern(pat)


def test_three_peaks_are_too_few():
    rng = np.random.default_rng(1)
    x = np.linspace(5, 90, 4251)
    y = 200.0 + sum(
        1e4 * np.exp(-0.5 * ((x - t) / 0.04) ** 2) for t in (20, 35, 61)
    )
    pat = Pattern.from_arrays(x, rng.poisson(y).astype(float), wavelength=LAM)
    assert len(find_pattern_peaks(pat)) == 3
    with pytest.raises(TooFewPeaksError, match="3 peak") as info:
        index_pattern(pat)
    err = info.value
    assert isinstance(err, IndexingError)
    assert isinstance(err, MLSolveError) and isinstance(err, ValueError)


def test_peaks_no_cubic_cell_indexes():
    d = np.array([7.31, 5.02, 4.47, 3.66, 3.11, 2.87, 2.52, 2.31])
    with pytest.raises(IndexingError, match="No cell"):
        index_pattern(peaks=d, systems=["cubic"], max_spurious=0)


def test_unknown_system():
    with pytest.raises(IndexingError, match="crystal system"):
        index_pattern(peaks=np.arange(1, 10.0), systems=["cubical"])


def test_missing_pyobjcryst(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyobjcryst.indexing", None)
    with pytest.raises(MissingBackendError, match="pyobjcryst"):
        index_pattern(peaks=np.arange(1, 10.0))


# ------------------------------------------------------------ space groups
@pytest.mark.slow
def test_corundum_space_group_from_le_bail_fits(patterns):
    pat = patterns["Al2O3"]
    best = index_pattern(pat, n_best=1)[0]
    groups = score_spacegroups(pat, best)
    top = [hm for hm, _ in groups[:2]]
    assert "R -3 c :H" in top  # R-3c and R3c share their absences
    scores = [s for _, s in groups]
    assert scores == sorted(scores)
