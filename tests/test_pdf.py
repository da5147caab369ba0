"""The torch PDF kernel against diffpy.pdffit2, and its own properties."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from diffpy_mlsolve.errors import PhysicsInputError
from diffpy_mlsolve.physics.lattice import lattice_matrix
from diffpy_mlsolve.physics.pdf import (
    pair_distances,
    pdf_of_crystal,
    sphere_envelope,
)
from diffpy_mlsolve.structures import as_crystal, to_diffpy

QMAX, QDAMP, RMAX = 25.0, 0.03, 30.0
# pdffit2 divides by r, so its grid starts just above 0: 0.01 ... 30 Å.
R_GRID = np.arange(1, 3001) * 0.01


def _structure(name):
    from pymatgen.core import Lattice, Structure

    spec = {
        "NaCl": ("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [0, 0.5]),
        "CsCl": ("Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"], [0, 0.5]),
        "CaF2": ("Fm-3m", Lattice.cubic(5.46), ["Ca", "F"], [0, 0.25]),
        "ZnS": ("F-43m", Lattice.cubic(5.41), ["Zn", "S"], [0, 0.25]),
        "SrTiO3": (
            "Pm-3m",
            Lattice.cubic(3.905),
            ["Sr", "Ti", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]],
        ),
        "TiO2": (
            "P4_2/mnm",
            Lattice.tetragonal(4.594, 2.959),
            ["Ti", "O"],
            [[0, 0, 0], [0.305, 0.305, 0]],
        ),
        "Na0.7K0.3Cl": (
            "Fm-3m",
            Lattice.cubic(5.70),
            [{"Na": 0.7, "K": 0.3}, "Cl"],
            [0, 0.5],
        ),
    }[name]
    group, lattice, species, coords = spec
    coords = [[c] * 3 if np.isscalar(c) else c for c in coords]
    return Structure.from_spacegroup(group, lattice, species, coords)


def _crystal(name, biso=0.5):
    return as_crystal(_structure(name), biso=biso)


def _ours(crystal, r=R_GRID, dtype=torch.float64, **kwargs):
    kwargs.setdefault("qmax", QMAX)
    kwargs.setdefault("qdamp", QDAMP)
    g = pdf_of_crystal(
        torch.tensor(crystal.lattice, dtype=dtype),
        torch.tensor(crystal.frac, dtype=dtype),
        crystal.numbers,
        crystal.occupancy,
        crystal.biso,
        torch.tensor(r, dtype=dtype),
        **kwargs,
    )
    return g.detach().cpu().double().numpy()


def _pdffit2(crystal, qmax=QMAX, qdamp=QDAMP, qbroad=0.0, diameter=0.0):
    pdffit2 = pytest.importorskip("diffpy.pdffit2")
    pdffit2.redirect_stdout(open(os.devnull, "w"))
    pf = pdffit2.PdfFit()
    pf.add_structure(to_diffpy(crystal))
    if diameter:
        pf.setvar("spdiameter", diameter)
    pf.alloc("X", qmax, qdamp, R_GRID[0], R_GRID[-1], len(R_GRID))
    if qbroad:
        pf.setvar("qbroad", qbroad)
    pf.calc()
    r = np.asarray(pf.getR())
    np.testing.assert_allclose(r, R_GRID, atol=1e-9)
    return np.asarray(pf.getpdf_fit())


PEARSON = {}


@pytest.fixture(scope="module", autouse=True)
def _report_pearson():
    yield
    if PEARSON:
        print("\nPearson r against pdffit2 over 1.5-30 A:")
        for key, value in PEARSON.items():
            print(f"  {key:28s} {value:.6f}")


@pytest.mark.parametrize(
    "name, settings",
    [
        ("NaCl", {}),
        ("CsCl", {}),
        ("CaF2", {}),
        ("ZnS", {}),
        ("SrTiO3", {}),
        ("TiO2", {}),
        ("Na0.7K0.3Cl", {}),
        ("NaCl", {"qbroad": 0.02}),
        ("TiO2", {"qbroad": 0.03}),
        ("ZnS", {"diameter": 20.0}),
        ("SrTiO3", {"diameter": 15.0}),
    ],
)
def test_matches_pdffit2(name, settings):
    crystal = _crystal(name)
    ref = _pdffit2(crystal, **settings)
    ours = _ours(crystal, **settings)
    inside = R_GRID >= 1.5
    pearson = np.corrcoef(ours[inside], ref[inside])[0, 1]
    PEARSON[f"{name} {settings}"] = pearson
    assert pearson > 0.9999
    # the residue is pdffit2 low-passing G zero-extended below r = 0
    # (this kernel takes the odd extension): largest near r = 1.5 Å
    span = np.ptp(ref[inside])
    assert np.max(np.abs(ours - ref)[inside]) < 0.005 * span


@pytest.mark.parametrize("name", ["NaCl", "TiO2", "Na0.7K0.3Cl"])
def test_unterminated_equals_pdffit2(name):
    """Without the Qmax cutoff the two agree to the structure's digits."""
    crystal = _crystal(name)
    ref = _pdffit2(crystal, qmax=0.0)
    ours = _ours(crystal, qmax=None)
    inside = R_GRID >= 1.0
    assert np.max(np.abs(ours - ref)[inside]) < 1e-3


def test_nanoparticle_envelope():
    crystal = _crystal("NaCl")
    bulk = _ours(crystal)
    particle = _ours(crystal, diameter=20.0)
    assert np.all(particle[R_GRID >= 20.0] == 0.0)
    assert np.any(np.abs(particle[R_GRID < 20.0]) > 1.0)
    gamma = sphere_envelope(torch.tensor(R_GRID), 20.0).numpy()
    low = R_GRID < 5.0
    np.testing.assert_allclose(particle[low], bulk[low] * gamma[low])
    assert gamma[0] == pytest.approx(1 - 1.5 * 0.01 / 20, rel=1e-9)
    r = 10.0 / 20.0
    assert sphere_envelope(torch.tensor([10.0]), 20.0).item() == (
        pytest.approx(1 - 1.5 * r + 0.5 * r**3)
    )


def test_float32_matches_float64():
    crystal = _crystal("TiO2")
    g64 = _ours(crystal)
    g32 = _ours(crystal, dtype=torch.float32)
    assert np.max(np.abs(g64 - g32)) < 1e-4 * np.ptp(g64)


def test_float32_window_at_a_rounding_boundary_stays_on_the_grid():
    """5.095 Å in float32 over a 0.01 Å step rounds to point 510 in
    torch and to 509 in Python floats; the grid is sized the torch way,
    so the last window fits and every pair's Gaussian is summed whole
    (sized the Python way it raised an IndexError)."""
    from diffpy_mlsolve.physics.pdf import _GaussianSum, _padded_size

    step, half = 0.01, 3
    rij = torch.tensor([1.0, 5.095], dtype=torch.float32)
    assert round(float(rij[1]) / step) + 1 == int(torch.round(rij[1] / step))
    with pytest.raises(RuntimeError, match="out of bounds"):
        old = round(float(rij.max()) / step) + 2 * half + 1
        _GaussianSum.apply(rij, torch.ones(2), torch.ones(2), old, step, half)
    size = _padded_size(rij, step, half, n_fine=50)
    sigma = torch.full_like(rij, 0.01)
    amp = torch.tensor([1.0, 2.0], dtype=torch.float32)
    out = _GaussianSum.apply(rij, sigma, amp, size, step, half)
    assert out.shape == (size,)
    # each normalised Gaussian, sampled at step = σ over ±3σ, sums to
    # about its amplitude over the step
    assert abs(float(out.sum()) * step - 3.0) < 0.01


def test_grids_agree():
    """Coarse uniform and irregular grids give the fine grid's values."""
    crystal = _crystal("ZnS")
    fine = _ours(crystal)
    coarse = _ours(crystal, r=R_GRID[4::5])  # 0.05 Å steps
    np.testing.assert_allclose(coarse, fine[4::5], atol=1e-6)
    pick = np.sort(
        np.random.default_rng(1).choice(len(R_GRID), 700, replace=False)
    )
    irregular = _ours(crystal, r=R_GRID[pick])
    assert np.max(np.abs(irregular - fine[pick])) < 1e-3 * np.ptp(fine)
    assert np.array_equal(_ours(crystal, qmax=None), _ours(crystal, qmax=0))


def test_equal_pairs_share_one_gaussian(monkeypatch):
    """Without gradients, pairs at one distance and width are summed into
    one Gaussian (a cubic cell repeats each distance dozens of times); G
    is the per-pair sum to rounding."""
    from diffpy_mlsolve.physics import pdf as kernel

    calls = []
    merge = kernel._merge_equal

    def counted(rij, sigma, amp):
        out = merge(rij, sigma, amp)
        calls.append((rij.shape[0], out[0].shape[0]))
        return out

    monkeypatch.setattr(kernel, "_merge_equal", counted)
    for name, settings in (("CaF2", {}), ("TiO2", {"qbroad": 0.03})):
        crystal = _crystal(name)
        merged = _ours(crystal, **settings)
        lattice = torch.tensor(crystal.lattice, requires_grad=True)
        per_pair = pdf_of_crystal(
            lattice,
            torch.tensor(crystal.frac),
            crystal.numbers,
            crystal.occupancy,
            crystal.biso,
            torch.tensor(R_GRID),
            qmax=QMAX,
            qdamp=QDAMP,
            **settings,
        )
        np.testing.assert_allclose(
            merged, per_pair.detach().numpy(), rtol=0, atol=1e-12
        )
    assert len(calls) == 2  # the differentiable evaluations never merge
    for pairs, gaussians in calls:
        assert gaussians * 10 < pairs


def test_a_cell_without_pairs_in_reach():
    """One atom in a cell longer than the range: no pair, G(r) is the
    density baseline −4π r ρ0 alone, merged or not."""
    r = torch.linspace(1.0, 10.0, 91, dtype=torch.float64)
    lattice = torch.tensor([40.0, 40.0, 40.0, 90.0, 90.0, 90.0])
    args = (torch.zeros(1, 3), [11], [1.0], [0.5], r)
    g = pdf_of_crystal(lattice.double(), *args, qmax=None)
    np.testing.assert_allclose(
        g.numpy(), -4 * math.pi * r.numpy() / 40.0**3, rtol=1e-6
    )
    lattice = lattice.double().requires_grad_(True)
    g_grad = pdf_of_crystal(lattice, *args, qmax=None)
    np.testing.assert_allclose(g_grad.detach().numpy(), g.numpy())


def test_pair_distances_nacl():
    crystal = _crystal("NaCl")
    lattice = torch.tensor(crystal.lattice)
    frac = torch.tensor(crystal.frac)
    pairs = pair_distances(lattice, frac, 4.0)
    first = pairs.r < 3.0
    assert int(first.sum()) == 8 * 6  # six Cl around each Na, and back
    np.testing.assert_allclose(pairs.r[first].numpy(), 2.82, atol=1e-9)
    second = (pairs.r > 3.0) & (pairs.r < 4.0)
    assert int(second.sum()) == 8 * 12
    assert not torch.any((pairs.i == pairs.j) & (pairs.shift == 0).all(1))
    # recomputed from i, j and the shift
    mat = lattice_matrix(lattice)
    d = (frac[pairs.j] - frac[pairs.i] + pairs.shift.double()) @ mat
    np.testing.assert_allclose(d.norm(dim=1).numpy(), pairs.r.numpy())


def test_lattice_matrix_volume_and_lengths():
    lat = torch.tensor([5.1, 6.2, 7.3, 80.0, 95.0, 105.0], dtype=torch.float64)
    mat = lattice_matrix(lat)
    np.testing.assert_allclose(mat.norm(dim=1).numpy(), [5.1, 6.2, 7.3])
    ca, cb, cg = np.cos(np.radians([80.0, 95.0, 105.0]))
    volume = (
        5.1
        * 6.2
        * 7.3
        * math.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg)
    )
    assert float(torch.det(mat)) == pytest.approx(volume)
    cos_alpha = float(mat[1] @ mat[2] / (6.2 * 7.3))
    assert cos_alpha == pytest.approx(ca)


def test_gradients_match_finite_differences():
    """d/da, d/dalpha and d/dx of Σ w·G against central differences."""
    numbers = np.array([26, 8, 8])
    occupancy = np.ones(3)
    biso = np.array([0.4, 0.7, 0.7])
    r = torch.linspace(1.0, 8.0, 351, dtype=torch.float64)
    w = torch.sin(3.1 * r) + 0.3

    def score(lattice, frac):
        g = pdf_of_crystal(
            lattice,
            frac,
            numbers,
            occupancy,
            biso,
            r,
            qmax=20.0,
            qdamp=0.02,
            qbroad=0.01,
        )
        return (g * w).sum()

    lattice = torch.tensor(
        [4.1, 4.6, 3.9, 88.0, 93.0, 101.0], dtype=torch.float64
    )
    frac = torch.tensor(
        [[0.03, 0.11, 0.07], [0.31, 0.62, 0.24], [0.71, 0.37, 0.58]],
        dtype=torch.float64,
    )
    lat_v = lattice.clone().requires_grad_(True)
    frac_v = frac.clone().requires_grad_(True)
    score(lat_v, frac_v).backward()
    eps = 1e-5
    checks = [
        ("a", lat_v.grad[0], lambda t: (lattice + t * _unit(6, 0), frac)),
        ("alpha", lat_v.grad[3], lambda t: (lattice + t * _unit(6, 3), frac)),
        ("x", frac_v.grad[1, 0], lambda t: (lattice, frac + t * _unit3(1, 0))),
        ("z", frac_v.grad[2, 2], lambda t: (lattice, frac + t * _unit3(2, 2))),
    ]
    with torch.no_grad():
        for name, analytic, shifted in checks:
            numeric = (score(*shifted(eps)) - score(*shifted(-eps))) / (
                2 * eps
            )
            assert abs(float(numeric)) > 1e-2, name
            assert float(analytic) == pytest.approx(
                float(numeric), rel=1e-5, abs=1e-6
            ), name


def _unit(n, k):
    e = torch.zeros(n, dtype=torch.float64)
    e[k] = 1.0
    return e


def _unit3(i, k):
    e = torch.zeros(3, 3, dtype=torch.float64)
    e[i, k] = 1.0
    return e


def test_gradcheck_small_cell():
    r = torch.linspace(1.5, 5.0, 60, dtype=torch.float64)

    def g_of(a, x):
        lattice = torch.cat([a, a.new_tensor([3.8, 4.2, 90.0, 90.0, 90.0])])
        frac = torch.cat([x, x.new_tensor([[0.0, 0.0, 0.0]])])
        return pdf_of_crystal(
            lattice, frac, [14, 6], [1.0, 1.0], [0.5, 0.5], r, qmax=18.0
        )

    a = torch.tensor([3.5], dtype=torch.float64, requires_grad=True)
    x = torch.tensor(
        [[0.37, 0.21, 0.44]], dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(g_of, (a, x), eps=1e-6, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    crystal = _crystal("ZnS")
    args = [
        torch.tensor(crystal.lattice),
        torch.tensor(crystal.frac),
        crystal.numbers,
        crystal.occupancy,
        crystal.biso,
        torch.tensor(R_GRID),
    ]
    cpu = pdf_of_crystal(*args, qmax=QMAX, qdamp=QDAMP)
    gpu = pdf_of_crystal(
        *[a.cuda() if torch.is_tensor(a) else a for a in args],
        qmax=QMAX,
        qdamp=QDAMP,
    )
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-8)


def _nacl_args():
    c = _crystal("NaCl")
    return dict(
        lattice=torch.tensor(c.lattice),
        frac=torch.tensor(c.frac),
        numbers=c.numbers,
        occupancy=c.occupancy,
        biso=c.biso,
        r=torch.tensor(R_GRID[:500]),
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"r": torch.tensor([1.0, 3.0, 2.0])}, "strictly increasing"),
        ({"r": torch.tensor([1.0, 1.0, 2.0])}, "strictly increasing"),
        ({"r": torch.tensor([-1.0, 1.0, 2.0])}, "must not go below 0"),
        ({"r": torch.tensor([2.0])}, "at least two points"),
        ({"qmax": -5.0}, "qmax must be positive"),
        ({"qdamp": -0.01}, "qdamp must be >= 0"),
        ({"qbroad": -0.01}, "qbroad must be >= 0"),
        ({"diameter": 0.0}, "diameter must be positive"),
        ({"diameter": -20.0}, "diameter must be positive"),
        (
            {
                "frac": torch.zeros(0, 3, dtype=torch.float64),
                "numbers": [],
                "occupancy": [],
                "biso": [],
            },
            "has no atoms",
        ),
        ({"numbers": [11, 17]}, r"numbers must have one value per site"),
        ({"lattice": torch.tensor([5.0, 5.0, 5.0])}, "six numbers"),
        (
            {"lattice": torch.tensor([5.0, 5.0, -5.0, 90, 90, 90])},
            "positive lengths",
        ),
        (
            {"lattice": torch.tensor([5.0, 5.0, 5.0, 90, 90, 180])},
            "has no volume",
        ),
    ],
)
def test_bad_input_raises(change, message):
    kwargs = {**_nacl_args(), "qmax": QMAX, **change}
    with pytest.raises(PhysicsInputError, match=message):
        pdf_of_crystal(**kwargs)


@pytest.mark.parametrize("rmax", [0.0, -3.0])
def test_pair_distances_rejects_rmax(rmax):
    c = _crystal("NaCl")
    with pytest.raises(PhysicsInputError, match="rmax must be positive"):
        pair_distances(torch.tensor(c.lattice), torch.tensor(c.frac), rmax)


def test_sphere_envelope_rejects_diameter():
    with pytest.raises(PhysicsInputError, match="diameter must be positive"):
        sphere_envelope(torch.linspace(0, 5, 6), 0.0)


def test_matches_srreal_if_installed():
    srreal = pytest.importorskip("diffpy.srreal.pdfcalculator")
    crystal = _crystal("ZnS")
    calc = srreal.PDFCalculator(
        qmax=QMAX, qdamp=QDAMP, rmin=0.0, rmax=RMAX + 0.005, rstep=0.01
    )
    r, g = calc(to_diffpy(crystal))
    ours = _ours(crystal, r=np.asarray(r))
    inside = np.asarray(r) >= 1.5
    assert np.corrcoef(ours[inside], np.asarray(g)[inside])[0, 1] > 0.999
