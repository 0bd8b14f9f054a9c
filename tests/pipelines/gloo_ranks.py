"""Running a test function in several real processes on the CPU (gloo): the environment torchrun would set."""

from __future__ import annotations

import os
import socket

import torch


def free_port() -> int:
    """A TCP port nothing listens on now, for the ranks' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def become_rank(rank: int, world: int, port: int) -> None:
    """Make this spawned process rank ``rank`` of ``world`` as torchrun with ``ACCELERATE_USE_CPU=yes`` would (one
    thread each: the ranks share the CPU)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), ACCELERATE_USE_CPU="yes")  # fmt: skip
    torch.set_num_threads(1)
