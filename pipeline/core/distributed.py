"""Multi-process training under torchrun (DDP): which process am I, and the few collectives needed.

`torchrun --nproc_per_node=N sokd train_teacher ...` sets RANK, WORLD_SIZE and LOCAL_RANK; the
process group is initialised from them (NCCL on GPUs, gloo on CPUs). Without torchrun every helper
here degrades to the single-process case.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher speaking its protocol) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def distributed() -> bool:
    """Whether this process belongs to a process group (torchrun, one process or more)."""
    return dist.is_available() and dist.is_initialized()


def world() -> World:
    """This process's place among the training processes."""
    if distributed():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def init_from_env() -> World:
    """Join the process group torchrun describes in the environment (once), else run alone.

    A one-process torchrun joins a group too, so the collectives (NCCL on a GPU) are exercised
    exactly as with N processes.
    """
    if under_torchrun() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        atexit.register(dist.destroy_process_group)
        log.info(
            "torchrun: process %d of %d, %s backend",
            dist.get_rank(),
            dist.get_world_size(),
            backend,
        )
    return world()


def sum_across(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over all processes (itself when there is one)."""
    if distributed():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
