"""Every script in examples/ runs to the end and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "an example should say what it did"
    assert (tmp_path / "out").is_dir()
    for line in PROMISES.get(script.name, ()):
        assert line in done.stdout, (line, done.stdout[-2000:])


# what the solving examples must find (they print it either way)
PROMISES = {
    "solve_and_refine.py": ["matches the true structure: True"],
    "refine_pdf_chain.py": [
        "powder solution: Pm-3m",
        "diameter within 10 %: True",
    ],
    "nanoparticle_pdf.py": [
        "model: crystalnet-nanopdf",
        "PDF solution: Fm-3m",
        "matches the true structure: True",
        "diameter within 10 %: True",
    ],
}
