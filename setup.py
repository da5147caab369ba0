"""Installs diffpy-mlsolve: the package, its first-party plugins and the
``mlsolve`` command.  See README.md for the one-command set-up (setup.sh),
which also installs the system libraries pyobjcryst builds against."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version = {}
exec((HERE / "diffpy_mlsolve" / "version.py").read_text(), version)

setup(
    name="diffpy-mlsolve",
    version=version["__version__"],
    description=(
        "Structure solution from powder diffraction and PDF data with a "
        "variational coordinate-based electron-density network, handed to "
        "Rietveld (pyobjcryst) and PDF (diffpy.srfit) refinement."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["diffpy_mlsolve", "diffpy_mlsolve.*"])
    + ["diffpy_mlsolve_plugins"],
    package_dir={"diffpy_mlsolve_plugins": "plugins"},
    package_data={"diffpy_mlsolve": ["model/weights/*/*", "data/*.json"]},
    install_requires=[
        # torch is pinned by setup.sh before this install so that pip never
        # pulls a CUDA build on a CPU machine; any 2.x satisfies the code.
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "diffpy.structure>=3.2",
        "diffpy.utils>=3.5",
        "pymatgen>=2024.1.1",
        "spglib>=2.0",
        # the Wyckoff positions of the solver's trial structures
        "pyxtal>=1.0",
        "scikit-image>=0.22",
        "xraydb>=4.5",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "matplotlib>=3.7",
        "gemmi>=0.6",
        "threadpoolctl>=3.0",
    ],
    extras_require={
        # pyobjcryst builds against Debian's libobjcryst-dev (setup.sh)
        "rietveld": ["pyobjcryst>=2024.2", "packaging"],
        # pdffit2 1.5.2 does not import on 3.11, 1.6 needs 3.12; srfit 3.2
        # imports six without declaring it
        "pdf": [
            "diffpy.srfit>=3.2",
            "six",
            "diffpy.pdffit2==1.5.1; python_version<'3.12'",
            "diffpy.pdffit2>=1.5.1; python_version>='3.12'",
        ],
        # kept for old install lines: pyxtal is now a core requirement
        "synth": [],
        "dev": ["pytest>=7", "black", "isort", "flake8"],
    },
    entry_points={
        "console_scripts": ["mlsolve = diffpy_mlsolve.cli:main"],
        "diffpy.structure_solvers": [
            "crystalnet = diffpy_mlsolve_plugins.crystalnet:CrystalNetSolver",
        ],
        "diffpy_mlsolve.refiners": [
            "rietveld = diffpy_mlsolve_plugins.rietveld:RietveldRefiner",
            "pdf = diffpy_mlsolve_plugins.pdf:PDFRefiner",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Chemistry",
        "Topic :: Scientific/Engineering :: Physics",
    ],
)
