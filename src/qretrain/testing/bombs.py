"""Small inputs that claim a lot: what a stranger would craft to exhaust memory.

Each writer streams what it compresses (a chunk of zeros at a time), so making a file
that expands to gigabytes costs its writer a few megabytes. Tests use them with
modest claims; ``benchmarks/bench_memory.py`` with those of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from qretrain.storage.seal import USERBLOCK, write_seal

_CHUNK = 1 << 22  # bytes of zeros compressed at a time
_LIBVER = ("v110", "latest")  # as qretrain writes its files


def zeros(nbytes: int) -> Iterator[bytes]:
    """``nbytes`` zero bytes in chunks of at most ``_CHUNK``."""
    block = bytes(min(nbytes, _CHUNK))
    while nbytes > 0:
        yield block[: min(nbytes, _CHUNK)]
        nbytes -= _CHUNK


def model_file(path: str | Path, spec: str, *, kwargs: dict | None = None,
               contract: dict | None = None, sound: bool = False) -> Path:  # fmt: skip
    """A sealed qretrain file of ``spec`` whose every tensor is the constant 0 (or
    False): a few kilobytes however large the architecture. ``sound`` computes the
    true SHA-256 of the decoded tensors (one tensor at a time), so that a loader
    without a memory budget loads it; otherwise the checksum is a placeholder, which
    a loader with one never reaches."""
    from qretrain.models.specs import Origin, make_builder  # torch-heavy: only when used

    with torch.device("meta"):
        model = make_builder(spec, kwargs or {}, Origin.USER, trust_code=False)()
    entries, digest = [], hashlib.sha256()
    for name, tensor in model.state_dict().items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        value = False if dtype == "bool" else 0
        entries.append({"name": name, "encoding": "constant", "shape": list(tensor.shape),
                        "dtype": dtype, "value": value})  # fmt: skip
        if sound:  # zeros are zeros in every byte order
            for block in zeros(tensor.numel() * tensor.element_size()):
                digest.update(block)
    manifest = _manifest(spec, kwargs, contract, entries, digest.hexdigest() if sound else "0" * 64)
    return write_model(path, manifest, b"")


def _manifest(spec: str, kwargs: dict | None, contract: dict | None, entries: list[dict],
              sha: str) -> dict[str, Any]:  # fmt: skip
    return {"format": "qretrain", "format_version": 3, "layout": "packed",
            "qretrain_version": "0", "plans": [], "sha256": sha, "tensors": entries,
            "arch": {"spec": spec, "kwargs": kwargs or {}, "contract": contract}}  # fmt: skip


def write_model(path: str | Path, manifest: dict, data: bytes) -> Path:
    """A sealed file holding ``manifest`` and ``data`` as qretrain lays them out."""
    path = Path(path)
    with h5py.File(path, "w", userblock_size=USERBLOCK, libver=_LIBVER) as f:
        _dataset(f, "manifest", np.frombuffer(json.dumps(manifest).encode(), np.uint8))
        _dataset(f, "data", np.frombuffer(data, np.uint8))
    write_seal(path)
    return path


def _dataset(f: h5py.File, name: str, payload: np.ndarray) -> None:
    if not payload.size:  # HDF5 cannot chunk an empty dataset
        f.create_dataset(name, data=payload)
        return
    f.create_dataset(name, data=payload, chunks=(min(payload.size, 1 << 18),),
                     compression="gzip", compression_opts=4)  # fmt: skip


def png(path: str | Path, width: int, height: int, mode: str = "RGB") -> Path:
    """A PNG of ``width`` x ``height`` black pixels (``mode`` RGB or L, 8 bits), its
    rows compressed as they are made: 12000 x 12000 RGB is about 420 KB."""
    channels = {"L": 1, "RGB": 3}[mode]
    colour = {"L": 0, "RGB": 2}[mode]
    row = bytes(1 + width * channels)  # filter byte 0, then the row's samples
    squash = zlib.compressobj(9)
    idat = bytearray()
    for _ in range(height):
        idat += squash.compress(row)
    idat += squash.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b""))  # fmt: skip
    return Path(path)


def npz(path: str | Path, shape: tuple[int, ...], dtype: str = "uint8", *,
        stored: bool = True) -> Path:  # fmt: skip
    """An ``.npz`` whose ``x`` is zeros of ``shape``, deflated: about 1,000 times
    smaller than it inflates. ``stored=False`` writes the header alone (the zip entry
    holds fewer bytes than the header claims)."""
    header = npy_header(shape, np.dtype(dtype))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(header)
            if stored:
                for block in zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize):
                    member.write(block)
    return Path(path)


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The bytes numpy writes before an array of ``shape`` and ``dtype`` (.npy 1.0)."""

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": tuple(shape)})  # fmt: skip
    return buffer.getvalue()  # magic, version and header, padded as numpy writes them


def idx(path: str | Path, dims: tuple[int, ...], *, stored: bool = True) -> Path:
    """An IDX file of uint8 zeros with ``dims`` in its header; gzip when ``path`` ends
    in ``.gz``. ``stored=False`` writes the header alone (a claim, no data)."""
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path = Path(path)
    opener = gzip.open(path, "wb", compresslevel=9) if path.suffix == ".gz" else open(path, "wb")
    with opener as f:
        f.write(header)
        if stored:
            for block in zeros(int(np.prod(dims))):
                f.write(block)
    return path


def csv_gz(path: str | Path, rows: int, side: int = 28) -> Path:
    """A gzip CSV of ``rows`` black ``side`` x ``side`` images with a label column."""
    line = ("0," * (side * side) + "0\n").encode()
    per_block = max(1, _CHUNK // len(line))  # rows written at a time
    with gzip.open(path, "wb", compresslevel=9) as f:
        for start in range(0, rows, per_block):
            f.write(line * min(per_block, rows - start))
    return Path(path)
