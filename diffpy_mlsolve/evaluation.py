"""Density evaluation: the reference paper's SSIM protocol, an honest one,
a wrong-pattern control, random-positions floors and timing.

Reference protocol (Guo et al. 2024, ../shared/reference/crystalnet.md
section 4): 3D SSIM with scikit-image defaults (7^3 window) and
``data_range = gt.max() - gt.min()``, PSNR with the same range, best of
``samples`` latent draws and of the 24 cube rotations (``np.rot90``
compositions), noiseless patterns, full composition.  The cube rotations
are not symmetries of most cells, so this score is optimistic.

Honest protocol: one prediction (the mean latent, z = μ) from a realistic
noisy pattern, aligned only by the cell's own symmetry and origin shifts:
the point operations W of the conventional cell's lattice (its
holohedry: every integer W with W^T G W = G, inversion included) and any
circular integer-voxel origin shift, found by FFT cross-correlation.
These are exactly the changes of a density that leave its powder pattern
unchanged (d-spacings and |F| are kept), so no pattern can decide
between them.  The structure's own space-group operations alone would
add nothing: they map the true density onto itself.  Any origin shift is
a superset of the shifts the Euclidean normaliser allows (slightly
generous), but a non-cubic cell never gets the cube-rotation freedom.

Floors: the right atoms at uniformly random positions in the right cell,
scored with the same freedom (best of ``samples`` draws and 24 rotations
for the reference protocol; one draw, aligned, for the honest one).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "rotations24",
    "ssim_psnr",
    "reference_score",
    "symmetry_operations",
    "lattice_operations",
    "apply_operation",
    "best_shift",
    "honest_score",
    "random_positions_floor",
    "evaluate",
    "format_report",
]

#: the inputs a prediction may read: nothing about the answer
MODEL_INPUTS = ("pattern", "mask", "composition", "comp_mode", "lattice")


def rotations24(volume: np.ndarray) -> list[np.ndarray]:
    """The 24 proper rotations of a cube, as ``np.rot90`` compositions.

    The first is the identity.  As in the reference code, ``np.rot90``
    maps index i to N-1-i, so on a periodic grid each rotation also
    shifts the origin by one voxel.
    """

    def four(v, axes):
        return [np.rot90(v, k, axes) for k in range(4)]

    return (
        four(volume, (1, 2))
        + four(np.rot90(volume, 2, (0, 2)), (1, 2))
        + four(np.rot90(volume, 1, (0, 2)), (0, 1))
        + four(np.rot90(volume, -1, (0, 2)), (0, 1))
        + four(np.rot90(volume, 1, (0, 1)), (0, 2))
        + four(np.rot90(volume, -1, (0, 1)), (0, 2))
    )


def ssim_psnr(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """3D SSIM and PSNR (dB) as the reference: skimage defaults, data range
    of the ground truth.  PSNR is ``inf`` for identical volumes."""
    from skimage.metrics import (
        peak_signal_noise_ratio,
        structural_similarity,
    )

    gt = np.asarray(gt, np.float64)
    pred = np.ascontiguousarray(pred, np.float64)
    rng = float(gt.max() - gt.min())
    ssim = float(structural_similarity(gt, pred, data_range=rng))
    if np.array_equal(gt, pred):
        return ssim, float("inf")
    return ssim, float(peak_signal_noise_ratio(gt, pred, data_range=rng))


def reference_score(gt: np.ndarray, preds) -> dict:
    """Best SSIM over samples × 24 cube rotations (the reference protocol).

    Parameters
    ----------
    gt : ndarray (N, N, N)
    preds : ndarray (S, N, N, N) or (N, N, N)

    Returns
    -------
    dict
        ``ssim``, ``psnr`` (of the best pair), ``sample``, ``rotation``.
    """
    preds = np.asarray(preds)
    if preds.ndim == 3:
        preds = preds[None]
    best = {"ssim": -np.inf}
    for s, pred in enumerate(preds):
        for r, rot in enumerate(rotations24(pred)):
            ssim, psnr = ssim_psnr(gt, rot)
            if ssim > best["ssim"]:
                best = {"ssim": ssim, "psnr": psnr, "sample": s, "rotation": r}
    return best


def symmetry_operations(crystal, symprec: float = 0.1) -> list:
    """(W, w) of each space-group operation of a crystal, in its own
    (conventional) cell: x -> W x + w in fractional coordinates (spglib
    via pymatgen).  Each maps the true density onto itself, so as an
    alignment they add nothing; :func:`evaluate` aligns by
    :func:`lattice_operations`, of which their W are a subset."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from diffpy_mlsolve.structures import to_pymatgen

    sga = SpacegroupAnalyzer(to_pymatgen(crystal), symprec=symprec)
    return [
        (np.asarray(op.rotation_matrix), np.asarray(op.translation_vector))
        for op in sga.get_symmetry_operations(cartesian=False)
    ]


def lattice_operations(lattice, tol: float = 1e-3) -> list[np.ndarray]:
    """Point operations of a cell's lattice (its holohedry).

    Every integer matrix W with entries in {-1, 0, 1} and W^T G W = G
    (G the metric tensor; each entry to ``tol`` × |a_i| |a_j|), identity
    first: 48 for a cubic cell, 24 hexagonal, 16 tetragonal, 8
    orthorhombic, 4 monoclinic, 2 triclinic.  Acting on fractional
    coordinates, x -> W x keeps every length and so the powder pattern.
    """
    a, b, c, al, be, ga = np.asarray(lattice, float)
    cos = np.cos(np.radians([al, be, ga]))
    G = np.array(
        [
            [a * a, a * b * cos[2], a * c * cos[1]],
            [a * b * cos[2], b * b, b * c * cos[0]],
            [a * c * cos[1], b * c * cos[0], c * c],
        ]
    )
    W = np.array(list(itertools.product((-1, 0, 1), repeat=9)))
    W = W.reshape(-1, 3, 3)
    W = W[np.abs(np.rint(np.linalg.det(W))) == 1]
    M = np.einsum("nji,jk,nkl->nil", W, G, W)
    scale = np.sqrt(np.outer(np.diag(G), np.diag(G)))
    keep = (np.abs(M - G) / scale).max(axis=(1, 2)) <= tol
    ops = [w for w in W[keep] if not np.array_equal(w, np.eye(3))]
    return [np.eye(3, dtype=int)] + ops


def apply_operation(volume: np.ndarray, W, w=(0, 0, 0)) -> np.ndarray:
    """``out(x) = volume(W x + w)`` on an N^3 fractional grid, by index
    mapping.  If the operation is a symmetry of the density, out equals
    volume.

    Raises
    ------
    ValueError
        When W or w N is not integral (the op maps grid points off the
        grid).
    """
    n = volume.shape[0]
    W = np.asarray(W, float)
    t = np.asarray(w, float) * n
    if not (np.allclose(W, np.rint(W), atol=1e-6)):
        raise ValueError("W does not map grid points to grid points")
    if not np.allclose(t, np.rint(t), atol=1e-4):
        raise ValueError("w N is not an integer number of voxels")
    idx = np.indices(volume.shape).reshape(3, -1)
    src = (np.rint(W).astype(int) @ idx + np.rint(t).astype(int)[:, None]) % n
    return volume[src[0], src[1], src[2]].reshape(volume.shape)


def best_shift(gt: np.ndarray, vol: np.ndarray) -> tuple[int, int, int]:
    """Circular integer shift s maximising Σ gt(n) vol(n - s), by FFT;
    ``np.roll(vol, s, (0, 1, 2))`` applies it."""
    a = np.fft.rfftn(gt - gt.mean())
    b = np.fft.rfftn(vol - vol.mean())
    corr = np.fft.irfftn(a * np.conj(b), s=gt.shape, axes=(0, 1, 2))
    return tuple(int(i) for i in np.unravel_index(np.argmax(corr), gt.shape))


def honest_score(
    gt: np.ndarray, pred: np.ndarray, ops=None, *, inversion=True
):
    """SSIM of one prediction aligned only by the cell's symmetry.

    Each distinct point operation W of ``ops`` (and -W when
    ``inversion``) is applied to the prediction by index mapping; the
    best circular origin shift against ``gt`` is then found by FFT
    cross-correlation and the SSIM scored; the best over W is returned.
    Translations w are absorbed by the origin search, so they are not
    applied; ops whose W is not integral are skipped.  Any origin shift
    is allowed: a superset of the Euclidean normaliser's shifts (slightly
    generous), but never the cube-rotation freedom of
    :func:`reference_score` for a non-cubic cell.

    Parameters
    ----------
    gt, pred : ndarray (N, N, N)
    ops : list of W or of (W, w), optional
        From :func:`lattice_operations` (what :func:`evaluate` uses) or
        :func:`symmetry_operations`; None: the identity only.
    inversion : bool
        Also allow -W (a powder pattern cannot tell a structure from its
        inverse).

    Returns
    -------
    dict
        ``ssim``, ``psnr``, ``op`` (index into the distinct W) and
        ``shift``.
    """
    gt = np.asarray(gt, np.float64)
    pred = np.asarray(pred, np.float64)
    mats = [np.eye(3)] + [
        np.asarray(op[0] if isinstance(op, tuple) else op, float)
        for op in (ops or [])
    ]
    if inversion:
        mats += [-m for m in mats]
    seen, best = set(), {"ssim": -np.inf}
    for W in mats:
        if not np.allclose(W, np.rint(W), atol=1e-6):
            continue
        key = tuple(np.rint(W).astype(int).ravel())
        if key in seen:
            continue
        seen.add(key)
        vol = apply_operation(pred, W)
        shift = best_shift(gt, vol)
        ssim, psnr = ssim_psnr(gt, np.roll(vol, shift, (0, 1, 2)))
        if ssim > best["ssim"]:
            best = {"ssim": ssim, "psnr": psnr, "op": len(seen) - 1}
            best["shift"] = list(shift)
    return best


def random_positions_floor(
    crystal, grid: int, rng, *, gt=None, ops=None, draws: int = 1
) -> dict:
    """SSIM of the right atoms at uniformly random positions in the cell.

    Returns ``{"reference": best over draws × 24 rotations,
    "honest": the first draw aligned as in honest_score}``.
    """
    from diffpy_mlsolve.simulate import electron_density

    def rho(c):
        d = electron_density(c, grid=grid, standardize=False, device="cpu")
        return np.asarray(d.values, np.float64)

    gt = rho(crystal) if gt is None else np.asarray(gt, np.float64)
    fakes = [
        rho(dataclasses.replace(crystal, frac=rng.random((crystal.natoms, 3))))
        for _ in range(max(1, draws))
    ]
    return {
        "reference": reference_score(gt, np.stack(fakes))["ssim"],
        "honest": honest_score(gt, fakes[0], ops)["ssim"],
    }


def _stats(values, systems=None, **extra) -> dict:
    v = np.asarray([x for x in values if x is not None], float)
    out = {
        "n": int(v.size),
        "ssim_mean": float(v.mean()) if v.size else None,
        "ssim_median": float(np.median(v)) if v.size else None,
        "frac_above_0.9": float(np.mean(v > 0.9)) if v.size else None,
    }
    for name, vals in extra.items():
        f = np.asarray([x for x in vals if x is not None], float)
        f = f[np.isfinite(f)]
        out[name] = float(f.mean()) if f.size else None
    if systems is not None:
        out["by_system"] = {}
        for s in sorted(set(systems)):
            keep = [t == s for t in systems]
            sub = {k: np.compress(keep, v) for k, v in extra.items()}
            out["by_system"][s] = _stats(np.compress(keep, values), **sub)
    return out


def _load(model, spec, device):
    from diffpy_mlsolve.data.examples import ExampleSpec
    from diffpy_mlsolve.data.preprocess import QGrid
    from diffpy_mlsolve.model.checkpoint import load_model

    if isinstance(model, (str, Path)):
        net, saved, _ = load_model(model, device=device)
        return net, spec or saved, str(model)
    if spec is None:
        spec = ExampleSpec(qgrid=QGrid(npoints=model.config.qpoints))
    return model.to(device).eval(), spec, type(model).__name__


def evaluate(
    model,
    structures,
    *,
    systems=None,
    limit=None,
    seed=0,
    grid=50,
    samples=5,
    modes=("full",),
    protocols=("reference", "honest"),
    control=True,
    device="cpu",
    progress=True,
    out=None,
    spec=None,
    batch_size=8,
    tol=1e-3,
    input="pxrd",
) -> dict:
    """Score a density model on a structure table; the report dict.

    Parameters
    ----------
    model : path or CrystalNet
        A checkpoint folder, or a model (with ``spec``; default: the
        default ExampleSpec on the model's Q grid length).
    structures : path
        Anything :func:`open_source` reads (material_id + cif table).
    systems, limit : filters of the source.
    seed : int
        Seeds patterns, latent draws, composition drops and floors.
    grid, samples : int
        Density grid edge; latent draws of the reference protocol (draw 0
        is the mean latent).
    modes : composition modes of the honest ("single") protocol; the
        first is the headline.
    protocols : subset of ("reference", "honest").
    control : bool
        Also score each crystal against the prediction from the next
        crystal's pattern with its own composition and cell (reference
        protocol).
    out : path, optional
        Write the report JSON there atomically.
    spec : ExampleSpec, optional
        Overrides the checkpoint's (the Q grid must be the model's).
    batch_size : int
        Structures per model call.
    tol : float
        Relative metric tolerance of :func:`lattice_operations`.
    input : {"pxrd", "pdf"}
        "pdf": every protocol reads the G(r) of a nanocrystal (diameter,
        Qmax, Qdamp and noise drawn as in training,
        ``condition_mode="nanopdf"``) turned into the network's input as
        the solver turns it, instead of a noiseless (reference) or
        realistic (single) powder pattern.

    Returns
    -------
    dict
        Keys ``n``, ``settings``, ``density`` (``reference``, ``single``,
        ``control``), ``timing``, ``per_structure``; see DESIGN.md.
    """
    from tqdm import tqdm

    from diffpy_mlsolve.data.examples import ExampleBuilder, collate
    from diffpy_mlsolve.data.sources import open_source
    from diffpy_mlsolve.device import resolve_device

    if input not in ("pxrd", "pdf"):
        raise ValueError(f"input must be 'pxrd' or 'pdf', got {input!r}.")
    protocols = {"single" if p == "honest" else p for p in protocols}
    modes = list(modes)
    dev = resolve_device(device)
    was_training = getattr(model, "training", False)
    net, spec, model_name = _load(model, spec, dev)
    records = list(open_source(structures, systems=systems, limit=limit))
    n = len(records)
    control = bool(control) and n > 1
    rep = dataclasses.replace
    pdf = input == "pdf"
    base = rep(
        spec,
        points=0,
        density_grid=grid,
        condition_mode="nanopdf" if pdf else "noiseless",
    )
    ref = ExampleBuilder(base, full_grid=True, composition_mode="full")
    real = rep(base, condition_mode="nanopdf" if pdf else "realistic")
    real = {m: ExampleBuilder(real, composition_mode=m) for m in modes}
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    clock = {"seconds": 0.0, "densities": 0}

    def predict(examples, s):  # reads nothing but MODEL_INPUTS
        batch = collate([{k: e[k] for k in MODEL_INPUTS} for e in examples])
        batch = {k: v.to(dev) for k, v in batch.items()}
        t0 = time.perf_counter()
        pred = net.predict_grid(batch, grid, samples=s, generator=gen)
        pred = pred.cpu().numpy().astype(np.float64)
        clock["seconds"] += time.perf_counter() - t0
        clock["densities"] += pred.shape[0] * pred.shape[1]
        return pred

    def wrong_pattern(e, i):
        sim = ref.simulate(records[(i + 1) % n], [seed, 0, (i + 1) % n])
        return dict(e, pattern=sim["pattern"], mask=sim["mask"])

    rows, started = [], time.perf_counter()
    for lo in tqdm(range(0, n, batch_size), disable=not progress):
        idx = list(range(lo, min(n, lo + batch_size)))
        recs = [records[i] for i in idx]
        exs = [ref(r, [seed, 0, i]) for r, i in zip(recs, idx)]
        gts = [e["grid"].astype(np.float64) for e in exs]
        ops = [lattice_operations(r.crystal.lattice, tol) for r in recs]
        rows_b = [_row(r) for r in recs]
        if "reference" in protocols:
            for row, gt, p in zip(rows_b, gts, predict(exs, samples)):
                sc = reference_score(gt, p)
                row["ssim_reference"] = sc["ssim"]
                row["psnr_reference"] = _finite(sc["psnr"])
        if control:
            wrong = [wrong_pattern(e, i) for e, i in zip(exs, idx)]
            for row, gt, p in zip(rows_b, gts, predict(wrong, samples)):
                row["ssim_control"] = reference_score(gt, p)["ssim"]
        if "single" in protocols:
            sims = [
                real[modes[0]].simulate(r, [seed, 1, i])
                for r, i in zip(recs, idx)
            ]
            for m in modes:
                exm = [
                    real[m].assemble(r, s, [seed, 2, i])
                    for r, s, i in zip(recs, sims, idx)
                ]
                for row, gt, o, p in zip(rows_b, gts, ops, predict(exm, 1)):
                    sc = honest_score(gt, p[0], o)
                    row.setdefault("ssim_single_by_mode", {})[m] = sc["ssim"]
                    row.setdefault("psnr_single_by_mode", {})[m] = _finite(
                        sc["psnr"]
                    )
                    if m == modes[0]:
                        row["ssim_single"] = sc["ssim"]
        for row, r, i, gt, o in zip(rows_b, recs, idx, gts, ops):
            rng = np.random.default_rng([seed, 3, i])
            fl = random_positions_floor(
                r.crystal, grid, rng, gt=gt, ops=o, draws=samples
            )
            row["floor"], row["floor_single"] = fl["reference"], fl["honest"]
            # the all-zero prediction: what SSIM gives for predicting nothing
            row["zero"] = ssim_psnr(gt, np.zeros_like(gt))[0]
        rows += rows_b
    net.train(was_training)
    settings = dict(
        model=model_name,
        structures=str(structures),
        systems=systems,
        limit=limit,
        seed=seed,
        grid=grid,
        samples=samples,
        modes=modes,
        protocols=sorted(protocols),
        input=input,
        device=str(dev),
        lattice_tol=tol,
        **{k: v.format(samples=samples) for k, v in _PROTOCOLS.items()},
    )
    if pdf:
        settings["input_note"] = (
            "every pattern is a nanocrystal G(r) (condition_mode "
            "'nanopdf': diameter, Qmax, Qdamp, noise drawn as in "
            "training) turned into the network's input as the solver "
            "turns it (Qdamp given, diameter fitted); 'noiseless' and "
            "'realistic' above read 'G(r)'"
        )
    report = {
        "n": n,
        "settings": settings,
        "density": _summarise(rows, protocols, modes, control),
        "timing": {
            "densities_per_second": clock["densities"]
            / max(clock["seconds"], 1e-9),
            "model_seconds": clock["seconds"],
            "densities": clock["densities"],
            "seconds_per_structure": (time.perf_counter() - started)
            / max(n, 1),
        },
        "per_structure": rows,
    }
    if out is not None:
        write_report(report, out)
    return report


def write_report(report: dict, out) -> Path:
    """Write a report as JSON to ``out`` atomically (temporary + rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=1, default=_json_default))
    os.replace(tmp, out)
    return out


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


_PROTOCOLS = {
    "reference": "noiseless patterns, full composition, best of {samples} "
    "latent draws (draw 0 = mean latent) x 24 cube rotations (np.rot90)",
    "single": "realistic noisy patterns, one sample: the mean latent (z = "
    "mu); aligned by the point operations of the cell's lattice "
    "(holohedry, W^T G W = G, inversion included: they keep the powder "
    "pattern) and any circular integer-voxel origin shift (FFT "
    "cross-correlation); no other rotation",
    "control": "the next structure's noiseless pattern with this "
    "structure's composition and cell, reference protocol",
    "floor": "right atoms at uniform random positions in the right cell; "
    "reference: best of {samples} draws x 24 rotations; single: one draw, "
    "aligned as the single protocol",
    "zero": "an all-zero prediction scored against the truth (SSIM "
    "rewards predicting nothing on mostly empty cells)",
    "ssim": "skimage structural_similarity, 3D, default 7^3 window, "
    "data_range = gt.max() - gt.min(); PSNR with the same range",
}


def _finite(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _row(r) -> dict:
    return {
        "material_id": r.id,
        "crystal_system": r.crystal_system,
        "spacegroup": int(r.spacegroup),
        "formula": r.formula,
        "natoms": int(r.crystal.natoms),
    }


def _summarise(rows, protocols, modes, control) -> dict:
    systems = [r["crystal_system"] for r in rows]

    def col(key, sub=None):
        vals = [r.get(key) for r in rows]
        return [v if sub is None or v is None else v.get(sub) for v in vals]

    out = {}
    if "reference" in protocols:
        out["reference"] = _stats(
            col("ssim_reference"),
            systems,
            psnr_mean=col("psnr_reference"),
            floor_ssim_mean=col("floor"),
            zero_ssim_mean=col("zero"),
        )
    if "single" in protocols:
        by_mode = {
            m: _stats(
                col("ssim_single_by_mode", m),
                systems,
                psnr_mean=col("psnr_single_by_mode", m),
                floor_ssim_mean=col("floor_single"),
                zero_ssim_mean=col("zero"),
            )
            for m in modes
        }
        out["single"] = dict(by_mode[modes[0]], mode=modes[0])
        out["single"]["by_mode"] = by_mode
    if control:
        out["control"] = _stats(
            col("ssim_control"), floor_ssim_mean=col("floor")
        )
    return out


def format_report(report: dict) -> str:
    """A short human-readable table of a report (CLI, README)."""

    def f(x):
        return f"{'-' if x is None else format(x, '.3f'):>6s}"

    pdf = report["settings"].get("input") == "pdf"
    lines = [
        f"{report['n']} structures, grid {report['settings']['grid']}^3"
        + (", nanocrystal G(r) inputs" if pdf else ""),
        f"{'SSIM':28s} {'n':>5s} {'mean':>6s} {'median':>6s} {'>0.9':>6s}"
        f" {'floor':>6s} {'zeros':>6s}",
    ]

    def add(name, block, systems=False):
        lines.append(
            f"{name:28s} {block['n']:5d} {f(block['ssim_mean'])} "
            f"{f(block.get('ssim_median'))} "
            f"{f(block.get('frac_above_0.9'))} "
            f"{f(block.get('floor_ssim_mean'))} "
            f"{f(block.get('zero_ssim_mean'))}"
        )
        for s, sub in block.get("by_system", {}).items() if systems else ():
            add(f"  {s}", sub)

    dens = report.get("density", {})
    if "reference" in dens:
        add("reference (best of, rot.)", dens["reference"], True)
    if "single" in dens:
        single = dens["single"]
        for m, b in single["by_mode"].items():
            add(f"single, {m} composition", b, m == single["mode"])
    if "control" in dens:
        add("control (another pattern)", dens["control"])
    rate = report.get("timing", {}).get("densities_per_second")
    if rate is not None:
        lines.append(f"{rate:.2f} densities per second")
    return "\n".join(lines)
