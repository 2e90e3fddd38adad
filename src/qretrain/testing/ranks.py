"""Two or more gloo processes on this machine, for tests of code that runs under
torchrun: a free loopback port for ``torch.multiprocessing.spawn``, the line each
spawned worker starts with, and the command line under torchrun itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

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


def torchrun_qretrain(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node PROCESSES -m qretrain ARGS`` (the module
    torchrun runs, ``torch.distributed.run``), its output captured; fails the caller's
    test with the end of its stderr when it exits non-zero."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(processes), "-m", "qretrain", *args]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done
