"""Which subnets a training step trains: the sandwich rule, uniform paths, progressive shrinking.

Sandwich rule (BigNAS): every step trains the largest arch, the smallest arch and
`random_subnets` uniformly drawn archs; training the two extremes bounds the whole
space from both sides. Uniform rule (single-path one-shot, as for NAS-Bench-201):
every step trains `random_subnets` uniformly drawn archs.

Progressive shrinking (Once-for-All) frees the decisions in stages: decisions not yet
free stay at the largest arch's value. Decisions are grouped into dimensions by name:
`kernel`, `depth`, `expand` (expansion ratio, mid width and stage width; a transformer's
MLP ratio, heads and embed dim, its widths), `resolution`
(always free, as in Once-for-All) and `other` (SE, candidate ops, activations, cell
edges). The last phase always frees everything.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas.errors import NasError
from nas.space.arch import Arch
from nas.space.base import SearchSpace

DIMENSIONS = ("kernel", "depth", "expand", "resolution", "other")
RULES = ("sandwich", "uniform")
_SUFFIX = {"kernel": "kernel", "depth": "depth", "expand": "expand", "mid": "expand", "width": "expand", "out": "expand",
           "mlp_ratio": "expand", "heads": "expand"}


def dimension(decision: str) -> str:
    """The progressive-shrinking dimension of a decision, from its name."""
    if decision == "resolution":
        return "resolution"
    return _SUFFIX.get(decision.rsplit(".", 1)[-1], "other")


class SubnetSampler:
    """Archs per step as a pure function of (epoch, step generator)."""

    def __init__(self, space: SearchSpace, rule: str, random_subnets: int,
                 phases: Sequence[Sequence[str]] = (), phase_epochs: Sequence[int] = ()) -> None:
        if rule not in RULES:
            raise NasError(f"unknown sampling rule {rule!r}; choose {' or '.join(RULES)}")
        if rule == "uniform" and random_subnets < 1:
            raise NasError("the uniform rule needs random_subnets >= 1")
        if len(phases) != len(phase_epochs):
            raise NasError("progressive shrinking needs one epoch count per phase")
        for phase in phases:
            for dim in phase:
                if dim not in DIMENSIONS:
                    raise NasError(f"unknown dimension {dim!r} in progressive phases; known: {', '.join(DIMENSIONS)}")
        self.space, self.rule, self.random_subnets = space, rule, random_subnets
        self.largest_codes = space.encode(space.extreme(largest=True))
        self.smallest_codes = space.encode(space.extreme(largest=False))
        dims = np.array([dimension(d.name) for d in space.decisions])
        self._masks = [np.isin(dims, list(phase) + ["resolution"]) for phase in phases[:-1]]
        self._masks.append(np.ones(len(dims), dtype=bool))
        self._starts = np.cumsum([0, *phase_epochs])[:-1] if phases else np.zeros(1, dtype=int)

    def phase(self, epoch: int) -> int:
        return int(np.searchsorted(self._starts, epoch, side="right") - 1)

    def phase_start(self, epoch: int) -> bool:
        """Whether a progressive phase other than the first begins at this epoch."""
        return len(self._starts) > 1 and epoch in self._starts[1:]

    def largest(self) -> Arch:
        return self.space.decode(self.largest_codes)

    def smallest(self, epoch: int) -> Arch:
        """The smallest arch among those trainable in this epoch's phase."""
        return self.space.decode(np.where(self._masks[self.phase(epoch)], self.smallest_codes, self.largest_codes))

    def step(self, epoch: int, rng: np.random.Generator) -> list[Arch]:
        """The step's archs; under the sandwich rule the largest (the teacher) comes first."""
        free = self._masks[self.phase(epoch)]
        drawn = self.space.sample_codes(rng, self.random_subnets)
        randoms = [self.space.decode(np.where(free, row, self.largest_codes)) for row in drawn]
        if self.rule == "uniform":
            return randoms
        return [self.largest(), self.smallest(epoch), *randoms]
