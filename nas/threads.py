"""The torch thread count, for library code and the CLI alike."""
from __future__ import annotations


def set_torch_threads(threads: int | None) -> None:
    """`--threads` and an experiment's `threads:`. torch's default of one OpenMP thread per
    core thrashes when other jobs share the cores: on the busy 2-core VM, training with 2
    threads ran up to 30x slower than with 1. Also exported as OMP_NUM_THREADS, so worker
    processes started from here inherit it."""
    if threads is None:
        return
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
