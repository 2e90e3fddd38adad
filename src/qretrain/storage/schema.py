"""What a qretrain file may hold, checked before any tensor is read.

All metadata of a file lives in one JSON document, the ``/manifest`` dataset (uint8
bytes of UTF-8 JSON): no HDF5 attributes and no variable-length strings, whose
global-heap reads are where crafted files crash or stall libhdf5. ``read_manifest``
parses it, checks every field against the format and every dataset it names for the
storage HDF5 gives it (only gzip, no external or virtual storage, the declared
dtype and shape) and for a declared size the stored bytes could hold after gzip,
so a file claiming gigabytes in a few kilobytes is refused before decompressing.
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
MANIFEST = "manifest"
ROOT_KEYS = {"format", "format_version", "layout", "arch", "plans", "qretrain_version",
             "tensors"}  # fmt: skip
ENTRY_KEYS = {"name", "encoding", "shape", "dtype", "sha256"}
CLUSTER_KEYS = {"k", "method", "granularity", "bits", "sq_error"}
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_DIMS = 8
MAX_TENSORS = 1 << 16
MAX_MANIFEST_BYTES = 64 << 20
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

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "method": self.method.value, "bits": self.bits,
                "granularity": self.granularity.value, "sq_error": self.sq_error}  # fmt: skip


@dataclass(frozen=True)
class EntryMeta:
    """One state-dict tensor as the manifest declares it."""

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

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "encoding": self.encoding, "shape": list(self.shape),
             "dtype": self.dtype, "sha256": self.sha256}  # fmt: skip
        if self.cluster is not None:
            d["cluster"] = self.cluster.to_dict()
        return d


@dataclass(frozen=True)
class Manifest:
    layout: str
    arch: ArchSpec
    plans: list[dict[str, Any]]
    entries: list[EntryMeta]  # state-dict order


def read_manifest(f: h5py.File, where: str) -> Manifest:
    """Parse and check ``f``'s manifest and the datasets it names; QretrainFileError
    names the first problem."""
    if set(f) != {MANIFEST, "tensors"}:
        if MANIFEST not in f:
            raise QretrainFileError(f"{where} is an HDF5 file but not a qretrain model file")
        raise QretrainFileError(f"{where}: the file must hold 'manifest' and 'tensors' only")
    data = _member(f, MANIFEST, where)
    if not isinstance(data, h5py.Dataset) or data.ndim != 1:
        raise QretrainFileError(f"{where}: 'manifest' must be a 1-D dataset")
    if data.size > MAX_MANIFEST_BYTES:
        raise QretrainFileError(f"{where}: its manifest is over {MAX_MANIFEST_BYTES} bytes")
    _check_dataset(data, where, "uint8", data.shape)
    try:
        text = data[()].tobytes().decode("utf-8")
        doc = parse_json(text, "manifest")
    except (UnicodeDecodeError, ValueError) as e:
        raise QretrainFileError(f"{where}: its manifest is not JSON ({e})") from None
    if not isinstance(doc, dict) or set(doc) != ROOT_KEYS:
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise QretrainFileError(f"{where}: the manifest must have keys {sorted(ROOT_KEYS)}; got {got}")
    if doc["format"] != FORMAT:
        raise QretrainFileError(f"{where} is an HDF5 file but not a qretrain model file")
    if doc["format_version"] != FORMAT_VERSION:
        raise QretrainFileError(
            f"{where} has format version {doc['format_version']!r}; this qretrain reads "
            f"version {FORMAT_VERSION} only"
        )
    layout = doc["layout"]
    if layout not in ("packed", "paper"):
        raise QretrainFileError(f"{where}: layout must be packed or paper; got {layout!r}")
    try:
        arch = ArchSpec.from_dict(doc["arch"])
    except ValueError as e:
        raise QretrainFileError(f"{where}: {e}") from None
    plans, entries = doc["plans"], doc["tensors"]
    if not isinstance(plans, list) or not all(isinstance(p, dict) for p in plans):
        raise QretrainFileError(f"{where}: plans must be a list of objects")
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise QretrainFileError(f"{where}: tensors must be a list of at most {MAX_TENSORS}")
    tensors = _member(f, "tensors", where)
    if not isinstance(tensors, h5py.Group):
        raise QretrainFileError(f"{where}: 'tensors' must be a group")
    metas = [_entry(tensors, d, layout, where) for d in entries]
    names = [m.name for m in metas]
    expected = set(names) | {f"{m.name}.codebook" for m in metas if m.encoding == "raw" and m.cluster}
    if len(set(names)) != len(names) or set(tensors) != expected:
        extra = sorted(set(tensors) ^ expected)
        raise QretrainFileError(f"{where}: 'tensors' and the manifest disagree on {extra[:3]}")
    return Manifest(layout, arch, plans, metas)


def _entry(tensors: h5py.Group, d: Any, layout: str, where: str) -> EntryMeta:
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
        raise QretrainFileError(f"{where}: every manifest tensor needs a name")
    name = d["name"]
    label = f"{where}: tensor {name!r}"
    keys = ENTRY_KEYS | ({"cluster"} if "cluster" in d else set())
    if set(d) != keys:
        raise QretrainFileError(f"{label}: manifest keys {sorted(d)}; expected {sorted(keys)}")
    encoding, dtype, sha = d["encoding"], d["dtype"], d["sha256"]
    clustered = encoding == "clustered"
    if encoding not in ("raw", "clustered") or (clustered and layout != "packed"):
        raise QretrainFileError(f"{label} has encoding {encoding!r} in a {layout} file")
    cluster = _cluster(d["cluster"], label) if "cluster" in d else None
    if clustered and cluster is None:
        raise QretrainFileError(f"{label}: a clustered tensor needs its cluster fields")
    shape = _shape(d["shape"], label)
    if dtype not in DTYPES or (cluster is not None and dtype != "float32"):
        raise QretrainFileError(f"{label}: dtype {dtype!r} is not allowed here")
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise QretrainFileError(f"{label}: sha256 must be 64 hex digits")
    obj = _member(tensors, name, label)
    if cluster is None:
        _check_dataset(obj, label, dtype, shape)
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
        _check_dataset(obj, label, dtype, shape)
        codebook = _member(tensors, f"{name}.codebook", label)
    groups, width = _codebook_shape(codebook, cluster, shape, label)
    _check_dataset(codebook, label, "float32", (groups, width))
    if clustered:
        if cluster.granularity is Granularity.CHANNEL:
            _check_dataset(_member(obj, "sizes", label), label, "uint16", (groups,))
        n = math.prod(shape)
        if cluster.bits:
            indices = _member(obj, "indices", label)
            _check_dataset(indices, label, "uint8", (packed_size(n, cluster.bits),))
        elif n > MAX_VALUES_WITHOUT_INDICES:
            raise QretrainFileError(f"{label} declares {n} values with no indices stored")
    return EntryMeta(name, encoding, shape, dtype, sha, cluster, groups, width)


def _cluster(d: Any, label: str) -> ClusterMeta:
    if not isinstance(d, dict) or set(d) != CLUSTER_KEYS:
        raise QretrainFileError(f"{label}: cluster fields must be {sorted(CLUSTER_KEYS)}")
    try:
        method, granularity = Method(d["method"]), Granularity(d["granularity"])
    except ValueError as e:
        raise QretrainFileError(f"{label}: {e}") from None
    k, bits, sq_error = d["k"], d["bits"], d["sq_error"]
    if not _is_int(k) or not 1 <= k <= MAX_K:
        raise QretrainFileError(f"{label}: k must be an int in [1, {MAX_K}]; got {k!r}")
    if not _is_int(bits):
        raise QretrainFileError(f"{label}: bits must be an int; got {bits!r}")
    if isinstance(sq_error, bool) or not isinstance(sq_error, (int, float)) or not (
        math.isfinite(sq_error) and sq_error >= 0
    ):
        raise QretrainFileError(f"{label}: sq_error must be finite and >= 0; got {sq_error!r}")
    return ClusterMeta(k, method, granularity, bits, float(sq_error))


def _codebook_shape(codebook, cluster: ClusterMeta, shape, label: str) -> tuple[int, int]:
    if not isinstance(codebook, h5py.Dataset) or codebook.ndim != 2:
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


def _check_dataset(obj, label: str, dtype: str, shape: tuple[int, ...]) -> None:
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape(dims: Any, label: str) -> tuple[int, ...]:
    if (not isinstance(dims, list) or len(dims) > MAX_DIMS
            or not all(_is_int(d) and 0 <= d <= 1 << 40 for d in dims)):  # fmt: skip
        raise QretrainFileError(f"{label}: shape {dims!r} is not a tensor shape")
    return tuple(dims)
