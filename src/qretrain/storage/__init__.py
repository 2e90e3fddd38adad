"""Storage: qretrain model files in HDF5 (packed or the seed's layout).

Its names load on first use (``qretrain._lazy``): ``layout`` imports without torch or
h5py.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.errors": ("QretrainFileError",),
    "qretrain.storage.atomic": ("atomic_folder", "atomic_path", "check_writable_folder",
                                "commit_pair", "folder_lock", "remove_path", "subfolder",
                                "write_text_atomic"),
    "qretrain.storage.bitpack": ("pack_indices", "packed_size", "unpack_indices"),
    "qretrain.storage.h5": ("SaveResult", "entry_file_bytes", "file_bytes", "load", "save"),
    "qretrain.storage.inside": ("json_inside", "read_inside", "text_inside"),
    "qretrain.storage.layout": ("Layout",),
    "qretrain.storage.schema": ("FORMAT_VERSION",),
    "qretrain.storage.seal": ("check_seal", "file_sha256"),
})  # fmt: skip
