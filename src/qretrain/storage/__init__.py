"""Storage: qretrain model files in HDF5 (packed or the seed's layout)."""

from qretrain.errors import QretrainFileError
from qretrain.storage.atomic import (
    atomic_folder,
    atomic_path,
    check_writable_folder,
    commit_pair,
    folder_lock,
    remove_path,
    subfolder,
    write_text_atomic,
)
from qretrain.storage.bitpack import pack_indices, packed_size, unpack_indices
from qretrain.storage.h5 import Layout, SaveResult, entry_file_bytes, file_bytes, load, save
from qretrain.storage.inside import json_inside, read_inside, text_inside
from qretrain.storage.schema import FORMAT_VERSION
from qretrain.storage.seal import check_seal, file_sha256

__all__ = [
    "FORMAT_VERSION",
    "Layout",
    "QretrainFileError",
    "SaveResult",
    "atomic_folder",
    "atomic_path",
    "check_seal",
    "check_writable_folder",
    "commit_pair",
    "entry_file_bytes",
    "file_bytes",
    "file_sha256",
    "folder_lock",
    "json_inside",
    "load",
    "pack_indices",
    "packed_size",
    "read_inside",
    "remove_path",
    "save",
    "subfolder",
    "text_inside",
    "unpack_indices",
    "write_text_atomic",
]
