"""Which training images each step uses, as a pure function of (seed, epoch, step).

No iterator state to save: a run resumed at step k of epoch e draws exactly the
batches the uninterrupted run drew, and every process of a distributed run agrees on
the global batch and takes its own contiguous share of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.errors import NasError


@dataclass(frozen=True)
class BatchPlan:
    """Global batches of `batch_size` images over `n` training images (the last partial
    batch of an epoch is dropped), split into `micro_batches` equal parts whatever the
    number of processes: process `rank` of `world` runs parts rank*A .. rank*A + A - 1,
    A = micro_batches / world, so 1 process accumulates what 2 split."""

    n: int
    batch_size: int
    seed: int
    world: int = 1
    rank: int = 0
    micro_batches: int = 1

    def __post_init__(self) -> None:
        if self.batch_size > self.n:
            raise NasError(f"batch size {self.batch_size} exceeds the {self.n} training images")
        if self.batch_size % self.micro_batches:
            raise NasError(f"batch size {self.batch_size} must divide into {self.micro_batches} micro-batches")
        if self.micro_batches % self.world:
            raise NasError(f"{self.micro_batches} micro-batches cannot be shared by {self.world} processes; set "
                           f"micro_batches to a multiple of {self.world} in the training config")

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    @property
    def accumulate(self) -> int:
        """Micro-batches this process runs per step."""
        return self.micro_batches // self.world

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.micro_batches

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of the training images."""
        return np.random.default_rng([self.seed, epoch, 0xBA7C]).permutation(self.n)

    def global_batch(self, order: np.ndarray, step: int) -> np.ndarray:
        return order[step * self.batch_size:(step + 1) * self.batch_size]

    def local_slices(self) -> list[slice]:
        """This process's micro-batches as slices of the global batch."""
        first = self.rank * self.accumulate
        return [slice((first + i) * self.micro_batch, (first + i + 1) * self.micro_batch)
                for i in range(self.accumulate)]

    def step_rng(self, epoch: int, step: int, stream: int) -> np.random.Generator:
        """A generator owned by one step and one purpose (`stream`): augmentation, subnets."""
        return np.random.default_rng([self.seed, epoch, step, stream])
