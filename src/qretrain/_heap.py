"""Freed memory kept for the next allocation, not returned to the system (glibc).

glibc serves an allocation above its mmap threshold (32 MiB at most) with fresh pages
from the kernel and gives them back when it is freed, so the next one of that size
faults every page in and has the kernel zero it again. A forward pass over a batch of
images allocates and frees its activations layer by layer, each of them hundreds of
MiB at 224 px, so on the project's 2-core AVX2 box EfficientNet-Lite0 spent nearly twice
as long in the kernel as in its own arithmetic (batches of 64: 3.9 million page faults for
128 images). With every allocation served from the heap and the heap kept, the same
passes ran 3.3x faster with no page fault (the median of three runs), the same numbers to
the bit, and whole compression cases in 0.59-0.85x the time (``benchmarks/bench_heap.py``,
docs/BENCHMARKS.md).

The command line asks for this at its start; a Python program may call
``qretrain.keep_freed_memory()`` itself, or start Python with the environment variables
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``, which say the same to glibc (and,
being set, leave the call nothing to do). Under another allocator preloaded in glibc's
place (tcmalloc, jemalloc), ``mallopt`` may answer yes and do nothing: that allocator
keeps freed memory in its own way.
What it costs: the process keeps the memory it has freed for its next allocations
(freed blocks inside the heap, and up to 2 GiB free at its top) instead of giving it back
between passes: the cases measured peaked 1.2-1.3x higher.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_FREE = 2**31 - 1  # bytes free at the heap's top that stay (mallopt takes an int)


def _user_tuned() -> bool:
    """Whether the user tuned glibc's malloc (any ``MALLOC_*_`` variable, or a
    ``glibc.malloc.`` tunable): then their settings stand, read when the process
    started."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc.malloc." in tunables or any(v.startswith("MALLOC_") for v in os.environ)


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and keep what is freed there (module
    docstring); True if glibc took both settings. Does nothing (False) off Linux,
    under another C library, or when the user tuned malloc (``_user_tuned``)."""
    if not sys.platform.startswith("linux") or _user_tuned():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # glibc returns 1 on success; musl's mallopt is a stub that returns 0
    taken = mallopt(M_TRIM_THRESHOLD, KEEP_FREE) == 1 and mallopt(M_MMAP_MAX, 0) == 1
    logger.debug("freed memory kept on the heap: %s", taken)
    return taken
