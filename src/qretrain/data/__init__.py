"""Datasets: files on disk and named sets, fitted to a model's input contract.

The general readers live here (folders, .npz, .csv, IDX, video frames, joined sets,
augmented views, inputs synthesized from a teacher); the named sets built from this
machine's packages live in ``qretrain.assets.pools`` and load on first use. Its names
load on first use too (``qretrain._lazy``): ``forms`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.data.registry": ("DataSourceMissing", "known_datasets", "load_dataset",
                               "register_dataset"),
    "qretrain.data.sets": ("NO_LABEL", "FileImageSet", "ImageSet", "JoinedImageSet",
                           "TensorImageSet", "joined"),
})  # fmt: skip
