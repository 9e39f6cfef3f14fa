"""What can be pruned in a LayerSpec network, and pruning it with its weights.

A network is a list of LayerSpecs (nas.export's arch.json `layers`) and the torch
module the builder makes of them. Its prunable units are:

- a **width**: a set of tensors that must keep one channel count because residual
  blocks, identity skips and global pooling pass channels through unchanged (a stage's
  width together with the blocks that add into it), with the layers that write them
  (producers) and read them (consumers);
- an mbconv's **expanded width** (`mid_ch`) and its **squeeze width** (`se_ch`);
- a whole **layer**: a residual mbconv, whose removal leaves its identity path.

Channels are chosen by an importance criterion: `l1`, the L1 norm of the weights of
the layers that read each channel (NetAdapt's and Li et al.'s magnitude criterion), or
`order`, the channels' own order, for weights inherited from a supernet that sorts its
channels by importance (nas.supernet.elastic) so the leading ones are the ones kept.
A width read by grouped 1x1 convs keeps the same number of channels in every group, so
every group count still divides it.

Widths touching ops whose channels are not sliced here (NB201 cells, resblocks, norm,
avgpool, depthwise plain convs), the network's input and its logits are frozen, and
so is the expanded width of a block that shuffles channels.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from nas.errors import ConfigError
from nas.space.builder import build_layer
from nas.space.layers import INT8_OPS, OPS, LayerSpec

CRITERIA = ("l1", "order")
# ops whose channels this module slices; every other op freezes the widths it touches
SLICED_OPS = frozenset({"conv", "mbconv", "skip", "gap", "linear"})
SUPPORTED_OPS = SLICED_OPS
REFUSED_OPS = frozenset(OPS) - SLICED_OPS
# int8 blocks hold the float module (nas.space.builder), so they slice alike and keep their precision
INT8_SUPPORTED_OPS = INT8_OPS & SLICED_OPS
INT8_REFUSED_OPS = INT8_OPS - SLICED_OPS


@dataclass(frozen=True)
class Unit:
    """One prunable thing: kind 'width' (tensors), 'mid' or 'se' (layer), 'layer' (layer)."""

    kind: str
    layer: int = -1                      # mid, se, layer
    tensors: tuple[int, ...] = ()        # width: tensor i is layer i's output
    width: int = 0                       # current channel count (0 for a layer)
    group: int = 1                       # widths must be multiples of this (grouped convs)

    def label(self, layers: Sequence[LayerSpec]) -> str:
        if self.kind == "width":
            first = self.tensors[0]
            return f"width of layers {first}-{self.tensors[-1]} ({layers[first].op} {layers[first].out_ch} ch)"
        spec = layers[self.layer]
        return {"mid": f"expanded width of layer {self.layer} ({spec.key})",
                "se": f"squeeze width of layer {self.layer} ({spec.key})",
                "layer": f"layer {self.layer} ({spec.key})"}[self.kind]


def _passes(spec: LayerSpec) -> bool:
    """Whether the block's output channels are its input channels (tied widths)."""
    return spec.residual or spec.is_identity or spec.op in ("gap", "norm", "avgpool", "nb201_cell")


def _frozen_layer(spec: LayerSpec) -> bool:
    depthwise_conv = spec.op == "conv" and spec.groups > 1 and spec.groups == spec.in_ch == spec.out_ch
    return spec.op not in SLICED_OPS or depthwise_conv


def _side_groups(spec: LayerSpec) -> int:
    """The group count a width read or written by this block must keep dividing."""
    return spec.groups if spec.op in ("conv", "mbconv") else 1


def width_sets(layers: Sequence[LayerSpec]) -> list[tuple[int, ...]]:
    """Tensors (by writing layer; -1 is the input) tied to one channel count, in order."""
    sets: list[list[int]] = [[-1]]
    for i, spec in enumerate(layers):
        if _passes(spec):
            sets[-1].append(i)
        else:
            sets.append([i])
    return [tuple(s) for s in sets]


def units(layers: Sequence[LayerSpec], multiple: int = 1) -> tuple[list[Unit], list[str]]:
    """The network's prunable units, and why each frozen width is frozen."""
    found: list[Unit] = []
    frozen: list[str] = []
    last = len(layers) - 1
    for tensors in width_sets(layers):
        touching = _touching(layers, tensors)
        reason = ("the input channels" if -1 in tensors else f"the logits of layer {last}" if last in tensors else
                  next((f"the width at layer {j} ({layers[j].op}, not sliced)" for j in touching
                        if _frozen_layer(layers[j])), ""))
        if reason:
            frozen.append(reason)
            continue
        group = math.lcm(*(_side_groups(layers[j]) for j in touching))
        found.append(Unit("width", tensors=tensors, width=layers[tensors[0]].out_ch, group=group))
    for i, spec in enumerate(layers):
        if spec.op != "mbconv":
            continue
        if spec.mid_ch and not (spec.shuffle and spec.groups > 1):
            found.append(Unit("mid", layer=i, width=spec.mid_ch, group=spec.groups))
        if spec.se_ch:
            found.append(Unit("se", layer=i, width=spec.se_ch))
        if spec.residual:
            found.append(Unit("layer", layer=i))
    check_multiple(layers, found, multiple)
    return found, frozen


def _touching(layers: Sequence[LayerSpec], tensors: tuple[int, ...]) -> list[int]:
    """Layers writing, passing or reading any of the tensors."""
    return sorted({t for t in tensors if t >= 0} | {t + 1 for t in tensors if t + 1 < len(layers)})


def check_multiple(layers: Sequence[LayerSpec], found: Sequence[Unit], multiple: int) -> None:
    """Refuse a channel multiple that a grouped conv's group count does not divide."""
    if multiple < 1:
        raise ConfigError(f"--multiple must be at least 1, got {multiple}")
    for unit in found:
        if unit.group > 1 and multiple % unit.group:
            where = unit.label(layers)
            raise ConfigError(f"--multiple {multiple}: widths pruned to multiples of {multiple} break the divisibility "
                              f"rule of {where}, whose grouped convs need multiples of {unit.group}; use a multiple of "
                              f"{math.lcm(multiple, unit.group)}")


def step_of(unit: Unit, multiple: int) -> int:
    return math.lcm(multiple, unit.group)


def candidate_widths(unit: Unit, multiple: int) -> list[int]:
    """Smaller widths of the unit, largest first: multiples of its step, at least one step."""
    step = step_of(unit, multiple)
    top = (unit.width - 1) // step * step
    return list(range(top, step - 1, -step))


# ---------------------------------------------------------------------- new layer specs
@dataclass(frozen=True)
class Change:
    """A unit pruned to `width` (0 for a removed layer), with the channels it keeps."""

    unit: Unit
    width: int
    keep: tuple[int, ...] = ()


def apply_specs(layers: Sequence[LayerSpec], change: Change) -> list[LayerSpec] | None:
    """The LayerSpecs after the change; None when it would turn a block into a residual or
    identity one (or out of one), which would change what the block computes."""
    u, w = change.unit, change.width
    if u.kind == "layer":
        return [s for i, s in enumerate(layers) if i != u.layer]
    new = list(layers)
    if u.kind == "mid":
        new[u.layer] = replace(layers[u.layer], mid_ch=w)
        return new
    if u.kind == "se":
        new[u.layer] = replace(layers[u.layer], se_ch=w)
        return new
    tensors = set(u.tensors)
    for j, spec in enumerate(layers):
        fields = {}
        if j in tensors:
            fields["out_ch"] = w
        if j - 1 in tensors:
            fields["in_ch"] = w
        if not fields:
            continue
        if spec.op == "mbconv" and spec.se_ch and not spec.mid_ch and "in_ch" in fields:
            fields["se_ch"] = min(spec.se_ch, w)
        changed = replace(spec, **fields)
        if changed.residual != spec.residual or changed.is_identity != spec.is_identity:
            return None
        new[j] = changed
    return new


# ---------------------------------------------------------------------- importance
def in_l1(conv: nn.Conv2d | nn.Linear) -> torch.Tensor:
    """L1 norm of the weights reading each input channel (global channel index)."""
    w = conv.weight.detach().abs()
    if isinstance(conv, nn.Linear):
        return w.sum(0)
    g = conv.groups
    if g == 1:
        return w.sum((0, 2, 3))
    if g == conv.in_channels == conv.out_channels:
        return w.sum((1, 2, 3))
    per_out = conv.out_channels // g
    return torch.cat([w[j * per_out:(j + 1) * per_out].sum((0, 2, 3)) for j in range(g)])


def _conv_of(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


def _mb_parts(spec: LayerSpec, block: nn.Module) -> dict[str, nn.Module]:
    """The parts of a built MBConv by role (the builder's order)."""
    body = list(block.body)
    parts, pos = {}, 0
    if spec.mid_ch:
        parts["expand"], pos = body[0], 1 + (spec.shuffle and spec.groups > 1)
    parts["dw"], pos = body[pos], pos + 1
    if spec.se_ch:
        parts["se"], pos = body[pos], pos + 1
    parts["project"] = body[pos]
    return parts


def _reader(spec: LayerSpec, block: nn.Module) -> nn.Module | None:
    """The first weighted layer of a block that reads its input channels."""
    if spec.op in ("conv",) or (spec.op == "skip" and not spec.is_identity):
        return _conv_of(block)
    if spec.op == "mbconv":
        parts = _mb_parts(spec, block)
        return _conv_of(parts["expand"] if spec.mid_ch else parts["dw"])
    if spec.op == "linear":
        return block[0]
    return None


def importance(layers: Sequence[LayerSpec], model: nn.Sequential, unit: Unit, criterion: str) -> torch.Tensor:
    """A score per channel of the unit: higher is kept first."""
    if criterion == "order":
        return -torch.arange(unit.width, dtype=torch.float32)
    if criterion != "l1":
        raise ConfigError(f"unknown importance criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    if unit.kind == "mid":
        return in_l1(_conv_of(_mb_parts(layers[unit.layer], model[unit.layer])["project"]))
    if unit.kind == "se":
        return in_l1(_mb_parts(layers[unit.layer], model[unit.layer])["se"].expand)
    total = torch.zeros(unit.width)
    for t in unit.tensors:
        j = t + 1
        reader = _reader(layers[j], model[j]) if j < len(layers) else None
        if reader is not None:
            score = in_l1(reader).float()
            total += score / score.mean().clamp_min(1e-12)  # each reading layer votes alike
    return total


def keep_channels(scores: torch.Tensor, width: int, group: int) -> tuple[int, ...]:
    """The `width` highest-scoring channels, the same number in each of `group` groups."""
    n = len(scores)
    per, keep = n // group, []
    for j in range(group):
        part = scores[j * per:(j + 1) * per]
        top = torch.topk(part, width // group, sorted=False).indices + j * per
        keep += top.tolist()
    return tuple(sorted(keep))


# ---------------------------------------------------------------------- weights
def _copy_conv(old: nn.Conv2d, new: nn.Conv2d, out_k: torch.Tensor, in_k: torch.Tensor) -> None:
    w = old.weight.detach()
    g = old.groups
    if g == 1:
        picked = w[out_k][:, in_k]
    elif g == old.in_channels == old.out_channels:
        picked = w[out_k]
    else:
        per_out, per_in = old.out_channels // g, old.in_channels // g
        rows = []
        for o in out_k.tolist():
            j = o // per_out
            rows.append(w[o, [i - j * per_in for i in in_k.tolist() if i // per_in == j]])
        picked = torch.stack(rows)
    new.weight.data.copy_(picked)
    if old.bias is not None:
        new.bias.data.copy_(old.bias.detach()[out_k])


def _copy_bn(old: nn.BatchNorm2d, new: nn.BatchNorm2d, k: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).data.copy_(getattr(old, name).detach()[k])
    new.num_batches_tracked.data.copy_(old.num_batches_tracked)


def _copy_cba(old: nn.Module, new: nn.Module, out_k: torch.Tensor, in_k: torch.Tensor) -> None:
    _copy_conv(_conv_of(old), _conv_of(new), out_k, in_k)
    old_bn = [m for m in old.modules() if isinstance(m, nn.BatchNorm2d)]
    new_bn = [m for m in new.modules() if isinstance(m, nn.BatchNorm2d)]
    for a, b in zip(old_bn, new_bn):
        _copy_bn(a, b, out_k)


def _index(keep: tuple[int, ...] | None, n: int) -> torch.Tensor:
    return torch.arange(n) if keep is None else torch.as_tensor(keep, dtype=torch.long)


def sliced_block(old_spec: LayerSpec, old: nn.Module, new_spec: LayerSpec, in_keep: tuple[int, ...] | None,
                 out_keep: tuple[int, ...] | None, mid_keep: tuple[int, ...] | None = None,
                 se_keep: tuple[int, ...] | None = None) -> nn.Module:
    """The builder's module of `new_spec` holding `old`'s weights of the kept channels."""
    new = build_layer(new_spec)
    in_k, out_k = _index(in_keep, old_spec.in_ch), _index(out_keep, old_spec.out_ch)
    op = old_spec.op
    with torch.no_grad():
        if op == "conv" or (op == "skip" and not old_spec.is_identity):
            _copy_cba(old, new, out_k, in_k)
        elif op == "linear":
            new[0].weight.data.copy_(old[0].weight.detach()[out_k][:, in_k])
            if old[0].bias is not None:
                new[0].bias.data.copy_(old[0].bias.detach()[out_k])
        elif op == "mbconv":
            mid_k = _index(mid_keep, old_spec.mid_ch) if old_spec.mid_ch else in_k
            se_k = _index(se_keep, old_spec.se_ch)
            a, b = _mb_parts(old_spec, old), _mb_parts(new_spec, new)
            if old_spec.mid_ch:
                _copy_cba(a["expand"], b["expand"], mid_k, in_k)
            _copy_cba(a["dw"], b["dw"], mid_k, mid_k)
            if old_spec.se_ch:
                _copy_conv(a["se"].reduce, b["se"].reduce, se_k, mid_k)
                _copy_conv(a["se"].expand, b["se"].expand, mid_k, se_k)
            _copy_cba(a["project"], b["project"], out_k, mid_k)
    return new


def prune(layers: Sequence[LayerSpec], model: nn.Sequential, change: Change,
          new_layers: Sequence[LayerSpec]) -> nn.Sequential:
    """A new network of `new_layers` (apply_specs of the change) with the kept weights."""
    u = change.unit
    if u.kind == "layer":
        return nn.Sequential(*(copy.deepcopy(m) for i, m in enumerate(model) if i != u.layer))
    blocks = []
    tensors = set(u.tensors)
    for j, (old_spec, new_spec) in enumerate(zip(layers, new_layers)):
        if old_spec == new_spec:
            blocks.append(copy.deepcopy(model[j]))  # candidates are tuned apart: share no module
            continue
        kw: dict[str, tuple[int, ...] | None] = {"in_keep": None, "out_keep": None}
        if u.kind == "mid":
            kw["mid_keep"] = change.keep
        elif u.kind == "se":
            kw["se_keep"] = change.keep
        else:
            kw["out_keep"] = change.keep if j in tensors else None
            kw["in_keep"] = change.keep if j - 1 in tensors else None
            if old_spec.op == "mbconv" and old_spec.se_ch != new_spec.se_ch:
                kw["se_keep"] = tuple(range(new_spec.se_ch))
        if old_spec.op in ("gap",) or old_spec.is_identity:
            blocks.append(build_layer(new_spec))
            continue
        blocks.append(sliced_block(old_spec, model[j], new_spec, **kw))
    return nn.Sequential(*blocks)
