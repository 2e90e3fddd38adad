"""qretrain model files: HDF5 with gzip, written atomically, read without unpickling.

Layout of a file (format version 1)::

    /                     attrs: format="qretrain", format_version, layout, arch (JSON),
                                 plans (JSON), tensor_names (JSON, state-dict order)
    /tensors/<name>       one entry per state-dict tensor:
        raw tensor        a dataset of its own dtype and shape
        packed clustered  a group: codebook (G, K) float32, indices (bit-packed uint8;
                          absent when K = 1), sizes (G,) when per channel

Every entry carries ``encoding``, ``shape``, ``dtype`` and ``sha256`` (of the decoded
tensor's bytes) attributes; clustered ones also ``k``, ``method``, ``granularity``,
``bits`` and ``sq_error``. In the ``paper`` layout (the seed's storage) clustered
tensors are raw float32 datasets holding centroid values, with their codebook in a
small ``<name>.codebook`` companion so that loading needs no sort.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from qretrain import __version__
from qretrain.cluster.options import Granularity, Method, parse_enum
from qretrain.cluster.state import clusters_of, plans_of
from qretrain.cluster.tensor import ClusteredTensor
from qretrain.models.specs import ArchSpec, check_fits, get_arch, set_arch
from qretrain.storage.atomic import atomic_path
from qretrain.storage.bitpack import pack_indices, unpack_indices

FORMAT = "qretrain"
FORMAT_VERSION = 1
GZIP_LEVEL = 4  # level 9 is ~3x slower here for under 1% smaller files


class Layout(str, enum.Enum):
    PACKED = "packed"  # bit-packed indices + codebook per clustered tensor
    PAPER = "paper"  # the seed's: every tensor float32, gzip does the rest


class QretrainFileError(ValueError):
    """A file that is not a readable qretrain model file; names the file and the cause."""


@dataclass(frozen=True)
class SaveResult:
    path: Path
    file_bytes: int
    layout: Layout
    tensor_bytes: dict[str, int]  # bytes each tensor takes on disk after gzip


def save(
    model: nn.Module,
    path: str | Path,
    *,
    layout: Layout | str = Layout.PACKED,
    arch: ArchSpec | str | None = None,
) -> SaveResult:
    """Write ``model`` (clustered or not) to ``path`` atomically.

    ``arch`` says how to rebuild the architecture; by default the one recorded when
    the model was built by qretrain, or an importable no-argument class.
    """
    layout = parse_enum(Layout, layout, "layout")
    arch = _arch_for(model, arch)
    clusters = clusters_of(model)
    state = model.state_dict()
    path = Path(path)
    tensor_bytes = {}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["layout"] = layout.value
            f.attrs["arch"] = arch.to_json()
            f.attrs["plans"] = json.dumps(plans_of(model))
            f.attrs["qretrain_version"] = __version__
            f.attrs["tensor_names"] = json.dumps(list(state))
            tensors = f.create_group("tensors")
            for name, tensor in state.items():
                _write_entry(tensors, name, tensor, clusters.get(name), layout)
            f.flush()
            for name in state:
                tensor_bytes[name] = _stored_bytes(tensors[name])
                if f"{name}.codebook" in tensors:
                    tensor_bytes[name] += _stored_bytes(tensors[f"{name}.codebook"])
    return SaveResult(path, path.stat().st_size, layout, tensor_bytes)


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored in ``path``, with its clustering; in eval mode.

    Raises QretrainFileError for a missing, truncated or corrupted file (checksums),
    an unknown format version, or tensors that do not fit the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        with h5py.File(path, "r") as f:
            arch, plans, state, clusters = _read(f, str(path))
    except QretrainFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise QretrainFileError(
            f"{str(path)!r} is not a readable qretrain file (truncated or corrupted?): {e}"
        ) from e
    model = arch.build()
    try:
        check_fits(model, state, repr(str(path)))
    except ValueError as e:
        raise QretrainFileError(str(e)) from e
    model.load_state_dict(state)
    set_arch(model, arch)
    clusters_of(model).update(clusters)
    plans_of(model).extend(plans)
    return model.to(map_location).eval()


def _read(f: h5py.File, where: str):
    if f.attrs.get("format") != FORMAT:
        raise QretrainFileError(f"{where} is an HDF5 file but not a qretrain model file")
    version = int(f.attrs["format_version"])
    if version != FORMAT_VERSION:
        raise QretrainFileError(
            f"{where} has format version {version}; this qretrain ({__version__}) reads "
            f"version {FORMAT_VERSION} only"
        )
    arch = ArchSpec.from_json(f.attrs["arch"])
    plans = json.loads(f.attrs["plans"])
    tensors = f["tensors"]
    state, clusters = {}, {}
    for name in json.loads(f.attrs["tensor_names"]):
        entry = tensors[name]
        encoding = entry.attrs["encoding"]
        if encoding == "clustered":
            clustered = _read_packed(entry)
            tensor = clustered.decode()
        elif encoding == "raw":
            tensor = torch.from_numpy(np.asarray(entry[()]).copy())
            clustered = None
            if f"{name}.codebook" in tensors:
                clustered = _indices_from_values(entry, tensor, tensors[f"{name}.codebook"][()])
        else:
            raise QretrainFileError(f"{where}: tensor {name!r} has unknown encoding {encoding!r}")
        tensor = tensor.to(getattr(torch, entry.attrs["dtype"])).reshape(
            tuple(entry.attrs["shape"])
        )
        if _sha256(tensor) != entry.attrs["sha256"]:
            raise QretrainFileError(f"{where}: tensor {name!r} fails its checksum (corrupted file)")
        state[name] = tensor
        if clustered is not None:
            clusters[name] = clustered
    return arch, plans, state, clusters


def _arch_for(model: nn.Module, arch: ArchSpec | str | None) -> ArchSpec:
    if isinstance(arch, ArchSpec):
        return arch
    if isinstance(arch, str):
        return ArchSpec(arch)
    recorded = get_arch(model)
    if recorded is None:
        raise ValueError(
            f"cannot record how to rebuild {type(model).__name__}: build it with "
            "qretrain.build_model(spec), or pass arch='package.module:callable' to save()"
        )
    return recorded


def _write_entry(group: h5py.Group, name: str, tensor: torch.Tensor,
                 clustered: ClusteredTensor | None, layout: Layout) -> None:  # fmt: skip
    """One state-dict tensor's entry (and paper-layout codebook companion)."""
    tensor = tensor.detach().cpu().contiguous()
    if clustered is not None:
        _check_still_clustered(name, tensor, clustered)
    if clustered is not None and layout is Layout.PACKED:
        entry = _write_packed(group, name, clustered)
    else:
        entry = _write_raw(group, name, tensor)
        if clustered is not None:
            _dataset(group, f"{name}.codebook", clustered.codebook.numpy())
            _set_cluster_attrs(entry, clustered)
    entry.attrs["shape"] = list(tensor.shape)
    entry.attrs["dtype"] = str(tensor.dtype).removeprefix("torch.")
    entry.attrs["sha256"] = _sha256(tensor)


def entry_file_bytes(
    name: str,
    tensor: torch.Tensor,
    clustered: ClusteredTensor | None = None,
    layout: Layout | str = Layout.PACKED,
) -> int:
    """Bytes one tensor's entry adds to a model file, measured by writing it in memory
    with the code ``save`` uses (gzip included, so the figure depends on the values).

    ``tensor`` must hold ``clustered``'s values when that is given. Entries of a file
    are independent, so a file's size changes by the difference of two such figures
    when one tensor is clustered (up to HDF5's metadata rounding, a few hundred bytes).
    """
    layout = parse_enum(Layout, layout, "layout")
    entry = _memory_file_bytes(lambda g: _write_entry(g, name, tensor, clustered, layout))
    return entry - _empty_file_bytes()


@functools.cache
def _empty_file_bytes() -> int:
    return _memory_file_bytes(lambda g: None)


def _memory_file_bytes(write) -> int:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write(f.create_group("tensors"))
    return buffer.getbuffer().nbytes


def _check_still_clustered(name: str, tensor: torch.Tensor, clustered: ClusteredTensor) -> None:
    if tensor.shape != clustered.shape or not torch.equal(clustered.decode(), tensor.float()):
        raise ValueError(
            f"{name} no longer holds its codebook's values (changed after clustering); "
            "cluster the model again before saving"
        )


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """gzip on every dataset that HDF5 can chunk (not scalars or empty ones), no shuffle."""
    if data.ndim == 0 or data.size == 0:
        return group.create_dataset(name, data=data)
    return group.create_dataset(
        name, data=data, compression="gzip", compression_opts=GZIP_LEVEL, shuffle=False
    )


def _write_raw(group: h5py.Group, name: str, tensor: torch.Tensor) -> h5py.Dataset:
    entry = _dataset(group, name, tensor.numpy())
    entry.attrs["encoding"] = "raw"
    return entry


def _write_packed(group: h5py.Group, name: str, clustered: ClusteredTensor) -> h5py.Group:
    entry = group.create_group(name)
    entry.attrs["encoding"] = "clustered"
    _set_cluster_attrs(entry, clustered)
    _dataset(entry, "codebook", clustered.codebook.numpy())
    if clustered.granularity is Granularity.CHANNEL:
        _dataset(entry, "sizes", clustered.sizes.numpy().astype(np.uint16))
    if clustered.bits:
        packed = pack_indices(clustered.indices.numpy().reshape(-1), clustered.bits)
        _dataset(entry, "indices", packed)
    return entry


def _set_cluster_attrs(entry: h5py.HLObject, clustered: ClusteredTensor) -> None:
    entry.attrs["k"] = clustered.k
    entry.attrs["method"] = clustered.method.value
    entry.attrs["granularity"] = clustered.granularity.value
    entry.attrs["bits"] = clustered.bits
    entry.attrs["sq_error"] = clustered.sq_error


def _cluster_fields(entry: h5py.HLObject) -> dict:
    return {
        "k": int(entry.attrs["k"]),
        "method": Method(entry.attrs["method"]),
        "granularity": Granularity(entry.attrs["granularity"]),
        "sq_error": float(entry.attrs["sq_error"]),
    }


def _read_packed(entry: h5py.Group) -> ClusteredTensor:
    codebook = torch.from_numpy(np.asarray(entry["codebook"][()], dtype=np.float32))
    shape = tuple(int(d) for d in entry.attrs["shape"])
    n = int(np.prod(shape, dtype=np.int64))
    bits = int(entry.attrs["bits"])
    if bits:
        indices = unpack_indices(np.asarray(entry["indices"][()]), bits, n)
    else:
        indices = np.zeros(n, dtype=np.uint8)
    if "sizes" in entry:
        sizes = torch.from_numpy(entry["sizes"][()].astype(np.int64))
    else:
        sizes = torch.tensor([codebook.shape[1]], dtype=torch.int64)
    if int(indices.max(initial=0)) >= codebook.shape[1]:
        raise QretrainFileError(f"tensor {entry.name!r}: an index exceeds its codebook")
    return ClusteredTensor(
        codebook=codebook,
        sizes=sizes,
        indices=torch.from_numpy(indices).reshape(shape),
        **_cluster_fields(entry),
    )


def _indices_from_values(entry: h5py.Dataset, tensor: torch.Tensor, codebook) -> ClusteredTensor:
    """Rebuild indices of a paper-layout tensor from its values and sorted codebook."""
    codebook = torch.from_numpy(np.asarray(codebook, dtype=np.float32))
    rows = tensor.float().reshape(codebook.shape[0], -1).contiguous()
    indices = torch.searchsorted(codebook, rows).clamp_(max=codebook.shape[1] - 1)
    sizes = torch.tensor(
        [int(torch.unique_consecutive(row).numel()) for row in codebook], dtype=torch.int64
    )
    return ClusteredTensor(
        codebook=codebook,
        sizes=sizes,
        indices=indices.to(torch.uint8).reshape(tensor.shape),
        **_cluster_fields(entry),
    )


def _sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous().numpy()
    return hashlib.sha256(memoryview(data).cast("B") if data.size else b"").hexdigest()


def _stored_bytes(entry: h5py.HLObject) -> int:
    if isinstance(entry, h5py.Dataset):
        return entry.id.get_storage_size()
    return sum(_stored_bytes(entry[key]) for key in entry)
