"""Supernet: every architecture of a search space in one module of shared weights.

Chain spaces become elastic networks (kernel, expanded width, stage width and depth,
resolution; Once-for-All / BigNAS style); the NAS-Bench-201 cell space becomes a
one-shot network with every op on every edge. Both answer the same three calls:
`set_active(arch)`, `forward(x)` for the active arch, and `extract(arch)` for a
standalone module built by the space's own builder with the inherited weights.
"""
from __future__ import annotations

import torch
from torch import nn

from nas.space.arch import Arch
from nas.space.base import SearchSpace
from nas.space.layers import LayerSpec
from nas.quant.settings import QuantSettings
from nas.supernet.elastic import init_weights
from nas.supernet.slot import SlotModule, slot_variants


class Supernet(nn.Module):
    """One SlotModule per layer position of `space`; weights initialised from `seed`
    (linear layers as `linear_init` says, see nas.supernet.elastic.init_weights)."""

    def __init__(self, space: SearchSpace, seed: int = 0, linear_init: str = "normal") -> None:
        super().__init__()
        self.space = space
        self.slots = tuple(space.slots())
        variants: dict[int, list[LayerSpec]] = {}
        for slot in self.slots:  # NB201 repeats one slot object per cell: enumerate it once
            if id(slot) not in variants:
                variants[id(slot)] = slot_variants(space, slot)
        self.blocks = nn.ModuleList(SlotModule(variants[id(slot)]) for slot in self.slots)
        init_weights(self, torch.Generator().manual_seed(seed), linear_init)
        self.qat: QuantSettings | None = None  # set: int8 layers of the active arch run fake-quantized like this
        self.set_active(space.extreme(largest=True))

    def set_active(self, arch: Arch) -> None:
        """Make `arch` the network that forward() runs."""
        arch = self.space.validate(arch)
        self.active = arch
        self._specs = [slot.make(arch, None) for slot in self.slots]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, spec in zip(self.blocks, self._specs):
            if spec is not None:
                x = block(x, spec, self.qat)
        return x

    def extract(self, arch: Arch | None = None) -> nn.Sequential:
        """`space.build(arch)` holding copies of the inherited weights and BN statistics,
        on the supernet's device and in its train/eval mode; the active arch by default."""
        arch = self.active if arch is None else self.space.validate(arch)
        with torch.device("meta"):
            net = self.space.build(arch)
        specs = [(block, slot.make(arch, None)) for block, slot in zip(self.blocks, self.slots)]
        active = [(block, spec) for block, spec in specs if spec is not None]
        for module, (block, spec) in zip(net, active, strict=True):
            module.load_state_dict(block.state_for(spec), strict=True, assign=True)
        return net.train(self.training)
