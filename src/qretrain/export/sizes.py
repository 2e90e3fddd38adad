"""The bytes a weight tensor takes in a Core ML package, from its shape and k alone.

Core ML's weight file (``weights/weight.bin``, blob format 2) stores each constant of
10 values or more as a 64-byte header and its data padded to 64 bytes; smaller ones
sit in the program itself. A float32 tensor of n values is one blob of 4n bytes; a
lookup table (``constexpr_lut_to_dense``) is its indices at ``bits`` per value and a
table of 2^bits float32 values (coremltools pads a table of k values to the width its
indices address) per row: one row for a table of the whole tensor, one per output
channel for a codebook per channel; the table is a blob too from 16 values on. A
table of 2-vectors (``vector=2``) has one index per pair of values and twice the
table's values. The rest of the program (its
operations and names) and the package's manifest are not counted here: a planner
measures them by converting the model (``export.formats.coreml_package_bytes``).
"""

from __future__ import annotations

import math

BLOB_HEADER = 64  # bytes before each blob's data
BLOB_ALIGN = 64  # each blob's data is padded to this
LUT_BITS = (1, 2, 3, 4, 6, 8)  # the index widths Core ML stores
IN_FILE_FROM = 10  # values from which coremltools writes a constant to the weight file


def blob_bytes(data_bytes: int) -> int:
    """Bytes one blob of ``data_bytes`` takes in the weight file."""
    return BLOB_HEADER + -(-data_bytes // BLOB_ALIGN) * BLOB_ALIGN


def lut_bits(k: int) -> int:
    """The narrowest index width Core ML stores that addresses ``k`` values."""
    if not 1 <= k <= 2 ** LUT_BITS[-1]:
        raise ValueError(f"a Core ML lookup table holds 1 to 256 values; got k={k}")
    return next(b for b in LUT_BITS if 2**b >= k)


def coreml_blobs(numel: int, k: int | None = None, rows: int = 1, vector: int = 1) -> list[int]:
    """Bytes of each weight-file blob of a tensor of ``numel`` values: float32 (``k``
    None) or a lookup table of ``k`` entries of ``vector`` values per row, ``rows``
    rows (1: the whole tensor's; the output channels: one per channel): indices, then
    the tables when they hold the 10 values a blob needs."""
    if k is None:
        return [blob_bytes(4 * numel)] if numel >= IN_FILE_FROM else []
    bits = lut_bits(k)
    blobs = [blob_bytes(math.ceil(numel // vector * bits / 8))]
    if rows * 2**bits * vector >= IN_FILE_FROM:
        blobs.append(blob_bytes(4 * rows * 2**bits * vector))
    return blobs


def coreml_tensor_bytes(numel: int, k: int | None = None, rows: int = 1, vector: int = 1) -> int:
    """Package bytes of a tensor of ``numel`` values, float32 or tables of ``k`` entries
    of ``vector`` values in ``rows`` rows: its blobs, and the float32 values of a
    constant too small for the weight file (4 bytes each, in the program)."""
    values = numel if k is None else rows * 2 ** lut_bits(k) * vector  # float32 values held
    return sum(coreml_blobs(numel, k, rows, vector)) + (4 * values if values < IN_FILE_FROM else 0)
