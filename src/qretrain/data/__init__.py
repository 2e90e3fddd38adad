"""Datasets: named sets and files on disk, fitted to a model's input contract."""

from qretrain.data import gcompris, natural, stamps  # noqa: F401  (register the named sets)
from qretrain.data.registry import (
    DataSourceMissing,
    known_datasets,
    load_dataset,
    register_dataset,
)
from qretrain.data.sets import (
    NO_LABEL,
    FileImageSet,
    ImageSet,
    JoinedImageSet,
    TensorImageSet,
    joined,
)

__all__ = [
    "NO_LABEL",
    "DataSourceMissing",
    "FileImageSet",
    "ImageSet",
    "JoinedImageSet",
    "TensorImageSet",
    "known_datasets",
    "load_dataset",
    "joined",
    "register_dataset",
]
