"""Readers for image data on disk: IDX, .npz, CSV and image files.

Readers return raw arrays (uint8 or float images in [0, 1], labels as int64) and do
no fitting; ``qretrain.data.sets`` fits them to a model's input contract.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from qretrain.errors import QretrainError

logger = logging.getLogger(__name__)

TRANSPARENT_FILL = (127, 127, 127)  # mid-grey, near the mean of most models' inputs
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (raw or gzip): images (N, H, W) or labels (N,), as stored."""
    path = Path(path)
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise QretrainError(f"{str(path)!r} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = data[4 + 4 * ndim :]
    expected = math.prod(dims) * dtype.itemsize
    if len(body) != expected:
        raise QretrainError(
            f"{str(path)!r} is truncated or padded: header says {dims} ({expected} bytes), "
            f"file holds {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (N, H, W), (N, H, W, C) or (N, C, H, W) and optional ``y`` (N,)."""
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f:
            raise QretrainError(f"{str(path)!r} has no array 'x' (found: {', '.join(f.files)})")
        return f["x"], (f["y"] if "y" in f else None)


def read_csv(
    path: str | Path, label_column: str | int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of square grayscale pixels (0-255) plus a label column.

    The label column is ``label_column`` (name or index, -1 for the last), else a
    column named "label" when the file has a header, else the first column.
    """
    path = Path(path)
    opener = gzip.open(path, "rt") if path.suffix == ".gz" else open(path, newline="")
    with opener as f:
        rows = list(csv.reader(f))
    if not rows:
        raise QretrainError(f"{str(path)!r} is empty")
    header = None
    if any(not cell.strip().lstrip("-").replace(".", "", 1).isdigit() for cell in rows[0]):
        header, rows = rows[0], rows[1:]
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise QretrainError(f"{str(path)!r} has no column {label_column!r}")
        label_column = header.index(label_column)
    elif label_column is None:
        label_column = header.index("label") if header and "label" in header else 0
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise QretrainError(f"{str(path)!r}: every cell must be a number ({e})") from e
    labels = table[:, label_column].astype(np.int64)
    pixels = np.delete(table, label_column % table.shape[1], axis=1)
    side = math.isqrt(pixels.shape[1])
    if side * side != pixels.shape[1]:
        raise QretrainError(
            f"{str(path)!r}: {pixels.shape[1]} pixel columns do not form a square image"
        )
    return pixels.reshape(-1, side, side).clip(0, 255).astype(np.uint8), labels


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


def read_image(path: str | Path) -> torch.Tensor | None:
    """An image file as float (C, H, W) in [0, 1], C in {1, 3}, transparent pixels
    on TRANSPARENT_FILL (``flatten``); None if unreadable."""
    try:
        with Image.open(path) as img:
            array = np.asarray(flatten(img), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        logger.warning("skipping unreadable image %s: %s", path, e)
        return None
    tensor = torch.from_numpy(array.copy())
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor.float() / 255


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
