#!/usr/bin/env bash
# One command that installs diffpy-mlsolve and everything it uses into .venv:
#   - Debian/Ubuntu packages pyobjcryst builds against (libobjcryst-dev,
#     libboost-python-dev), through apt-get (sudo when not root);
#   - torch pinned first (CPU build; set MLSOLVE_TORCH to change it), so that
#     no multi-GB CUDA build is pulled on a CPU machine;
#   - pyobjcryst built from source against the system libobjcryst;
#   - the package itself, editable, with its rietveld, pdf, synth, dev extras.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${MLSOLVE_TORCH:-torch==2.13.0}
PYOBJCRYST_SPEC=${MLSOLVE_PYOBJCRYST:-pyobjcryst==2025.1.0}
VENV=.venv

say() { printf '\n== %s\n' "$*"; }

say "system packages for pyobjcryst"
need=()
for pkg in libobjcryst-dev libboost-python-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
else
    echo "already installed"
fi

say "virtual environment $VENV ($($PYTHON --version))"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

say "$TORCH_SPEC (pinned before anything can ask for another build)"
"${PIP[@]}" "$TORCH_SPEC"

say "$PYOBJCRYST_SPEC (builds from source against libobjcryst: ~3-5 min once)"
"${PIP[@]}" packaging numpy setuptools wheel
if ! "$VENV/bin/python" -c "import pyobjcryst" 2>/dev/null; then
    CONDA_PREFIX=/usr "${PIP[@]}" "$PYOBJCRYST_SPEC"
fi

say "diffpy-mlsolve with extras rietveld, pdf, synth, dev"
"${PIP[@]}" -e ".[rietveld,pdf,synth,dev]"

say "check"
"$VENV/bin/python" - <<'PY'
import torch, pyobjcryst, diffpy.srfit, diffpy.pdffit2, diffpy_mlsolve
print(f"diffpy-mlsolve {diffpy_mlsolve.__version__}, torch {torch.__version__}"
      f" (CUDA available: {torch.cuda.is_available()}),"
      f" pyobjcryst {pyobjcryst.__version__}")
PY
echo "Done. Run the tests with: .venv/bin/python -m pytest"
