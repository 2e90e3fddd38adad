"""What a qretrain file may hold, checked before any tensor is read.

All metadata of a file lives in one JSON document, the ``/manifest`` dataset (uint8
bytes of UTF-8 JSON): no HDF5 attributes and no variable-length strings, whose
global-heap reads are where crafted files crash or stall libhdf5. Every tensor's
bytes lie end to end in the one ``/data`` dataset, in manifest order; each entry's
length follows from its declared shape, dtype and clustering, so the manifest names
no offsets that could disagree. ``read_manifest`` parses the manifest, checks every
field against the format, and checks ``/data`` for the storage HDF5 gives it (only
gzip, no external or virtual storage, exactly the declared length) and for a length
the stored bytes could hold after gzip, so a file claiming gigabytes in a few
kilobytes is refused before decompressing.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import h5py
import numpy as np

from qretrain.cluster.options import VECTOR, Granularity, Method
from qretrain.cluster.tensor import MAX_K, index_bits
from qretrain.errors import QretrainFileError
from qretrain.models.specs import ArchSpec, parse_json
from qretrain.storage.bitpack import packed_size

FORMAT = "qretrain"
FORMAT_VERSION = 3  # of files without codebooks of pairs: what readers before them read
PAIRS_VERSION = 4  # of files with codebooks of pairs, which a version-3 reader would misread
VERSIONS = (FORMAT_VERSION, PAIRS_VERSION)
MANIFEST = "manifest"
DATA = "data"
ROOT_KEYS = {"format", "format_version", "layout", "arch", "plans", "qretrain_version",
             "tensors", "sha256"}  # fmt: skip
ENTRY_KEYS = {"name", "encoding", "shape", "dtype"}
CLUSTER_KEYS = {"k", "method", "granularity", "bits", "width", "sq_error"}
ENCODINGS = ("raw", "clustered", "constant")
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_DIMS = 8
MAX_TENSORS = 1 << 16
MAX_MANIFEST_BYTES = 64 << 20
# Deflate expands at most about 1032:1, plus per-chunk slack: a dataset whose data
# would need more than this is refused unread.
GZIP_RATIO = 1100
GZIP_SLACK = 4096
# Tensors that store no bytes per value (k = 1, constants): cap what they may declare.
MAX_VALUES_WITHOUT_DATA = 1 << 26
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ClusterMeta:
    k: int
    method: Method
    granularity: Granularity
    bits: int
    sq_error: float
    width: int = 0  # codebook columns K: values in use in the fullest row

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "method": self.method.value, "bits": self.bits,
                "width": self.width, "granularity": self.granularity.value,
                "sq_error": self.sq_error}  # fmt: skip


@dataclass(frozen=True)
class EntryMeta:
    """One state-dict tensor as the manifest declares it, and where its bytes lie."""

    name: str
    encoding: str  # "raw" | "clustered" | "constant"
    shape: tuple[int, ...]
    dtype: str
    cluster: ClusterMeta | None = None  # clustered, or raw with a paper-layout codebook
    value: float | int | bool | None = None  # every element of a constant tensor
    offset: int = 0  # of its first byte in /data (set by read_manifest)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def groups(self) -> int:
        """Codebook rows G: 1 per tensor, or the first dimension per channel."""
        channel = self.cluster is not None and self.cluster.granularity is Granularity.CHANNEL
        return self.shape[0] if channel else 1

    @property
    def vector(self) -> int:
        """Values one index gives: 2 for a codebook of pairs, else 1."""
        return VECTOR[self.cluster.granularity] if self.cluster is not None else 1

    def segments(self) -> list[tuple[str, int]]:
        """(part, bytes) in the order they lie in /data."""
        if self.encoding == "constant":
            return []
        c = self.cluster
        codebook = [("codebook", self.groups * c.width * self.vector * 4)] if c is not None else []
        if self.encoding == "raw":
            return [("values", self.numel * np.dtype(self.dtype).itemsize), *codebook]
        sizes = [("sizes", self.groups * 2)] if c.granularity is Granularity.CHANNEL else []
        indices = [("indices", packed_size(self.numel // self.vector, c.bits))] if c.bits else []
        return [*codebook, *sizes, *indices]

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self.segments())

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "encoding": self.encoding, "shape": list(self.shape),
             "dtype": self.dtype}  # fmt: skip
        if self.cluster is not None:
            d["cluster"] = self.cluster.to_dict()
        if self.encoding == "constant":
            d["value"] = self.value
        return d


@dataclass(frozen=True)
class Manifest:
    layout: str
    arch: ArchSpec
    plans: list[dict[str, Any]]
    entries: list[EntryMeta]  # state-dict order, offsets set
    sha256: str  # of every decoded tensor's bytes, in order
    data_bytes: int  # the length of /data


def read_manifest(f: h5py.File, where: str) -> Manifest:
    """Parse and check ``f``'s manifest and its data's storage; QretrainFileError
    names the first problem."""
    if set(f) != {MANIFEST, DATA}:
        if MANIFEST not in f:
            raise QretrainFileError(f"{where} is an HDF5 file but not a qretrain model file")
        raise QretrainFileError(f"{where}: the file must hold 'manifest' and 'data' only")
    data = _member(f, MANIFEST, where)
    _no_attributes(f, where)
    if not isinstance(data, h5py.Dataset) or data.ndim != 1:
        raise QretrainFileError(f"{where}: 'manifest' must be a 1-D dataset")
    if data.size > MAX_MANIFEST_BYTES:
        raise QretrainFileError(f"{where}: its manifest is over {MAX_MANIFEST_BYTES} bytes")
    _check_dataset(data, where, "uint8", data.shape)
    try:
        text = data[()].tobytes().decode("utf-8")
        doc = parse_json(text, "manifest")
        json.loads(text, object_pairs_hook=_unique_keys)  # nested 16 levels at most by now
    except (UnicodeDecodeError, ValueError) as e:
        raise QretrainFileError(f"{where}: its manifest is not JSON ({e})") from None
    if (
        isinstance(doc, dict)
        and doc.get("format") == FORMAT
        and doc.get("format_version") not in VERSIONS
    ):
        raise QretrainFileError(
            f"{where} has format version {doc.get('format_version')!r}; this qretrain reads "
            f"versions {' and '.join(map(str, VERSIONS))} only (docs/FORMAT.md, 'Versions')"
        )
    if not isinstance(doc, dict) or set(doc) != ROOT_KEYS:
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise QretrainFileError(
            f"{where}: the manifest must have keys {sorted(ROOT_KEYS)}; got {got}"
        )
    if doc["format"] != FORMAT:
        raise QretrainFileError(f"{where} is an HDF5 file but not a qretrain model file")
    layout = doc["layout"]
    if layout not in ("packed", "paper"):
        raise QretrainFileError(f"{where}: layout must be packed or paper; got {layout!r}")
    try:
        arch = ArchSpec.from_dict(doc["arch"])
    except ValueError as e:
        raise QretrainFileError(f"{where}: {e}") from None
    plans, entries, sha = doc["plans"], doc["tensors"], doc["sha256"]
    if not isinstance(plans, list) or not all(isinstance(p, dict) for p in plans):
        raise QretrainFileError(f"{where}: plans must be a list of objects")
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise QretrainFileError(f"{where}: tensors must be a list of at most {MAX_TENSORS}")
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise QretrainFileError(f"{where}: sha256 must be 64 hex digits")
    metas, offset = [], 0
    for d in entries:
        meta = replace(_entry(d, layout, where), offset=offset)
        metas.append(meta)
        offset += meta.nbytes
    names = [m.name for m in metas]
    if len(set(names)) != len(names):
        raise QretrainFileError(f"{where}: the manifest names a tensor twice")
    if doc["format_version"] != format_version(metas):
        raise QretrainFileError(f"{where}: format version {doc['format_version']} with"
                                f"{'' if any(m.vector > 1 for m in metas) else 'out'} codebooks "
                                f"of pairs; they are version {PAIRS_VERSION}, other files "
                                f"{FORMAT_VERSION}")  # fmt: skip
    _check_dataset(_member(f, DATA, where), where, "uint8", (offset,))
    return Manifest(layout, arch, plans, metas, sha, offset)


def format_version(entries: list[EntryMeta]) -> int:
    """The version of a file holding ``entries``: PAIRS_VERSION with a codebook of
    pairs, else FORMAT_VERSION (which every reader since version 3 reads)."""
    return PAIRS_VERSION if any(e.vector > 1 for e in entries) else FORMAT_VERSION


def _entry(d: Any, layout: str, where: str) -> EntryMeta:
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
        raise QretrainFileError(f"{where}: every manifest tensor needs a name")
    name = d["name"]
    label = f"{where}: tensor {name!r}"
    encoding, dtype = d.get("encoding"), d.get("dtype")
    if encoding not in ENCODINGS or (encoding == "clustered" and layout != "packed"):
        raise QretrainFileError(f"{label} has encoding {encoding!r} in a {layout} file")
    keys = ENTRY_KEYS | ({"cluster"} if encoding == "clustered" or "cluster" in d else set())
    keys |= {"value"} if encoding == "constant" else set()
    if set(d) != keys:
        raise QretrainFileError(f"{label}: manifest keys {sorted(d)}; expected {sorted(keys)}")
    if encoding == "constant" and "cluster" in d:
        raise QretrainFileError(f"{label}: a constant tensor has no cluster fields")
    shape = _shape(d["shape"], label)
    cluster = _cluster(d["cluster"], shape, label) if "cluster" in d else None
    if dtype not in DTYPES or (cluster is not None and dtype != "float32"):
        raise QretrainFileError(f"{label}: dtype {dtype!r} is not allowed here")
    n = math.prod(shape)
    stores_nothing = encoding == "constant" or (encoding == "clustered" and not cluster.bits)
    if stores_nothing and n > MAX_VALUES_WITHOUT_DATA:
        raise QretrainFileError(f"{label} declares {n} values with none stored")
    value = _constant(d["value"], dtype, label) if encoding == "constant" else None
    return EntryMeta(name, encoding, shape, dtype, cluster, value)


def _cluster(d: Any, shape: tuple[int, ...], label: str) -> ClusterMeta:
    if not isinstance(d, dict) or set(d) != CLUSTER_KEYS:
        raise QretrainFileError(f"{label}: cluster fields must be {sorted(CLUSTER_KEYS)}")
    try:
        method, granularity = Method(d["method"]), Granularity(d["granularity"])
    except ValueError as e:
        raise QretrainFileError(f"{label}: {e}") from None
    k, bits, width, sq_error = d["k"], d["bits"], d["width"], d["sq_error"]
    if not _is_int(k) or not 1 <= k <= MAX_K:
        raise QretrainFileError(f"{label}: k must be an int in [1, {MAX_K}]; got {k!r}")
    if not _is_int(width) or not _is_int(bits) or not 1 <= width <= k or bits != index_bits(width):
        raise QretrainFileError(
            f"{label}: codebook width {width!r}, k {k} and bits {bits!r} disagree"
        )
    if (
        isinstance(sq_error, bool)
        or not isinstance(sq_error, (int, float))
        or not (math.isfinite(sq_error) and sq_error >= 0)
    ):
        raise QretrainFileError(f"{label}: sq_error must be finite and >= 0; got {sq_error!r}")
    if granularity is Granularity.CHANNEL and len(shape) < 2:
        raise QretrainFileError(f"{label}: channel granularity needs 2 or more dimensions")
    if granularity is Granularity.PAIRS and (len(shape) < 2 or shape[0] % 2):
        raise QretrainFileError(f"{label}: granularity 'pairs' needs 2 or more dimensions and "
                                f"an even first one; got shape {list(shape)}")  # fmt: skip
    return ClusterMeta(k, method, granularity, bits, float(sq_error), width)


def _constant(value: Any, dtype: str, label: str) -> float | int | bool:
    """A constant's JSON value, representable in its dtype."""
    if dtype == "bool":
        if isinstance(value, bool):
            return value
    elif np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        if _is_int(value) and info.min <= value <= info.max:
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if abs(value) <= float(np.finfo(dtype).max):
            return value
    raise QretrainFileError(f"{label}: constant value {value!r} is not a {dtype}")


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


def _no_attributes(f: h5py.File, where: str) -> None:
    """The file holds its two datasets and nothing else: HDF5 attributes (the format's
    first version kept metadata there) are refused, so no reader sees two stories."""
    for what, obj in (("the file", f), ("'manifest'", f[MANIFEST]), ("'data'", f.get(DATA))):
        names = list(obj.attrs) if obj is not None else []
        if names:
            raise QretrainFileError(
                f"{where}: {what} carries HDF5 attributes ({', '.join(map(repr, names[:3]))}); "
                "a qretrain file holds only 'manifest' and 'data' (docs/FORMAT.md)"
            )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a JSON object naming a key twice is refused (json.loads
    would keep the last value; another reader might keep the first)."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"key {twice!r} appears twice in one object")
    return dict(pairs)


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
