"""How much memory one input may make qretrain allocate.

A file states how large its contents are (a tensor's shape, an image's width and
height, an array's header), and compression lets a small file state a lot: gzip and
zip inflate up to about 1,000 times, a constant tensor stores one number for any
shape. So every reader compares what it is about to allocate with a budget *before*
allocating, and refuses with one line naming the limit and how to raise it:

- model files: what loading holds (the data read, the tensors, the model) at most
  ``MODEL_RATIO`` times the file's real size plus ``ALLOWANCE``;
- dataset files (``.npz``, IDX, CSV): their arrays at most ``DATA_RATIO`` times the
  file's size plus ``ALLOWANCE``;
- images: at most ``MAX_PIXELS`` pixels, decoded;
- forward passes: at most ``ACTIVATIONS`` bytes of activations for one input.

``max_memory`` (bytes) replaces every one of these for one call (``qretrain.load(path,
max_memory=...)``) or, through ``memory_limit``, for everything in a ``with`` block
(the command line's ``--max-memory``). It bounds what one input may decode to, not
the process: torch and qretrain themselves take about 0.85 GiB on their own, and a
command's own work (the batches it is asked for) comes on top.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from qretrain.errors import QretrainError

MIB = 1 << 20
# The densest sound model files hold up to about 170 times their size while loading
# (qretrain.zoo's vgg_small with every tensor at k = 2: 150): one stored bit per value
# becomes a float32 value in the state dict and another in the model, a uint8 index,
# and for the largest tensor an int64 index for a moment. Random-init torchvision and
# EfficientNet-Lite files: 4-5 times, Lite0 at 7x smaller: 25.
MODEL_RATIO = 256
# Image arrays compress 2-10 times (Fashion-MNIST's IDX 1.8, MNIST's CSV text 9); the
# readers then hold them about twice (the array and its tensor).
DATA_RATIO = 64
ALLOWANCE = 64 * MIB  # what a small file may always take (a k = 1 model of 8 M values)
# Pillow's own limit is 89 M pixels; 25 M still takes a 24-megapixel photograph
# (6000 x 4000) and every image of the project's data (the largest: 5640 x 3172), and
# keeps one decode (about BYTES_PER_PIXEL each, in float32) within 0.5 GiB.
MAX_PIXELS = 25_000_000
# Memory per pixel of read_image + InputContract.fit at their peak, with room: 14 was
# measured (a 6000 x 4000 RGB PNG fitted to a grey 28-px contract).
BYTES_PER_PIXEL = 20
# One input's estimated activations (models.footprint). The models qretrain knows
# estimate 10-50 MiB at their contracts (VGG-16 at 224 px: 49); one 1024-px input
# through qretrain.zoo's resnet_small at width 15, 244 (allowed), at width 16, 260.
ACTIVATIONS = 256 * MIB

_LIMIT: ContextVar[int | None] = ContextVar("qretrain_max_memory", default=None)
_HOW = "--max-memory SIZE, or qretrain.memory_limit(BYTES) in Python"


@contextmanager
def memory_limit(max_memory: int | None) -> Iterator[None]:
    """Within the block, every input may use up to ``max_memory`` bytes (None: the
    default budgets). For an input you trust that the defaults refuse."""
    if max_memory is not None:
        _check_bytes(max_memory)
    token = _LIMIT.set(max_memory)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def explicit_limit(max_memory: int | None = None) -> int | None:
    """``max_memory`` if given, else the enclosing ``memory_limit``'s, else None."""
    if max_memory is not None:
        _check_bytes(max_memory)
        return max_memory
    return _LIMIT.get()


def file_budget(file_bytes: int, ratio: int, max_memory: int | None = None) -> int:
    """Bytes a file of ``file_bytes`` may decode to (``ratio``: MODEL_RATIO or
    DATA_RATIO)."""
    explicit = explicit_limit(max_memory)
    return explicit if explicit is not None else ratio * file_bytes + ALLOWANCE


def check_decoded(what: str, needed: int, file_bytes: int, ratio: int,
                  max_memory: int | None = None, error: type[QretrainError] = QretrainError, *,
                  at_least: bool = False) -> None:  # fmt: skip
    """Raise ``error`` if ``what`` (naming the file) would decode to more than a file of
    ``file_bytes`` may; ``at_least``: ``needed`` is where reading stopped, not all."""
    allowed = file_budget(file_bytes, ratio, max_memory)
    if needed <= allowed:
        return
    rule = ("the --max-memory / max_memory limit" if explicit_limit(max_memory) is not None
            else f"{ratio} x its size + {ALLOWANCE // MIB} MiB")  # fmt: skip
    takes = "more than" if at_least else f"{mib(needed)} of memory to read, more than"
    raise error(
        f"{what} would take {takes} the {mib(allowed)} a {file_bytes:,}-byte file may "
        f"({rule}): a crafted or damaged file? If you trust it, raise the limit ({_HOW}"
        + ("" if at_least else f", e.g. {suggest(needed)}")
        + ")"
    )


def pixel_limit() -> int:
    """The most pixels an image may have to be decoded."""
    explicit = explicit_limit()
    return MAX_PIXELS if explicit is None else explicit // BYTES_PER_PIXEL


def check_pixels(what: str, width: int, height: int) -> None:
    """Raise QretrainError if an image of ``width`` x ``height`` may not be decoded."""
    limit = pixel_limit()
    if width * height > limit:
        raise QretrainError(
            f"{what} is {width} x {height} = {width * height:,} pixels, more than the "
            f"{limit:,} qretrain decodes (about {BYTES_PER_PIXEL} bytes each): downscale it, "
            f"or raise the limit ({_HOW}, e.g. {suggest(width * height * BYTES_PER_PIXEL)})"
        )


def activation_limit() -> int:
    """The most bytes of activations one input may make a forward pass hold."""
    explicit = explicit_limit()
    return ACTIVATIONS if explicit is None else explicit


def check_activations(what: str, needed: int) -> None:
    limit = activation_limit()
    if needed > limit:
        raise QretrainError(
            f"{what} makes about {mib(needed)} of activations for one input, more than the "
            f"{mib(limit)} qretrain allows; if you trust the model, raise the limit "
            f"({_HOW}, e.g. {suggest(needed)})"
        )


def mib(nbytes: int) -> str:
    return f"{math.ceil(nbytes / MIB):,} MiB"


def suggest(nbytes: int) -> str:
    """A ``--max-memory`` value just above ``nbytes``: whole GiB, or MiB below 1 GiB."""
    if nbytes < 1 << 30:
        return f"{math.ceil(nbytes / MIB / 64) * 64}M"
    return f"{math.ceil(nbytes / (1 << 30))}G"


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (K, M, G, T are powers
    of 1024)."""
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise QretrainError(
            f"a memory size is a number of bytes with an optional K, M, G or T suffix "
            f"(powers of 1024), e.g. 4G or 512M; got {text!r}"
        )
    number, unit = match.groups()
    nbytes = int(float(number) * 1024 ** " KMGT".index(unit.upper() or " "))
    _check_bytes(nbytes)
    return nbytes


def _check_bytes(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise QretrainError(f"max_memory must be a positive number of bytes; got {value!r}")
