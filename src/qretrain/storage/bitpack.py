"""Bit-packing of uint8 indices at b in [1, 8] bits each.

Eight indices of b bits fill exactly b bytes, so packing works on groups of eight:
each group becomes one little-endian 64-bit word of which the low b bytes are kept.
The packed size is ceil(n / 8) * b bytes: at most b - 1 bytes over n * b / 8.
"""

from __future__ import annotations

import numpy as np

from qretrain.errors import QretrainError

_SHIFTS = np.arange(8, dtype=np.uint64)
_GROUPS_PER_CHUNK = 1 << 19  # bounds the uint64 temporaries to a few MiB


def packed_size(n: int, bits: int) -> int:
    return -(-n // 8) * bits


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """indices (n,) uint8, each < 2**bits -> (ceil(n/8) * bits,) uint8."""
    if not 1 <= bits <= 8:
        raise QretrainError(f"bits must be in [1, 8]; got {bits}")
    flat = indices.reshape(-1)
    groups = -(-flat.size // 8)
    out = np.empty((groups, bits), dtype=np.uint8)
    shifts = _SHIFTS * np.uint64(bits)
    for g0 in range(0, groups, _GROUPS_PER_CHUNK):
        g1 = min(groups, g0 + _GROUPS_PER_CHUNK)
        chunk = np.zeros((g1 - g0) * 8, dtype=np.uint64)
        part = flat[g0 * 8 : g1 * 8]
        chunk[: part.size] = part
        words = np.bitwise_or.reduce(chunk.reshape(-1, 8) << shifts, axis=1)
        out[g0:g1] = words.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :bits]
    return out.reshape(-1)


def unpack_indices(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of ``pack_indices``: (ceil(n/8) * bits,) uint8 -> (n,) uint8."""
    if not 1 <= bits <= 8:
        raise QretrainError(f"bits must be in [1, 8]; got {bits}")
    groups = -(-n // 8)
    if packed.size != groups * bits:
        raise QretrainError(
            f"packed indices hold {packed.size} bytes; {n} indices at {bits} bits need "
            f"{groups * bits}"
        )
    rows = packed.reshape(groups, bits)
    out = np.empty(groups * 8, dtype=np.uint8)
    shifts = _SHIFTS * np.uint64(bits)
    mask = np.uint64((1 << bits) - 1)
    for g0 in range(0, groups, _GROUPS_PER_CHUNK):
        g1 = min(groups, g0 + _GROUPS_PER_CHUNK)
        raw = np.zeros((g1 - g0, 8), dtype=np.uint8)
        raw[:, :bits] = rows[g0:g1]
        words = raw.view("<u8")  # (groups, 1)
        out[g0 * 8 : g1 * 8] = ((words >> shifts) & mask).reshape(-1)
    return out[:n]
