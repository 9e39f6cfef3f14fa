"""Process-group setup for torchrun launches and local CPU workers (one process per GPU or CPU slot).

torchrun, and nas.supernet.workers, set RANK, LOCAL_RANK and WORLD_SIZE (and the
rendezvous address); without them the run is a single process. CUDA processes use NCCL
and one GPU each (by local rank); CPU processes use gloo.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """Whether this process is one of a process group's (torchrun's, or local workers' of
    nas.supernet.workers), whose launcher chose the processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _setup(cuda: bool) -> Context:
    """Join the launcher's process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Context(rank, world, device)


@contextlib.contextmanager
def process_group(cuda: bool | None = None) -> Iterator[Context]:
    """This process's Context, inside the launcher's process group if there is one, on a
    GPU when `cuda` (default: when one is available; False: CPU and gloo). On leaving:
    after a barrier when the block went well; at once when it raised (the others may be
    inside another collective, and a barrier there would keep every process waiting;
    their launcher stops them)."""
    ctx = _setup(torch.cuda.is_available() if cuda is None else cuda)
    failed = True
    try:
        yield ctx
        failed = False
    finally:
        if ctx.distributed and dist.is_initialized():
            if not failed:
                dist.barrier()
            dist.destroy_process_group()
