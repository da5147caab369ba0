"""The ``mlsolve`` command as a user runs it: real subprocesses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import diffpy_mlsolve as ms


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "diffpy_mlsolve.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def nacl_cif(tmp_path_factory, textbook_structures):
    path = tmp_path_factory.mktemp("cif") / "NaCl.cif"
    textbook_structures["NaCl"].to(filename=str(path))
    return path


def test_version_and_plugins():
    done = run("--version")
    assert done.returncode == 0
    assert ms.__version__ in done.stdout
    done = run("plugins")
    assert done.returncode == 0, done.stderr
    for name in ("crystalnet", "rietveld", "pdf"):
        assert name in done.stdout
    assert "diffpy-mlsolve" in done.stdout or "diffpy_mlsolve" in done.stdout


def test_simulate_round_trip(nacl_cif, tmp_path):
    out = tmp_path / "nacl.xy"
    done = run(
        "simulate",
        nacl_cif,
        "--wavelength",
        "CuKa1",
        "--out",
        out,
        "--tth-range",
        "20,60",
        "--npoints",
        "2001",
    )
    assert done.returncode == 0, done.stderr
    pat = ms.load_pattern(out)
    assert pat.xtype == "tth"
    assert pat.wavelength == pytest.approx(1.540593)
    # the strongest NaCl line is 200 at d = 2.82 Å
    expect = 2 * np.degrees(np.arcsin(1.540593 / (2 * 2.82)))
    assert pat.x[np.argmax(pat.intensity)] == pytest.approx(expect, abs=0.05)
    gr = tmp_path / "nacl.gr"
    done = run(
        "simulate", nacl_cif, "--kind", "pdf", "--out", gr, "--diameter", "20"
    )
    assert done.returncode == 0, done.stderr
    pdf = ms.load_pattern(gr)
    assert pdf.xtype == "r"
    assert np.all(pdf.intensity[pdf.x > 20.01] == 0)


def test_never_overwrites_without_force(nacl_cif, tmp_path):
    out = tmp_path / "keep.xy"
    out.write_text("precious\n")
    done = run("simulate", nacl_cif, "--wavelength", "CuKa1", "--out", out)
    assert done.returncode == 1
    assert "--force" in done.stderr
    assert out.read_text() == "precious\n"
    done = run(
        "simulate", nacl_cif, "--wavelength", "CuKa1", "--out", out, "--force"
    )
    assert done.returncode == 0
    assert out.read_text() != "precious\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (
                "simulate",
                "missing.cif",
                "--wavelength",
                "CuKa1",
                "--out",
                "x.xy",
            ),
            "No such structure file",
        ),
        (("simulate", "{cif}", "--out", "x.xy"), "needs its wavelength"),
        (
            ("simulate", "{cif}", "--wavelength", "-1", "--out", "x.xy"),
            "positive wavelength",
        ),
        (
            (
                "solve",
                "missing.xy",
                "--composition",
                "NaCl",
                "--cell",
                "5.64,5.64,5.64,90,90,90",
            ),
            "missing.xy",
        ),
        (
            (
                "evaluate",
                "--structures",
                "{cif}",
                "--density",
                "--out",
                "x.xy",
            ),
            "--density selects the density metrics of --input pdf",
        ),
    ],
)
def test_bad_input_is_one_clear_line(nacl_cif, tmp_path, args, message):
    args = [a.format(cif=nacl_cif) for a in args]
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.xy").exists()


def test_bad_cell_is_a_usage_error(tmp_path):
    done = run("solve", "p.xy", "--composition", "NaCl", "--cell", "1,2,3")
    assert done.returncode == 2
    assert "six numbers" in done.stderr


def test_solve_refuses_existing_out(tmp_path):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "x").write_text("old")
    done = run(
        "solve",
        "p.xy",
        "--composition",
        "NaCl",
        "--cell",
        "5.64,5.64,5.64,90,90,90",
        "--out",
        tmp_path / "res",
    )
    assert done.returncode == 1
    assert "--force" in done.stderr


def test_train_and_evaluate_on_a_tiny_table(tmp_path, textbook_structures):
    """`mlsolve train` then `mlsolve evaluate` on a table written here."""
    import gzip
    import json

    rows = ["material_id,cif"]
    for name, s in textbook_structures.items():
        cif = s.to(fmt="cif").replace('"', '""')
        rows.append(f'tb-{name},"{cif}"')
    table = tmp_path / "tiny.csv.gz"
    with gzip.open(table, "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    config = {
        "train": str(table),
        "val": str(table),
        "val_limit": 2,
        "batch_size": 4,
        "steps": 3,
        "val_every": 3,
        "warmup": 1,
        "workers": 0,
        "spec": {"density_grid": 12, "points": 32},
        "model": {
            "width": 32,
            "blocks": 1,
            "latent": 16,
            "conv_channels": 4,
            "conv_layers": 3,
            "fourier_extra": 8,
        },
    }
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(config))
    run_dir = tmp_path / "run"
    done = run("train", "--config", cfg, "--out", run_dir, "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "best" / "weights.pt").is_file()
    again = run("train", "--config", cfg, "--out", run_dir)
    assert again.returncode == 1 and "--resume" in again.stderr
    report = tmp_path / "report.json"
    done = run(
        "evaluate",
        "--structures",
        table,
        "--model",
        run_dir / "best",
        "--limit",
        "3",
        "--grid",
        "12",
        "--samples",
        "2",
        "--atoms",
        "--centring",
        "auto",
        "--out",
        report,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["n"] == 3
    assert -1 <= data["density"]["reference"]["ssim_mean"] <= 1
    assert "single" in data["density"] and "control" in data["density"]
    atoms = data["atoms"]
    # --samples 2: the block names its top-k as top-2, not top-5
    assert atoms["top_k"] == 2 and "match_top5" not in atoms
    # --centring auto reaches the solver: each row names what it found
    assert atoms["centring"] == "auto"
    solved = [r for r in data["per_structure"] if "error" not in r]
    assert solved
    valid = (None, "F", "I", "C", "A", "B")  # no R: cubic cells
    assert all(r["centring"] in valid for r in solved)
    # the site search is on by default and its figure reaches the rows
    assert atoms["site_search"] is True
    assert all(r["profile_rwp"] > 0 for r in solved if "rwp" in r)
    for key in ("match_top1", "match_top2", "control_match_top1"):
        assert 0 <= atoms[key] <= 1
    assert atoms["seconds_per_structure"] > 0
    assert 0 <= atoms["right_formula_units"] <= 1
    for r in solved:  # Z found against the truth's, and the time taken
        assert r["seconds"] > 0
        if "rwp" in r:
            assert r["formula_units_true"] >= 1
            assert r["right_formula_units"] == (
                r["formula_units_found"] == r["formula_units_true"]
            )
    assert sum(b["n"] for b in atoms["by_system"].values()) == 3
    assert atoms["settings"]["seed"] == 0 and atoms["settings"]["limit"] == 3
    assert "torch" in atoms["settings"]["versions"]
    row = data["per_structure"][0]
    assert "ssim_reference" in row and "match_top1" in row
    assert "top1" in done.stdout and "top2" in done.stdout


def test_density_of_gr_inputs_takes_the_shipped_gr_model(tmp_path):
    """`evaluate --input pdf --density` without --model scores the G(r)
    checkpoint the solver would read the G(r) with."""
    import gzip
    import json

    from textbook import textbook

    from diffpy_mlsolve.model.predict import default_model

    cif = textbook()["NaCl"].to(fmt="cif").replace('"', '""')
    table = tmp_path / "one.csv.gz"
    with gzip.open(table, "wt") as fh:
        fh.write(f'material_id,cif\ntb-NaCl,"{cif}"\n')
    report = tmp_path / "report.json"
    done = run(
        "evaluate",
        "--structures",
        table,
        "--input",
        "pdf",
        "--density",
        "--grid",
        "12",
        "--samples",
        "1",
        "--out",
        report,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(report.read_text())
    model = str(default_model("r"))
    assert data["settings"]["model"] == model
    assert model != str(default_model("tth"))
    assert data["settings"]["input"] == "pdf"
    assert "atoms" not in data  # --density: the density metrics only


def _two_structure_table(path):
    """A csv.gz of CsCl and NaCl (textbook structures)."""
    import gzip

    from textbook import textbook

    with gzip.open(path, "wt") as fh:
        fh.write("material_id,cif\n")
        for name in ("CsCl", "NaCl"):
            cif = textbook()[name].to(fmt="cif").replace('"', '""')
            fh.write(f'tb-{name},"{cif}"\n')


def test_a_long_evaluation_keeps_its_solves_as_it_goes(tmp_path, monkeypatch):
    """`evaluate --atoms-only` writes its report after every solve (marked
    partial), so a run stopped midway keeps what it measured; the final
    report is the whole one, unmarked."""
    import json

    from diffpy_mlsolve import cli, evaluation

    _two_structure_table(tmp_path / "two.csv.gz")
    written, real = [], evaluation.write_report

    def kept(report, out):  # the real write, and a copy of what it wrote
        written.append(json.loads(json.dumps(report, default=str)))
        return real(report, out)

    monkeypatch.setattr(evaluation, "write_report", kept)
    out = tmp_path / "atoms.json"
    code = cli.main(
        [
            "evaluate",
            "--structures",
            str(tmp_path / "two.csv.gz"),
            "--atoms-only",
            "--no-control",
            "--samples",
            "1",
            "--phasing",
            "none",
            "--no-site-search",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert [w.get("partial") for w in written] == [
        "1 of 2 solves",
        "2 of 2 solves",
        None,
    ]
    first = written[0]["per_structure"]
    assert [r["material_id"] for r in first] == ["tb-CsCl"]
    assert "match_top1" in first[0] and first[0]["seconds"] > 0
    final = json.loads(out.read_text())
    assert "partial" not in final and final["n"] == 2
    assert final["per_structure"][0] == first[0]


def test_an_evaluation_split_by_skip_keeps_each_structures_data(
    tmp_path, monkeypatch, capsys
):
    """`evaluate --skip 1` solves only the second structure, from the
    same data it has in the whole run (its measurement conditions are
    seeded by its place in the table, not by its place in the run)."""
    import json

    from diffpy_mlsolve import cli, evaluation_atoms

    _two_structure_table(tmp_path / "two.csv.gz")
    seeded, real = [], evaluation_atoms._pattern

    def spy(record, seed, index):  # the real simulation, its seed noted
        seeded.append((record.id, seed, index))
        return real(record, seed, index)

    monkeypatch.setattr(evaluation_atoms, "_pattern", spy)
    out = tmp_path / "atoms.json"
    args = ["evaluate", "--structures", str(tmp_path / "two.csv.gz")]
    args += ["--atoms-only", "--no-control", "--samples", "1"]
    args += ["--phasing", "none", "--no-site-search", "--skip", "1"]
    assert cli.main(args + ["--out", str(out)]) == 0
    assert seeded == [("tb-NaCl", 0, 1)]
    report = json.loads(out.read_text())
    assert [r["material_id"] for r in report["per_structure"]] == ["tb-NaCl"]
    assert report["atoms"]["settings"]["skip"] == 1
    # a skip that leaves nothing is an error that says so, and no report
    # is written (it crashed formatting an empty one)
    seeded.clear()
    empty = tmp_path / "none.json"
    assert cli.main(args[:-1] + ["2", "--out", str(empty)]) == 1
    assert "skip=2 leaves none of the 2" in capsys.readouterr().err
    assert not empty.exists() and not seeded
