"""Freed memory kept on the heap: a large buffer allocated again after it was freed
faults no page in, where glibc's default maps fresh pages each time."""

import json
import os
import platform
import subprocess
import sys

import pytest

from qretrain._heap import keep_freed_memory

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

MEASURE = """
import json, resource
buffer = bytearray(256 << 20)  # above glibc's largest mmap threshold (32 MiB)
del buffer
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buffer = bytearray(256 << 20)
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                  - before}))
"""
# A fresh 256 MiB mapping faults at least once per page: 65,536 pages of 4 KiB, or 128
# huge pages where the kernel backs every mapping with 2 MiB pages.
FRESH = 100


def faults(setup: str, **env: str) -> dict:
    """Page faults of allocating 256 MiB again after freeing it, in a fresh process
    that first runs ``setup`` (which sets ``kept``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    out = subprocess.run([sys.executable, "-c", setup + MEASURE], env=environ | env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def test_freed_memory_is_used_again_without_page_faults():
    default = faults("kept = None")
    kept = faults("from qretrain._heap import keep_freed_memory; kept = keep_freed_memory()")
    assert kept["kept"] is True
    assert default["faults"] > FRESH
    assert kept["faults"] < default["faults"] / 20


def test_the_program_keeps_freed_memory_and_main_alone_does_not():
    """``qretrain`` (the console script and ``python -m qretrain``) runs ``entry``; tests
    and notebooks call ``main``, which leaves their process as it was."""
    default = faults("kept = None")
    program = "import sys; sys.argv = ['qretrain', '--version']; from qretrain.cli.main import "
    ran = faults(program + "entry; entry(); kept = True")
    alone = faults(program + "main; main(['--version']); kept = False")
    assert ran["faults"] < default["faults"] / 20
    assert alone["faults"] > FRESH


@pytest.mark.parametrize(
    "name, value",
    [
        ("MALLOC_MMAP_MAX_", "65536"),
        ("MALLOC_ARENA_MAX", "2"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_max=65536"),
    ],
)
def test_malloc_settings_of_the_user_win(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert keep_freed_memory() is False
    user = faults("from qretrain._heap import keep_freed_memory; kept = keep_freed_memory()",
                  **{name: value})  # fmt: skip
    assert user["kept"] is False and user["faults"] > FRESH


def test_other_glibc_tunables_leave_it_on():
    ran = faults("from qretrain._heap import keep_freed_memory; kept = keep_freed_memory()",
                 GLIBC_TUNABLES="glibc.pthread.rseq=0")  # fmt: skip
    assert ran["kept"] is True and ran["faults"] < FRESH
