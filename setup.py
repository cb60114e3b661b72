"""Packages of the one distribution: each top-level folder of the layers is mapped onto
`longreach.<folder>` with every subpackage under it, so a new kind's package needs no entry
here or in pyproject.toml. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

LAYERS = ("contract", "operator", "jobs")

setup(
    package_dir={f"longreach.{top}": top for top in LAYERS},
    packages=[
        f"longreach.{top}{'.' + sub if sub else ''}"
        for top in LAYERS
        for sub in ["", *find_packages(top)]
    ],
)
