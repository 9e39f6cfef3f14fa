"""Importance-based channel sorting, run when the space starts shrinking widths.

Elastic width keeps a variant's *leading* channels. Before small widths start to be
trained, channels are reordered so the most important (largest L1 weight norm) come
first, as in Once-for-All; the largest network computes the same function before and
after (only channel order changes).

Two kinds of channels are sorted:
- the expanded channels inside each inverted residual (and its SE channels), block by block;
- a stage's output channels (an elastic `width` decision of a chain space): every
  layer writing them and every layer reading them is reordered together. A stage
  whose channels are added to a layer's differently ordered input (a residual or
  identity across stages), or read by a grouped conv, is left as it is.
Optimizer state (momentum, Adam moments) is reordered with the weights.
"""
from __future__ import annotations

import torch

from nas.space.chain import Choose
from nas.supernet.elastic import Move
from nas.supernet.supernet import Supernet


def sort_channels(supernet: Supernet, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Sort every sortable channel group in place; returns how many of each kind were sorted."""
    inner = [m for block in supernet.blocks for f in block.families.values() for m in [f.inner_moves()] if m]
    widths = [m for m in (_width_moves(supernet, name) for name in _width_groups(supernet)) if m]
    for moves in inner + widths:
        _apply(moves, optimizer)
    return {"blocks": len(inner), "widths": len(widths)}


def _width_groups(supernet: Supernet) -> list[str]:
    names = set()
    for slot in supernet.slots:
        for ref in (getattr(slot, "in_ch", None), getattr(slot, "out_ch", None)):
            if isinstance(ref, Choose):
                names.add(ref.name)
    return sorted(names)


def _width_moves(supernet: Supernet, name: str) -> list[Move] | None:
    """All reorderings for the channels of width decision `name`, or None if unsortable."""
    reads, writes = [], []
    for block, slot in zip(supernet.blocks, supernet.slots):
        reads_it = _is(getattr(slot, "in_ch", None), name)
        writes_it = _is(getattr(slot, "out_ch", None), name)
        if reads_it != writes_it and block.passes_input:
            return None  # input added to output with different orders on either side
        if reads_it:
            reads.append(block)
        if writes_it:
            writes.append(block)
    importance = [imp for block in writes for f in block.families.values() for imp in [f.out_importance()]
                  if imp is not None]
    if not importance or len({len(i) for i in importance}) != 1:
        return None
    perm = torch.argsort(torch.stack(importance).sum(0), descending=True, stable=True)
    moves: list[Move] = []
    for blocks, hook in ((reads, "in_moves"), (writes, "out_moves")):
        for block in blocks:
            for family in block.families.values():
                found = getattr(family, hook)(perm)
                if found is None:
                    return None
                moves += found
    return moves


def _is(ref: object, name: str) -> bool:
    return isinstance(ref, Choose) and ref.name == name


@torch.no_grad()
def _apply(moves: list[Move], optimizer: torch.optim.Optimizer | None) -> None:
    for tensor, dim, perm in moves:
        perm = perm.to(tensor.device)
        tensor.copy_(tensor.index_select(dim, perm))
        state = optimizer.state.get(tensor, {}) if optimizer is not None else {}
        for value in state.values():
            if torch.is_tensor(value) and value.shape == tensor.shape:
                value.copy_(value.index_select(dim, perm))
