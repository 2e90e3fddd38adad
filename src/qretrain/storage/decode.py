"""Decoding a checked entry's data into a tensor and its clustering.

``storage.schema`` has checked every declared shape, dtype and size before these
run; here the data itself is checked: each index within its row's values, each
codebook row ascending and finite, sizes within the codebook.
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import torch

from qretrain.cluster.options import Granularity
from qretrain.cluster.tensor import ClusteredTensor
from qretrain.errors import QretrainFileError
from qretrain.storage.bitpack import unpack_indices
from qretrain.storage.schema import EntryMeta


def read_packed(obj: h5py.Group, entry: EntryMeta, label: str) -> ClusteredTensor:
    """A packed entry's ClusteredTensor, every index checked against its row."""
    codebook = torch.from_numpy(np.asarray(obj["codebook"][()], dtype=np.float32))
    cluster = entry.cluster
    if cluster.granularity is Granularity.CHANNEL:
        sizes = torch.from_numpy(obj["sizes"][()].astype(np.int64))
    else:
        sizes = torch.tensor([entry.width], dtype=torch.int64)
    _check_codebook(codebook, sizes, label)
    if cluster.bits:
        indices = unpack_indices(np.asarray(obj["indices"][()]), cluster.bits, entry.numel)
    else:
        indices = np.zeros(entry.numel, dtype=np.uint8)
    indices = torch.from_numpy(indices)
    rows = indices.reshape(entry.groups, -1)
    if rows.numel() and bool((rows.to(torch.int64) >= sizes[:, None]).any()):
        raise QretrainFileError(f"{label}: an index exceeds its codebook row")
    return ClusteredTensor(codebook, sizes, indices.reshape(entry.shape), cluster.k,
                           cluster.method, cluster.granularity, cluster.sq_error)  # fmt: skip


def indices_from_values(entry: EntryMeta, tensor: torch.Tensor, codebook: np.ndarray,
                        label: str) -> ClusteredTensor:  # fmt: skip
    """Rebuild a paper-layout tensor's indices from its values and sorted codebook;
    every value must be one of its row's codebook values."""
    codebook = torch.from_numpy(np.asarray(codebook, dtype=np.float32))
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


def _check_codebook(codebook: torch.Tensor, sizes: torch.Tensor, label: str) -> None:
    """Rows (G, K): sizes[g] finite values strictly ascending, then the last repeated."""
    width = codebook.shape[1]
    if not bool(torch.isfinite(codebook).all()):
        raise QretrainFileError(f"{label}: its codebook holds non-finite values")
    if bool(((sizes < 1) | (sizes > width)).any()) or int(sizes.max()) != width:
        raise QretrainFileError(f"{label}: codebook sizes must be in [1, {width}]")
    steps = codebook.diff(dim=1)  # (G, K-1)
    used = torch.arange(width - 1)[None, :] < (sizes[:, None] - 1)
    if bool((steps[used] <= 0).any()) or bool((steps[~used] != 0).any()):
        raise QretrainFileError(f"{label}: codebook rows must ascend, then repeat their last value")


def tensor_sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous().numpy()
    return hashlib.sha256(memoryview(data).cast("B") if data.size else b"").hexdigest()
