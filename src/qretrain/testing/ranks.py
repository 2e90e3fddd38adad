"""Two or more gloo processes on this machine, for tests of code that runs under
torchrun: a free loopback port for ``torch.multiprocessing.spawn``, the line each
spawned worker starts with, and the command line under torchrun itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_gloo(rank: int, world_size: int, port: int) -> None:
    """Join a gloo process group of ``world_size`` on 127.0.0.1:``port`` as ``rank``;
    the worker leaves it with ``dist.destroy_process_group()``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)


def torchrun_qretrain(args: list[str], processes: int = 2,
                      cwd: str | Path | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """``torchrun --standalone --nproc-per-node PROCESSES --no-python qretrain ARGS`` as
    the docs give it (both programs this interpreter's console scripts, so neither
    resolves a module from the working folder ``cwd``), its output captured; fails the
    caller's test with the end of its stderr when it exits non-zero."""
    torchrun, qretrain = (_program(name) for name in ("torchrun", "qretrain"))
    command = [torchrun, "--standalone", "--nproc-per-node", str(processes), "--no-python",
               qretrain, *args]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300,
                          cwd=cwd)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _program(name: str) -> str:
    """The console script ``name`` beside this interpreter (a virtual environment's), or
    on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name} program beside {sys.executable} or on PATH")
    return found
