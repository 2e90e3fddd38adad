"""Decoding a checked entry's bytes into a tensor and its clustering.

``storage.schema`` has checked every declared shape, dtype and length before these
run, and ``decode_bytes`` says what decoding them will hold, so that the loader can
refuse a file claiming more than its size allows (``qretrain._memory``) before
reading its data. Here the data itself is checked: each index within its row's
values, each codebook row ascending and finite, sizes within the codebook.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from qretrain.cluster.options import Granularity
from qretrain.cluster.tensor import ClusteredTensor, nearest_pairs, pair_index_shape, to_pairs
from qretrain.errors import QretrainFileError
from qretrain.storage.bitpack import unpack_indices
from qretrain.storage.schema import EntryMeta

# Every multi-byte value in /data is little-endian.
_LITTLE = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "int64": "<i8", "int32": "<i4",
           "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?"}  # fmt: skip


# Decoding one clustered tensor holds, per value and for a moment, at most 12 bytes:
# its indices as int64 (checked against the row sizes, then for the gather) and a bool
# mask or, in the paper layout, the gathered float32 values it checks.
_TRANSIENT_PER_VALUE = 12


def decode_bytes(entries: list[EntryMeta], data_bytes: int) -> int:
    """The memory loading these entries holds at its busiest: /data as read, every
    decoded tensor twice (the state dict and the model it is loaded into), clustered
    tensors' uint8 indices and codebooks, and the largest tensor's moment of decoding
    (or of its bytes being hashed)."""
    held, moment = data_bytes, 0
    for entry in entries:
        nbytes = entry.numel * np.dtype(entry.dtype).itemsize
        held += 2 * nbytes
        if entry.cluster is not None:
            held += entry.numel + entry.groups * (entry.cluster.width * 4 + 8)
            moment = max(moment, _TRANSIENT_PER_VALUE * entry.numel)
        moment = max(moment, 2 * nbytes)
    return held + moment


def entry_parts(entry: EntryMeta, data: np.ndarray) -> dict[str, np.ndarray]:
    """The uint8 slices of ``data`` (all of /data) holding each of the entry's parts."""
    parts, at = {}, entry.offset
    for part, n in entry.segments():
        parts[part] = data[at : at + n]
        at += n
    return parts


def decode_entry(entry: EntryMeta, data: np.ndarray, label: str):
    """(tensor, ClusteredTensor or None) of one entry, from all of /data."""
    parts = entry_parts(entry, data)
    clustered = None
    if entry.encoding == "constant":
        tensor = torch.full(entry.shape, entry.value, dtype=getattr(torch, entry.dtype))
    elif entry.encoding == "clustered":
        clustered = _packed(entry, parts, label)
        tensor = clustered.decode()
    else:
        raw = parts["values"]
        values = raw != 0 if entry.dtype == "bool" else raw.view(_LITTLE[entry.dtype])
        values = values.astype(entry.dtype)  # a copy, aligned, in native byte order
        tensor = torch.from_numpy(values).reshape(entry.shape)
        if entry.cluster is not None:
            clustered = _from_values(entry, tensor, _codebook(entry, parts), label)
    return tensor.reshape(entry.shape), clustered


def _codebook(entry: EntryMeta, parts: dict[str, np.ndarray]) -> torch.Tensor:
    """(G, K) values, or (1, K, 2) for a codebook of pairs."""
    shape = (entry.groups, entry.cluster.width) + ((entry.vector,) if entry.vector > 1 else ())
    values = parts["codebook"].view("<f4").astype(np.float32).reshape(shape)
    return torch.from_numpy(values.copy())


def _packed(entry: EntryMeta, parts: dict[str, np.ndarray], label: str) -> ClusteredTensor:
    """A packed entry's ClusteredTensor, every index checked against its row."""
    codebook = _codebook(entry, parts)
    cluster = entry.cluster
    if cluster.granularity is Granularity.CHANNEL:
        sizes = torch.from_numpy(parts["sizes"].view("<u2").astype(np.int64))
    else:
        sizes = torch.tensor([cluster.width], dtype=torch.int64)
    _check_codebook(codebook, sizes, label)
    count = entry.numel // entry.vector
    if cluster.bits:
        indices = unpack_indices(parts["indices"], cluster.bits, count)
    else:
        indices = np.zeros(count, dtype=np.uint8)
    indices = torch.from_numpy(indices)
    rows = indices.reshape(entry.groups, -1)
    if rows.numel() and bool((rows.to(torch.int64) >= sizes[:, None]).any()):
        raise QretrainFileError(f"{label}: an index exceeds its codebook row")
    return ClusteredTensor(codebook, sizes, indices.reshape(_index_shape(entry)), cluster.k,
                           cluster.method, cluster.granularity, cluster.sq_error)  # fmt: skip


def _index_shape(entry: EntryMeta) -> tuple[int, ...]:
    """The shape of an entry's indices: its own, dimension 0 halved for pairs."""
    return pair_index_shape(entry.shape) if entry.vector > 1 else entry.shape


def _from_values(entry: EntryMeta, tensor: torch.Tensor, codebook: torch.Tensor,
                 label: str) -> ClusteredTensor:  # fmt: skip
    """Rebuild a paper-layout tensor's indices from its values and sorted codebook;
    every value must be one of its row's codebook values."""
    if entry.vector > 1:
        return _pairs_from_values(entry, tensor, codebook, label)
    sizes = torch.tensor(
        [int(torch.unique_consecutive(row).numel()) for row in codebook], dtype=torch.int64
    )
    _check_codebook(codebook, sizes, label)
    rows = tensor.float().reshape(entry.groups, -1).contiguous()
    indices = torch.searchsorted(codebook, rows).clamp_(max=codebook.shape[1] - 1)
    if not torch.equal(torch.gather(codebook, 1, indices), rows):
        raise QretrainFileError(f"{label}: its values are not all in its codebook")
    cluster = entry.cluster
    return ClusteredTensor(codebook, sizes, indices.to(torch.uint8).reshape(entry.shape),
                           cluster.k, cluster.method, cluster.granularity,
                           cluster.sq_error)  # fmt: skip


def _pairs_from_values(entry: EntryMeta, tensor: torch.Tensor, codebook: torch.Tensor,
                       label: str) -> ClusteredTensor:  # fmt: skip
    """A paper-layout tensor of pairs: each pair of values must be one of the
    codebook's (1, K, 2) pairs."""
    sizes = torch.tensor([codebook.shape[1]], dtype=torch.int64)
    _check_codebook(codebook, sizes, label)
    points = to_pairs(tensor.float())
    index = nearest_pairs(points, codebook[0])
    if not torch.equal(codebook[0][index], points):
        raise QretrainFileError(f"{label}: its values are not all pairs of its codebook")
    cluster = entry.cluster
    return ClusteredTensor(codebook, sizes, index.to(torch.uint8).reshape(_index_shape(entry)),
                           cluster.k, cluster.method, cluster.granularity,
                           cluster.sq_error)  # fmt: skip


def _check_codebook(codebook: torch.Tensor, sizes: torch.Tensor, label: str) -> None:
    """Rows (G, K): sizes[g] finite values strictly ascending, then the last repeated;
    a codebook of pairs (1, K, 2): finite, in any order."""
    width = codebook.shape[1]
    if not bool(torch.isfinite(codebook).all()):
        raise QretrainFileError(f"{label}: its codebook holds non-finite values")
    if sizes.numel() and (bool(((sizes < 1) | (sizes > width)).any()) or int(sizes.max()) != width):
        raise QretrainFileError(f"{label}: codebook sizes must be in [1, {width}]")
    if codebook.dim() == 3:
        return
    steps = codebook.diff(dim=1)  # (G, K-1)
    used = torch.arange(width - 1)[None, :] < (sizes[:, None] - 1)
    if bool((steps[used] <= 0).any()) or bool((steps[~used] != 0).any()):
        raise QretrainFileError(f"{label}: codebook rows must ascend, then repeat their last value")


def tensor_bytes_le(tensor: torch.Tensor) -> bytes:
    """A tensor's values as /data stores them: C order, little-endian."""
    data = tensor.detach().cpu().contiguous().numpy()
    dtype = str(tensor.dtype).removeprefix("torch.")
    return data.astype(_LITTLE[dtype], copy=False).tobytes()


def tensors_sha256(tensors) -> str:
    """SHA-256 over every tensor's little-endian C-order bytes, in order."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor_bytes_le(tensor))
    return digest.hexdigest()
