"""What a qretrain file may hold, checked before any tensor is read.

``read_manifest`` walks an open file's structure and attributes, checks each against
the format (format version 2, see ``qretrain.storage.h5``) and returns plain values.
Nothing here reads a dataset's data: every dataset is checked first for the
storage HDF5 gives it (only gzip, no external or virtual storage, a plain numeric
type) and for a declared size the stored bytes could hold after gzip, so a file
that claims gigabytes in a few kilobytes is refused before it is decompressed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from qretrain.cluster.options import Granularity, Method
from qretrain.cluster.tensor import MAX_K, index_bits
from qretrain.errors import QretrainFileError
from qretrain.models.specs import ArchSpec, parse_json
from qretrain.storage.bitpack import packed_size

FORMAT = "qretrain"
FORMAT_VERSION = 2
ROOT_ATTRS = {"format", "format_version", "layout", "arch", "plans", "qretrain_version",
              "tensor_names"}  # fmt: skip
ENTRY_ATTRS = {"encoding", "shape", "dtype", "sha256"}
CLUSTER_ATTRS = {"k", "method", "granularity", "bits", "sq_error"}
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_DIMS = 8
MAX_TENSORS = 1 << 16
# Deflate expands at most about 1032:1, plus per-chunk slack: a dataset whose data
# would need more than this is refused unread.
GZIP_RATIO = 1100
GZIP_SLACK = 4096
# A k = 1 tensor stores no indices at all; cap the values it may declare.
MAX_VALUES_WITHOUT_INDICES = 1 << 26
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ClusterMeta:
    k: int
    method: Method
    granularity: Granularity
    bits: int
    sq_error: float


@dataclass(frozen=True)
class EntryMeta:
    """One state-dict tensor as the file declares it; its datasets are checked."""

    name: str
    encoding: str  # "raw" | "clustered"
    shape: tuple[int, ...]
    dtype: str
    sha256: str
    cluster: ClusterMeta | None  # clustered, or raw with a paper-layout codebook
    groups: int = 1  # codebook rows (G)
    width: int = 0  # codebook columns (K)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Manifest:
    layout: str
    arch: ArchSpec
    plans: list[dict[str, Any]]
    entries: list[EntryMeta]  # state-dict order


def read_manifest(f: h5py.File, where: str) -> Manifest:
    """Check the whole structure of ``f``; QretrainFileError names the first problem."""
    _exact_attrs(f, ROOT_ATTRS, f"{where}: the file")
    if _attr(f, "format", str) != FORMAT:
        raise QretrainFileError(f"{where} is an HDF5 file but not a qretrain model file")
    version = _attr(f, "format_version", int)
    if version != FORMAT_VERSION:
        raise QretrainFileError(
            f"{where} has format version {version}; this qretrain reads version "
            f"{FORMAT_VERSION} only"
        )
    layout = _attr(f, "layout", str)
    if layout not in ("packed", "paper"):
        raise QretrainFileError(f"{where}: layout must be packed or paper; got {layout!r}")
    _attr(f, "qretrain_version", str)
    try:
        arch = ArchSpec.from_json(_attr(f, "arch", str))
        plans = parse_json(_attr(f, "plans", str), "plans")
        names = parse_json(_attr(f, "tensor_names", str), "tensor_names")
    except ValueError as e:
        raise QretrainFileError(f"{where}: {e}") from None
    if not isinstance(plans, list) or not all(isinstance(p, dict) for p in plans):
        raise QretrainFileError(f"{where}: plans must be a list of objects")
    if (not isinstance(names, list) or len(names) > MAX_TENSORS
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):  # fmt: skip
        raise QretrainFileError(f"{where}: tensor_names must be a list of distinct names")
    if set(f) != {"tensors"} or not isinstance(_member(f, "tensors", where), h5py.Group):
        raise QretrainFileError(f"{where}: the file must hold one group, 'tensors'")
    tensors = f["tensors"]
    entries = [_entry(tensors, name, layout, where) for name in names]
    expected = set(names) | {f"{e.name}.codebook" for e in entries if e.encoding == "raw" and e.cluster}
    if set(tensors) != expected:
        extra = sorted(set(tensors) - expected)
        raise QretrainFileError(f"{where}: 'tensors' holds entries not in tensor_names: {extra[:3]}")
    return Manifest(layout, arch, plans, entries)


def _entry(tensors: h5py.Group, name: str, layout: str, where: str) -> EntryMeta:
    label = f"{where}: tensor {name!r}"
    obj = _member(tensors, name, label)
    encoding = _attr(obj, "encoding", str)
    clustered = encoding == "clustered"
    if encoding not in ("raw", "clustered") or (clustered and layout != "packed"):
        raise QretrainFileError(f"{label} has encoding {encoding!r} in a {layout} file")
    has_cluster = clustered or f"{name}.codebook" in tensors
    _exact_attrs(obj, ENTRY_ATTRS | (CLUSTER_ATTRS if has_cluster else set()), label)
    shape = _shape(_attr(obj, "shape", list), label)
    dtype = _attr(obj, "dtype", str)
    if dtype not in DTYPES or (has_cluster and dtype != "float32"):
        raise QretrainFileError(f"{label}: dtype {dtype!r} is not allowed here")
    sha = _attr(obj, "sha256", str)
    if not _SHA.fullmatch(sha):
        raise QretrainFileError(f"{label}: sha256 must be 64 hex digits")
    cluster = _cluster(obj, label) if has_cluster else None
    if not has_cluster:
        _dataset(obj, label, dtype, shape)
        return EntryMeta(name, encoding, shape, dtype, sha, None)
    if clustered:
        if not isinstance(obj, h5py.Group):
            raise QretrainFileError(f"{label}: a clustered entry must be a group")
        codebook = _member(obj, "codebook", label)
        expected = {"codebook"} | ({"sizes"} if cluster.granularity is Granularity.CHANNEL else set())
        expected |= {"indices"} if cluster.bits else set()
        if set(obj) != expected:
            raise QretrainFileError(f"{label} must hold exactly {sorted(expected)}")
    else:
        _dataset(obj, label, dtype, shape)
        codebook = _member(tensors, f"{name}.codebook", label)
    groups, width = _codebook_shape(codebook, cluster, shape, label)
    _dataset(codebook, label, "float32", (groups, width))
    if clustered:
        if cluster.granularity is Granularity.CHANNEL:
            _dataset(obj["sizes"], label, "uint16", (groups,))
        n = math.prod(shape)
        if cluster.bits:
            _dataset(obj["indices"], label, "uint8", (packed_size(n, cluster.bits),))
        elif n > MAX_VALUES_WITHOUT_INDICES:
            raise QretrainFileError(f"{label} declares {n} values with no indices stored")
    return EntryMeta(name, encoding, shape, dtype, sha, cluster, groups, width)


def _cluster(obj: h5py.HLObject, label: str) -> ClusterMeta:
    try:
        method, granularity = Method(_attr(obj, "method", str)), Granularity(
            _attr(obj, "granularity", str)
        )
    except ValueError as e:
        raise QretrainFileError(f"{label}: {e}") from None
    k, bits, sq_error = _attr(obj, "k", int), _attr(obj, "bits", int), _attr(obj, "sq_error", float)
    if not 1 <= k <= MAX_K:
        raise QretrainFileError(f"{label}: k must be in [1, {MAX_K}]; got {k}")
    if not (math.isfinite(sq_error) and sq_error >= 0):
        raise QretrainFileError(f"{label}: sq_error must be finite and >= 0; got {sq_error}")
    return ClusterMeta(k, method, granularity, bits, sq_error)


def _codebook_shape(codebook, cluster: ClusterMeta, shape, label: str) -> tuple[int, int]:
    if not isinstance(codebook, h5py.Dataset) or len(codebook.shape) != 2:
        raise QretrainFileError(f"{label}: its codebook must be a (G, K) dataset")
    groups, width = (int(d) for d in codebook.shape)
    channel = cluster.granularity is Granularity.CHANNEL
    if channel and (len(shape) < 2 or groups != shape[0]) or not channel and groups != 1:
        raise QretrainFileError(
            f"{label}: {groups} codebook rows do not fit {cluster.granularity.value} "
            f"granularity of shape {list(shape)}"
        )
    if not 1 <= width <= cluster.k or cluster.bits != index_bits(width):
        raise QretrainFileError(
            f"{label}: codebook width {width}, k {cluster.k} and bits {cluster.bits} disagree"
        )
    return groups, width


def _dataset(obj, label: str, dtype: str, shape: tuple[int, ...]) -> None:
    """A plain, gzip-or-uncompressed dataset of this dtype and shape, or an error."""
    if not isinstance(obj, h5py.Dataset):
        raise QretrainFileError(f"{label}: expected a dataset, found a group")
    if obj.dtype != np.dtype(dtype) or tuple(obj.shape) != tuple(shape):
        raise QretrainFileError(
            f"{label}: dataset {obj.name!r} is {obj.dtype}{list(obj.shape)}; expected "
            f"{dtype}{list(shape)}"
        )
    plist = obj.id.get_create_plist()
    if obj.is_virtual or plist.get_external_count():
        raise QretrainFileError(f"{label}: dataset {obj.name!r} points outside the file")
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if any(code != h5py.h5z.FILTER_DEFLATE for code in filters):
        raise QretrainFileError(f"{label}: dataset {obj.name!r} uses filters {filters}; only gzip")
    nbytes = math.prod(shape) * obj.dtype.itemsize
    if nbytes > GZIP_RATIO * obj.id.get_storage_size() + GZIP_SLACK:
        raise QretrainFileError(
            f"{label}: dataset {obj.name!r} declares {nbytes} bytes but stores "
            f"{obj.id.get_storage_size()}, more than gzip can expand"
        )


def _member(group: h5py.Group, key: str, label: str) -> h5py.HLObject:
    link = group.get(key, getlink=True)
    if link is None:
        raise QretrainFileError(f"{label}: {key!r} is missing")
    if not isinstance(link, h5py.HardLink):
        raise QretrainFileError(f"{label}: {key!r} is a link ({type(link).__name__}), not data")
    return group[key]


def _exact_attrs(obj: h5py.HLObject, expected: set[str], label: str) -> None:
    found = set(obj.attrs.keys())
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise QretrainFileError(f"{label}: attributes missing {missing}, unexpected {extra}")


def _attr(obj: h5py.HLObject, key: str, kind: type) -> Any:
    """An attribute of the expected kind: str, int, float, or list (1-D of ints)."""
    value = obj.attrs[key]
    if kind is str:
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, str):
            return value
    elif kind is list:
        array = np.asarray(value)
        if array.ndim == 1 and (array.size == 0 or array.dtype.kind in "iu"):
            return [int(v) for v in array]
    elif kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    elif kind is float and isinstance(value, (float, int, np.floating, np.integer)):
        return float(value)
    raise QretrainFileError(
        f"{obj.name!r}: attribute {key!r} must be {kind.__name__}; got {type(value).__name__}"
    )


def _shape(dims: list[int], label: str) -> tuple[int, ...]:
    if len(dims) > MAX_DIMS or any(d < 0 or d > 1 << 40 for d in dims):
        raise QretrainFileError(f"{label}: shape {dims} is not a tensor shape")
    return tuple(dims)
