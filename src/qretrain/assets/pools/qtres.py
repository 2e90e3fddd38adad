"""A reader of Qt's compiled resource bundles (``.rcc``), for the pictures inside them.

Some Debian packages ship their images only inside such bundles (GCompris does). The
format (Qt's ``rcc`` tool, versions 1-3): a header ``qres``, version, and the offsets of
three tables: a tree of 14-byte (v1) or 22-byte entries (name offset, flags, then a
directory's child count and first child, or a file's locale and data offset), the
names (UTF-16 with a length and a hash), and the data (each blob preceded by its
length; zlib-compressed ones also by their unpacked length).

The bundle is read like any file from outside: every offset and length is checked
against the file before it is used, each tree entry is visited at most once (a cycle
cannot loop), and an unpacked blob may not exceed ``max_blob`` however large its
header says it is. zstd-compressed entries (Qt 5.13's ``--compress-algo zstd``) are
refused with a message, as is anything else not as described.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from qretrain.errors import QretrainFileError

MAGIC = b"qres"
COMPRESSED, DIRECTORY, COMPRESSED_ZSTD = 0x01, 0x02, 0x04  # an entry's flags
MAX_BLOB = 64 << 20  # the largest unpacked entry read (bytes)


def read_bundle(path: Path, suffixes: tuple[str, ...] = (), max_blob: int = MAX_BLOB,
                fix: str = "reinstall the package that installed it") -> dict[str, bytes]:  # fmt: skip
    """The files of the bundle at ``path`` by their paths inside it ("/a/b.webp"),
    only those ending with one of ``suffixes`` when given (case-insensitive).

    Raises QretrainFileError with one line, ending in ``fix``, for a file that is not
    such a bundle or is damaged.
    """
    data = Path(path).read_bytes()
    try:
        return _Bundle(data, max_blob).files(tuple(s.lower() for s in suffixes))
    except _Damaged as e:
        raise QretrainFileError(
            f"{path} is not a readable Qt resource bundle ({e}); expected the .rcc file "
            f"of a Debian package: {fix}"
        ) from None


class _Damaged(Exception):
    pass


class _Bundle:
    def __init__(self, data: bytes, max_blob: int):
        self.data, self.max_blob = data, max_blob
        if data[:4] != MAGIC:
            raise _Damaged("no 'qres' header")
        self.version, self.tree, self.blobs, self.names = self._unpack(">IIII", 4)
        if not 1 <= self.version <= 3:
            raise _Damaged(f"format version {self.version}, expected 1 to 3")
        self.entry_size = 14 if self.version == 1 else 22

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > len(self.data):
            raise _Damaged(
                f"an offset ({offset}) past the end of the file ({len(self.data)} bytes)"
            )
        return struct.unpack_from(fmt, self.data, offset)

    def _name(self, offset: int) -> str:
        (length,) = self._unpack(">H", self.names + offset)
        start = self.names + offset + 6  # length (2), hash (4)
        if start + 2 * length > len(self.data):
            raise _Damaged("a name past the end of the file")
        return self.data[start : start + 2 * length].decode("utf-16-be", errors="replace")

    def _blob(self, offset: int, flags: int) -> bytes:
        (length,) = self._unpack(">I", self.blobs + offset)
        start = self.blobs + offset + 4
        if start + length > len(self.data):
            raise _Damaged(f"an entry of {length} bytes past the end of the file")
        blob = self.data[start : start + length]
        if flags & COMPRESSED_ZSTD:
            raise _Damaged("a zstd-compressed entry (only zlib is read)")
        if not flags & COMPRESSED:
            return blob
        if length < 4:
            raise _Damaged("a compressed entry without its unpacked length")
        (unpacked,) = struct.unpack_from(">I", blob)
        if unpacked > self.max_blob:
            raise _Damaged(f"an entry claims {unpacked} bytes unpacked, more than {self.max_blob}")
        inflater = zlib.decompressobj()
        try:  # never more than the claim, whatever the stream holds (0 would mean no limit)
            out = inflater.decompress(blob[4:], unpacked + 1)
        except zlib.error as e:
            raise _Damaged(f"a compressed entry does not inflate: {e}") from None
        if len(out) != unpacked or inflater.unconsumed_tail:
            raise _Damaged(f"a compressed entry unpacks to other than its {unpacked} bytes")
        return out

    def files(self, suffixes: tuple[str, ...]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        seen: set[int] = set()
        stack = [(0, "")]  # (entry index, its folder's path); entry 0 is the root
        count = (len(self.data) - self.tree) // self.entry_size
        while stack:
            index, folder = stack.pop()
            if index in seen or not 0 <= index < count:
                raise _Damaged(f"tree entry {index} is referenced twice or lies outside the tree")
            seen.add(index)
            at = self.tree + index * self.entry_size
            name_offset, flags = self._unpack(">IH", at)
            path = f"{folder}/{self._name(name_offset)}" if index else ""
            if flags & DIRECTORY:
                children, first = self._unpack(">II", at + 6)
                if first + children > count:  # checked before anything is allocated for them
                    raise _Damaged(f"a folder of {children} entries past the end of the tree")
                stack.extend((first + i, path) for i in reversed(range(children)))
            elif path.lower().endswith(suffixes) or not suffixes:
                (offset,) = self._unpack(">I", at + 10)
                found[path] = self._blob(offset, flags)
        return found
