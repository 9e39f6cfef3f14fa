"""What a training run trains: a supernet (many archs per step) or one stand-alone arch.

The trainer only asks a task for its module, the archs of a step, how to make an
arch active, whether the first arch teaches the others, and what to report at the
end of an epoch. Stand-alone training of single archs (the reference the supernet's
ranking is measured against) thus runs through the very same loop.
"""
from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch
from torch import nn

from nas.data import ImageDataset
from nas.space.arch import Arch
from nas.space.base import SearchSpace
from nas.space.chain import ChainSpace
from nas.supernet.config import TrainConfig
from nas.supernet.elastic import init_weights
from nas.supernet.evaluation import RecalibratedScorer, SubnetEvaluator
from nas.supernet.sampling import SubnetSampler
from nas.supernet.sorting import sort_channels
from nas.supernet.supernet import Supernet


class Task(Protocol):
    """What the training loop needs from the thing it trains."""

    model: nn.Module
    space: SearchSpace
    distill: bool  # whether the first arch of a step teaches the others

    def archs(self, epoch: int, rng: np.random.Generator) -> list[Arch]: ...

    def activate(self, arch: Arch) -> None: ...

    def begin_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> None: ...

    def report(self, data: ImageDataset, config: TrainConfig, epoch: int) -> dict[str, float]: ...


class SupernetTask:
    """A supernet trained with the sandwich or uniform rule, optionally progressively."""

    def __init__(self, space: SearchSpace, config: TrainConfig) -> None:
        self.space = space
        self.model = Supernet(space, seed=config.seed, linear_init=config.linear_init)
        rule = config.sampling.rule or ("sandwich" if isinstance(space, ChainSpace) else "uniform")
        phases = config.progressive.phases if config.progressive is not None else ()
        self.sampler = SubnetSampler(space, rule, config.sampling.random_subnets, phases, config.phase_epochs())
        self.distill = rule == "sandwich" and config.sampling.distill
        self.qat, self.quant = config.qat, config.quant

    def archs(self, epoch: int, rng: np.random.Generator) -> list[Arch]:
        """The step's archs; from qat.start_epoch on, their int8 layers train fake-quantized
        (set here, per step, so a run resumed mid-epoch quantizes as one that never stopped)."""
        self.model.qat = self.quant if self.qat is not None and self.qat.active(epoch) else None
        return self.sampler.step(epoch, rng)

    def activate(self, arch: Arch) -> None:
        self.model.set_active(arch)

    def begin_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """At each new progressive phase, sort channels so shrinking keeps the important ones."""
        if self.sampler.phase_start(epoch):
            sort_channels(self.model, optimizer)

    def report(self, data: ImageDataset, config: TrainConfig, epoch: int) -> dict[str, float]:
        """Validation accuracy of the largest subnet and of this phase's smallest (sandwich
        rule) or of one fixed random subnet (uniform rule, whose smallest path may be empty)."""
        evaluator = SubnetEvaluator(self.model, data, "val", config.calib_images, config.eval_batch_size, config.seed,
                                    quant=config.quant)
        out = {"val_acc_largest": evaluator.accuracy(self.sampler.largest())}
        if self.sampler.rule == "sandwich":
            out["val_acc_smallest"] = evaluator.accuracy(self.sampler.smallest(epoch))
        else:
            out["val_acc_sampled"] = evaluator.accuracy(self.space.sample(config.seed))
        return out


class StandaloneTask:
    """One arch built by the space's builder, trained from scratch on its own."""

    distill = False

    def __init__(self, space: SearchSpace, arch: Arch, config: TrainConfig) -> None:
        self.space, self.arch = space, space.validate(arch)
        self.model = space.build(self.arch)
        init_weights(self.model, torch.Generator().manual_seed(config.seed), config.linear_init)

    def archs(self, epoch: int, rng: np.random.Generator) -> list[Arch]:
        return [self.arch]

    def activate(self, arch: Arch) -> None:
        """Nothing to switch: the module is the arch."""

    def begin_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """No channel sorting for a fixed network."""

    def report(self, data: ImageDataset, config: TrainConfig, epoch: int) -> dict[str, float]:
        """Validation accuracy measured as supernet subnets are (BN recalibrated), on a copy:
        after a short training the running statistics lag the weights (a 1-epoch run scored
        10 % with its own statistics and 94 % recalibrated)."""
        scorer = RecalibratedScorer(data, "val", config.calib_images, config.eval_batch_size, config.seed,
                                    next(self.model.parameters()).device, config.quant)
        return {"val_acc": scorer.score(copy.deepcopy(self.model), self.space.resolution(self.arch),
                                        self.space.layers(self.arch))}
