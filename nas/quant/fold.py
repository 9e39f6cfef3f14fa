"""The deployed float parameters of a built network: batch norm folded into its convs.

The ONNX emitter (nas.hardware.onnx_graph) reads one array after another as it writes a
block: per conv its weight then its bias (when it has BN or a bias), per linear layer its
weight and bias, per `norm` its scale and shift. The builder registers its modules in that
same order (nas.space.builder), so a pre-order walk of a block's modules yields exactly
the arrays the emitter asks for; the emitter checks each shape and that none is left over.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nas.space.builder import PatchEmbed
from nas.space.layers import LayerSpec


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) of an eval-mode batch norm, in float64."""
    var = bn.running_var.detach().double().cpu().numpy()
    mean = bn.running_mean.detach().double().cpu().numpy()
    gamma = bn.weight.detach().double().cpu().numpy() if bn.weight is not None else np.ones_like(var)
    beta = bn.bias.detach().double().cpu().numpy() if bn.bias is not None else np.zeros_like(var)
    scale = gamma / np.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def block_params(block: nn.Module) -> list[np.ndarray]:
    """The float32 arrays of one block in the emitter's reading order, BN folded. Layer
    norms are read as scale and shift; a patch embedding's class token and position
    embedding come after its conv, as the emitter writes them."""
    leaves = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm))]
    out: list[np.ndarray] = []
    i = 0
    while i < len(leaves):
        m = leaves[i]
        if isinstance(m, nn.LayerNorm):
            out += [m.weight.detach().double().cpu().numpy(), m.bias.detach().double().cpu().numpy()]
            i += 1
            continue
        if isinstance(m, nn.BatchNorm2d):  # a `norm` block: BN alone, as Mul + Add
            scale, shift = _bn_affine(m)
            out += [scale.reshape(-1, 1, 1), shift.reshape(-1, 1, 1)]
            i += 1
            continue
        w = m.weight.detach().double().cpu().numpy()
        b = m.bias.detach().double().cpu().numpy() if m.bias is not None else None
        bn = leaves[i + 1] if isinstance(m, nn.Conv2d) and i + 1 < len(leaves) else None
        if isinstance(bn, nn.BatchNorm2d):
            scale, shift = _bn_affine(bn)
            w = w * scale.reshape(-1, *[1] * (w.ndim - 1))
            b = shift + (b * scale if b is not None else 0.0)
            i += 1
        out.append(w)
        if b is not None:
            out.append(b)
        i += 1
    if isinstance(block, PatchEmbed):
        out += [t.detach().double().cpu().numpy() for t in (block.cls_token, block.pos_embed) if t is not None]
    return [a.astype(np.float32) for a in out]


@torch.no_grad()
def folded_params(model: nn.Module, layers: Sequence[LayerSpec]) -> list[np.ndarray]:
    """Every block's arrays in network order; `model` is `space.build(arch)` (an
    nn.Sequential of one module per LayerSpec) in eval mode with its final BN statistics."""
    blocks = list(model.children())
    if len(blocks) != len(layers):
        from nas.errors import NasError

        raise NasError(f"the module has {len(blocks)} blocks but the arch has {len(layers)} layers")
    return [a for block in blocks for a in block_params(block)]
