"""The file seal: a SHA-256 of a whole model file, kept in its HDF5 user block.

HDF5 leaves the first ``USERBLOCK`` bytes of a file to its user and ignores them, so
plain ``h5py`` still opens a sealed file. qretrain writes there::

    bytes 0-15   MAGIC (format name and seal version)
    bytes 16-47  SHA-256 of every byte after the user block
    bytes 48-55  total file length, little-endian uint64
    the rest     zeros

``check_seal`` runs before any HDF5 parsing: a truncated file, a flipped byte or an
attribute edited with another tool is refused before libhdf5 reads a structure of it.
The seal detects damage; it is no signature, so a file crafted on purpose can carry
a valid one, and the loader still checks everything else as untrusted input.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from qretrain.errors import QretrainFileError

USERBLOCK = 512  # the smallest user block HDF5 allows
MAGIC = b"qretrain-seal-01"
_CHUNK = 1 << 20


def _digest(f, length: int) -> bytes:
    sha = hashlib.sha256()
    f.seek(USERBLOCK)
    remaining = length - USERBLOCK
    while remaining > 0:
        block = f.read(min(_CHUNK, remaining))
        if not block:
            break
        sha.update(block)
        remaining -= len(block)
    return sha.digest()


def write_seal(path: str | Path) -> str:
    """Seal the HDF5 file at ``path`` (written with ``userblock_size=USERBLOCK``).

    Returns the hex SHA-256, which sidecar records name to pair with this file.
    """
    with open(path, "r+b") as f:
        length = os.fstat(f.fileno()).st_size
        digest = _digest(f, length)
        header = MAGIC + digest + length.to_bytes(8, "little")
        f.seek(0)
        f.write(header.ljust(USERBLOCK, b"\0"))
    return digest.hex()


def check_seal(path: str | Path) -> str:
    """The file's hex SHA-256; QretrainFileError if the seal is missing or broken."""
    where = repr(str(path))
    with open(path, "rb") as f:
        length = os.fstat(f.fileno()).st_size
        header = f.read(USERBLOCK)
        if len(header) < USERBLOCK or not header.startswith(MAGIC):
            if header.startswith(b"\x89HDF"):
                raise QretrainFileError(
                    f"{where} is an HDF5 file without a qretrain seal (not written by "
                    "qretrain >= 0.2, or edited by another tool); save it again with qretrain"
                )
            raise QretrainFileError(f"{where} is not a qretrain model file (no seal)")
        if any(header[56:]):
            raise QretrainFileError(f"{where} fails its SHA-256 seal: its header was changed")
        stored = int.from_bytes(header[48:56], "little")
        if stored != length:
            raise QretrainFileError(
                f"{where} is {length} bytes long but was written with {stored}: truncated or "
                "appended to; copy it again"
            )
        digest = header[16:48]
        if _digest(f, length) != digest:
            raise QretrainFileError(
                f"{where} fails its SHA-256 seal: corrupted or edited after it was written"
            )
    return digest.hex()


def file_sha256(path: str | Path) -> str:
    """The seal's hex SHA-256 as recorded in the file (read, not recomputed)."""
    with open(path, "rb") as f:
        header = f.read(USERBLOCK)
    return header[16:48].hex() if header.startswith(MAGIC) else ""
