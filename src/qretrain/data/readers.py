"""Readers for image data on disk: IDX, .npz, CSV and image files.

Readers return raw arrays (uint8 or float images in [0, 1], labels as int64) and do
no fitting; ``qretrain.data.sets`` fits them to a model's input contract.

Every reader learns what it will allocate before allocating it, and refuses more than
``qretrain._memory`` allows: an IDX or ``.npz`` header's claim against the file's
size (gzip and zip inflate up to 1,000 times), the CSV text a ``.gz`` inflates to,
an image's pixel count (read from its header, before decoding).
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from qretrain._memory import DATA_RATIO, check_decoded, check_pixels, file_budget, pixel_limit
from qretrain.errors import QretrainError

logger = logging.getLogger(__name__)

TRANSPARENT_FILL = (127, 127, 127)  # mid-grey, near the mean of most models' inputs
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# A CSV row is one image: 1024 x 1024 pixels of up to "255," each, and a label.
_MAX_CSV_LINE = 4 * 1024 * 1024 + 64
_GZIP_BLOCK = 1 << 20


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (raw or gzip): images (N, H, W) or labels (N,), as stored.

    The header's dimensions are checked before the data is read: against the file's
    length when raw, against what its size may inflate to when gzip."""
    path = Path(path)
    size = path.stat().st_size
    with _open(path) as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES:
            raise QretrainError(f"{str(path)!r} is not an IDX file (bad magic number)")
        header = f.read(4 * magic[3])
        if len(header) < 4 * magic[3]:
            raise QretrainError(f"{str(path)!r} is truncated: its header ends early")
        dims = [int.from_bytes(header[i : i + 4], "big") for i in range(0, len(header), 4)]
        dtype = np.dtype(_IDX_TYPES[magic[2]])
        expected = math.prod(dims) * dtype.itemsize
        if path.suffix == ".gz":
            check_decoded(f"{str(path)!r} (IDX of {dims} {dtype.name})", expected, size,
                          DATA_RATIO)  # fmt: skip
        elif size - 4 - len(header) != expected:
            raise _idx_length(path, dims, expected, size - 4 - len(header))
        body = f.read(expected + 1)  # one byte more: a padded file is refused
    if len(body) != expected:
        raise _idx_length(path, dims, expected, len(body))
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _idx_length(path: Path, dims: list[int], expected: int, held: int) -> QretrainError:
    return QretrainError(
        f"{str(path)!r} is truncated or padded: header says {dims} ({expected} bytes), "
        f"file holds {held}"
    )


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (N, H, W), (N, H, W, C) or (N, C, H, W) and optional ``y`` (N,).

    Each array's header is read first, and the arrays together may claim no more
    than the file's size allows: numpy allocates what the header says, and a zip
    member of zeros inflates 1,000-fold."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise QretrainError(f"{str(path)!r} is not an .npz file (a zip archive of .npy arrays)")
    with zipfile.ZipFile(path) as archive:
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}
        if "x" not in members:
            raise QretrainError(f"{str(path)!r} has no array 'x' (found: {', '.join(members)})")
        claims = {key: _npy_bytes(archive, members[key]) for key in ("x", "y") if key in members}
    check_decoded(f"{str(path)!r} (arrays {', '.join(f'{k} {v[1]}' for k, v in claims.items())})",
                  sum(nbytes for nbytes, _ in claims.values()), path.stat().st_size,
                  DATA_RATIO)  # fmt: skip
    with np.load(path, allow_pickle=False) as f:
        return f["x"], (f["y"] if "y" in claims else None)


def _npy_bytes(archive: zipfile.ZipFile, name: str) -> tuple[int, str]:
    """(bytes, "shape dtype") that the .npy member ``name`` declares, from its header."""
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)  # fmt: skip
        shape, _, dtype = read(member)
    return math.prod(shape) * dtype.itemsize, f"{tuple(shape)} {dtype}"


def read_csv(
    path: str | Path, label_column: str | int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of square grayscale pixels (0-255) plus a label column.

    The label column is ``label_column`` (name or index, -1 for the last), else a
    column named "label" when the file has a header, else the first column.

    Rows become uint8 pixels one at a time (not a table of Python strings, some 60
    bytes a cell); a ``.gz`` file's text is measured before it is parsed, and may be
    no longer than the file's size allows (``qretrain._memory``), and no line longer
    than one 1024 x 1024 image.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    if gz:
        _check_gzip_length(path)
    opener = gzip.open(path, "rt", newline="") if gz else open(path, newline="")
    try:
        with opener as f:
            return _csv_rows(path, csv.reader(_lines(f, path)), label_column)
    except csv.Error as e:
        raise QretrainError(f"{str(path)!r} is not CSV ({e})") from None


def _csv_rows(path: Path, reader: Iterator[list[str]], label_column: str | int | None):
    first = next(reader, None)
    if first is None:
        raise QretrainError(f"{str(path)!r} is empty")
    header = None
    if any(not cell.strip().lstrip("-").replace(".", "", 1).isdigit() for cell in first):
        header = first
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise QretrainError(f"{str(path)!r} has no column {label_column!r}")
        label_column = header.index(label_column)
    elif label_column is None:
        label_column = header.index("label") if header and "label" in header else 0
    width = len(first)
    column = label_column % width if -width <= label_column < width else None
    side = math.isqrt(width - 1)
    if column is None or side * side != width - 1:
        raise QretrainError(
            f"{str(path)!r}: {width - 1} pixel columns do not form a square image"
            if column is not None
            else f"{str(path)!r} has no column {label_column}"
        )
    labels, pixels = [], []
    for number, row in enumerate(reader if header else _prepend(first, reader), start=1):
        try:
            values = np.array(row, dtype=np.float64)
        except ValueError as e:
            raise QretrainError(f"{str(path)!r}: every cell must be a number ({e})") from e
        if len(values) != width:
            raise QretrainError(
                f"{str(path)!r}: row {number} has {len(values)} cells, the first {width}"
            )
        labels.append(values[column])
        pixels.append(np.delete(values, column).clip(0, 255).astype(np.uint8))
    if not pixels:
        raise QretrainError(f"{str(path)!r} holds a header and no rows")
    return np.stack(pixels).reshape(-1, side, side), np.array(labels).astype(np.int64)


def _prepend(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def _lines(f: IO[str], path: Path) -> Iterator[str]:
    """The lines of ``f``, none read past ``_MAX_CSV_LINE`` characters: one line of
    zeros could otherwise hold a billion cells."""
    while line := f.readline(_MAX_CSV_LINE + 1):
        if len(line) > _MAX_CSV_LINE:
            raise QretrainError(
                f"{str(path)!r} has a line over {_MAX_CSV_LINE:,} characters: not rows of "
                "image pixels (one image of up to 1024 x 1024 per row)"
            )
        yield line


def _check_gzip_length(path: Path) -> None:
    """Inflate ``path`` without keeping it, as far as its size allows: gzip makes a
    gigabyte of "0," out of one megabyte."""
    size, total = path.stat().st_size, 0
    allowed = file_budget(size, DATA_RATIO)
    with gzip.open(path, "rb") as f:
        while block := f.read(_GZIP_BLOCK):
            total += len(block)
            if total > allowed:
                check_decoded(f"{str(path)!r} (CSV text)", total, size, DATA_RATIO,
                              at_least=True)  # fmt: skip


def flatten(img: Image.Image) -> Image.Image:
    """``img`` as "L" (grayscale modes) or "RGB", its transparent pixels on
    TRANSPARENT_FILL: dropping the alpha channel would show whatever colour a program
    left under them."""
    gray = img.mode in ("1", "L", "LA", "I", "I;16", "F")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        canvas = Image.new("RGBA", img.size, (*TRANSPARENT_FILL, 255))
        canvas.alpha_composite(img.convert("RGBA"))
        img = canvas
    return img.convert("L" if gray else "RGB")


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open(path)``, refused (QretrainError) before anything is decoded when
    the header's width x height exceeds ``qretrain._memory.pixel_limit()``."""
    with warnings.catch_warnings():
        # Pillow warns past 89 M pixels and refuses past twice that; qretrain's own
        # limit is lower and its error says how to proceed.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as e:
            raise QretrainError(
                f"image {str(path)!r}: {e}; qretrain decodes at most {pixel_limit():,} pixels: "
                "downscale it"
            ) from None
    with img:
        check_pixels(f"image {str(path)!r}", *img.size)
        yield img


def read_image(path: str | Path) -> torch.Tensor | None:
    """An image file as float (C, H, W) in [0, 1], C in {1, 3}, transparent pixels
    on TRANSPARENT_FILL (``flatten``); None if unreadable, QretrainError if larger
    than qretrain decodes (``open_image``)."""
    try:
        with open_image(path) as img:
            # A writable copy, made while Pillow's images are still open; they go with
            # the block, before the float copy (four times larger) is made.
            array = np.array(flatten(img), dtype=np.uint8)
    except QretrainError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        logger.warning("skipping unreadable image %s: %s", path, e)
        return None
    tensor = torch.from_numpy(array)
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor.float().div_(255)


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder``, recursively, in sorted order."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def as_nchw(x: np.ndarray) -> torch.Tensor:
    """An image array (N, H, W), (N, H, W, C) or (N, C, H, W), C in {1, 3} -> (N, C, H, W).

    The dtype is kept (uint8 stays uint8, four times smaller than float).
    """
    t = torch.from_numpy(np.array(x, copy=True))  # readers may hand read-only arrays
    if t.dim() == 3:
        t = t.unsqueeze(1)
    elif t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2).contiguous()
    if t.dim() != 4 or t.shape[1] not in (1, 3):
        raise QretrainError(
            f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3; "
            f"got shape {tuple(x.shape)}"
        )
    return t
