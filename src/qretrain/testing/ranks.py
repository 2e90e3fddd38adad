"""Two or more gloo processes on this machine, for tests of code that runs under
torchrun: a free loopback port for ``torch.multiprocessing.spawn``, and the line
each spawned worker starts with."""

from __future__ import annotations

import os
import socket

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
