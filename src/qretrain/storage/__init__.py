"""Storage: qretrain model files in HDF5 (packed or the seed's layout)."""

from qretrain.storage.atomic import atomic_path, write_text_atomic
from qretrain.storage.bitpack import pack_indices, packed_size, unpack_indices
from qretrain.storage.h5 import (
    FORMAT_VERSION,
    Layout,
    QretrainFileError,
    SaveResult,
    entry_file_bytes,
    load,
    save,
)

__all__ = [
    "FORMAT_VERSION",
    "Layout",
    "QretrainFileError",
    "SaveResult",
    "atomic_path",
    "entry_file_bytes",
    "load",
    "pack_indices",
    "packed_size",
    "save",
    "unpack_indices",
    "write_text_atomic",
]
