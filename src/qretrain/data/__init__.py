"""Datasets: files on disk and named sets, fitted to a model's input contract.

The general readers live here (folders, .npz, .csv, IDX, video frames, joined sets,
augmented views, inputs synthesized from a teacher); the named sets built from this
machine's packages live in ``qretrain.assets.pools`` and load on first use.
"""

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
