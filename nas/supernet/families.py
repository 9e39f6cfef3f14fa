"""Families: the variants of one slot that share one set of weights.

A slot (one layer position of a space) may take many LayerSpecs. Variants with the
same structure (op, groups, whether an expansion conv exists, pre/post activation)
form a family and share the weights of its largest member; variants of a different
structure (FBNet's grouped blocks, a skip candidate) get a family of their own. Each
family returns, for a LayerSpec, the tensors of the builder's module for that spec in
the module's own order: parameters, then buffers.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from nas.errors import ConfigError
from nas.space.builder import build_layer
from nas.space.layers import INT8_OPS, NB201_EDGES, LayerSpec
from nas.supernet.elastic import BNUnit, ConvUnit, LinearUnit, LNUnit, Move, QKVUnit, TokenUnit

Tensors = tuple[list[torch.Tensor], list[torch.Tensor]]  # (parameters, buffers)
WEIGHTLESS = ("gap", "avgpool")


def family_key(spec: LayerSpec) -> str:
    """Variants with equal keys share weights (and must have the same module structure)."""
    if spec.op == "mbconv":
        return f"mbconv-g{spec.groups}-{'expand' if spec.mid_ch else 'direct'}"
    if spec.op == "conv":
        groups = "dw" if spec.groups > 1 and spec.groups == spec.in_ch == spec.out_ch else f"g{spec.groups}"
        return f"conv-{groups}-{'pre' if spec.preact else 'post'}-{'bn' if spec.bn else 'nobn'}-{'bias' if spec.bias else 'nobias'}"
    if spec.op == "skip":
        return "identity" if spec.is_identity else "skip-conv"
    if spec.op == "linear":
        return f"linear-{'bias' if spec.bias else 'nobias'}"
    if spec.op == "patch_embed":
        return f"patch_embed-p{spec.kernel}-{'cls' if spec.cls_token else 'nocls'}"
    return spec.op


class Family(nn.Module):
    """Shared weights of some variants of a slot. The sorting hooks return None where a
    family cannot reorder those channels (grouped convs, weightless pass-throughs)."""

    def tensors(self, spec: LayerSpec) -> Tensors:
        raise NotImplementedError

    def in_moves(self, perm: torch.Tensor) -> list[Move] | None:
        return None

    def out_moves(self, perm: torch.Tensor) -> list[Move] | None:
        return None

    def out_importance(self) -> torch.Tensor | None:
        return None

    def inner_moves(self) -> list[Move]:
        """Reorderings of channels internal to the block (expanded width, SE width)."""
        return []


class Weightless(Family):
    """Global pooling, average pooling and identity skips: channels pass through."""

    def tensors(self, spec: LayerSpec) -> Tensors:
        return [], []

    def in_moves(self, perm: torch.Tensor) -> list[Move]:
        return []

    def out_moves(self, perm: torch.Tensor) -> list[Move]:
        return []


class Fixed(Family):
    """A slot with one variant: the builder's module itself, trained as is."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.module = build_layer(spec)

    def tensors(self, spec: LayerSpec) -> Tensors:
        return list(self.module.parameters()), list(self.module.buffers())


class ConvFamily(Family):
    """Plain convs (stem, head, 1x1 skip projections): elastic channels and kernel."""

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        s = specs[0]
        depthwise = s.groups > 1 and s.groups == s.in_ch
        in_pg = 1 if depthwise else max(v.in_ch for v in specs) // s.groups
        self.grouped = s.groups > 1
        self.conv = ConvUnit(max(v.out_ch for v in specs), in_pg, [v.kernel for v in specs], s.bias, s.bn)

    def tensors(self, spec: LayerSpec) -> Tensors:
        return self.conv.params(spec.out_ch, spec.in_ch // spec.groups, spec.kernel), self.conv.buffers_for(spec.out_ch)

    def in_moves(self, perm: torch.Tensor) -> list[Move] | None:
        return None if self.grouped else self.conv.in_moves(perm)

    def out_moves(self, perm: torch.Tensor) -> list[Move] | None:
        return None if self.grouped else self.conv.out_moves(perm)

    def out_importance(self) -> torch.Tensor | None:
        return None if self.grouped else self.conv.out_importance()


class LinearFamily(Family):
    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        self.linear = LinearUnit(max(v.out_ch for v in specs), max(v.in_ch for v in specs), specs[0].bias)

    def tensors(self, spec: LayerSpec) -> Tensors:
        return self.linear.params(spec.out_ch, spec.in_ch), []

    def in_moves(self, perm: torch.Tensor) -> list[Move]:
        return self.linear.in_moves(perm)

    def out_moves(self, perm: torch.Tensor) -> list[Move]:
        return self.linear.out_moves(perm)

    def out_importance(self) -> torch.Tensor:
        return self.linear.out_importance()


class NormFamily(Family):
    """BN + activation over the incoming channels (a pass-through for channel order)."""

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        self.bn = BNUnit(max(v.in_ch for v in specs))

    def tensors(self, spec: LayerSpec) -> Tensors:
        return self.bn.params(spec.in_ch), self.bn.buffers_for(spec.in_ch)

    def in_moves(self, perm: torch.Tensor) -> list[Move]:
        return self.bn.moves(perm)

    def out_moves(self, perm: torch.Tensor) -> list[Move]:
        return []  # the same channels: in_moves already reordered them


class MBConvFamily(Family):
    """Inverted residuals: elastic input/output width, expanded width, kernel and SE width.

    Without an expansion conv ('direct' family) the depthwise conv works on the block's
    input channels, so those move with the input's order and are never sorted alone.
    """

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        s = specs[0]
        self.groups = s.groups
        mid = max(v.mid_ch or v.in_ch for v in specs)
        se = max(v.se_ch for v in specs)
        self.expand = ConvUnit(mid, max(v.in_ch for v in specs) // s.groups, [1]) if s.mid_ch else None
        self.depthwise = ConvUnit(mid, 1, [v.kernel for v in specs])
        self.se_reduce = ConvUnit(se, mid, [1], bias=True, bn=False) if se else None
        self.se_expand = ConvUnit(mid, se, [1], bias=True, bn=False) if se else None
        self.project = ConvUnit(max(v.out_ch for v in specs), mid // s.groups, [1])

    def tensors(self, spec: LayerSpec) -> Tensors:
        mid, g = spec.mid_ch or spec.in_ch, spec.groups
        parts = [(self.expand, mid, spec.in_ch // g, 1)] if spec.mid_ch else []
        parts.append((self.depthwise, mid, 1, spec.kernel))
        if spec.se_ch:
            parts += [(self.se_reduce, spec.se_ch, mid, 1), (self.se_expand, mid, spec.se_ch, 1)]
        parts.append((self.project, spec.out_ch, mid // g, 1))
        params, buffers = [], []
        for unit, out_ch, in_pg, kernel in parts:
            params += unit.params(out_ch, in_pg, kernel)
            buffers += unit.buffers_for(out_ch)
        return params, buffers

    def _mid_moves(self, perm: torch.Tensor) -> list[Move]:
        """Reorder the expanded channels everywhere they appear."""
        moves = self.expand.out_moves(perm) if self.expand is not None else []
        moves += self.depthwise.out_moves(perm)
        if self.se_reduce is not None:
            moves += self.se_reduce.in_moves(perm) + self.se_expand.out_moves(perm)
        return moves + self.project.in_moves(perm)

    def in_moves(self, perm: torch.Tensor) -> list[Move] | None:
        if self.groups > 1:
            return None
        return self.expand.in_moves(perm) if self.expand is not None else self._mid_moves(perm)

    def out_moves(self, perm: torch.Tensor) -> list[Move] | None:
        return None if self.groups > 1 else self.project.out_moves(perm)

    def out_importance(self) -> torch.Tensor | None:
        return None if self.groups > 1 else self.project.out_importance()

    def inner_moves(self) -> list[Move]:
        """Expanded channels by the L1 norm of the projection weights reading them (as
        Once-for-All does), SE channels by the weights of the SE expansion reading them."""
        if self.expand is None or self.groups > 1:
            return []
        moves = self._mid_moves(_descending(self.project.in_importance()))
        if self.se_reduce is not None:
            perm = _descending(self.se_expand.in_importance())
            moves += self.se_reduce.out_moves(perm) + self.se_expand.in_moves(perm)
        return moves


class PatchEmbedFamily(Family):
    """Patch embeddings: elastic input channels (a hybrid's stage width) and embed dim.
    The patch conv and the class token share leading slices; each token count (each
    resolution) has a position embedding of its own, of which a smaller embed dim takes
    the leading features."""

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        s = specs[0]
        embed = max(v.out_ch for v in specs)
        self.tokens = TokenUnit(embed, [v.tokens for v in specs], s.cls_token)
        self.proj = ConvUnit(embed, max(v.in_ch for v in specs), [s.kernel], bias=True, bn=False)

    def tensors(self, spec: LayerSpec) -> Tensors:
        """The builder's order: its own class token and position embedding, then the conv."""
        return self.tokens.params(spec.tokens, spec.out_ch) + self.proj.params(spec.out_ch, spec.in_ch, spec.kernel), []


class EncoderFamily(Family):
    """Pre-norm encoder layers, AutoFormer-style weight entanglement: a variant of embed
    dim E, attention width A (heads x head_dim) and MLP width M uses the leading E
    features of both layer norms and of every linear's embed side, the leading A rows
    of each of the query, key and value parts (QKVUnit) and the leading A columns of
    the output projection, and the leading M hidden units of the MLP. Depth needs no
    weights of its own: a shallower stage skips its last layers, which are slots."""

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        embed, attn, mlp = (max(getattr(v, f) for v in specs) for f in ("in_ch", "attn_dim", "mid_ch"))
        self.norm1 = LNUnit(embed)
        self.qkv = QKVUnit(attn, embed)
        self.proj = LinearUnit(embed, attn, bias=True)
        self.norm2 = LNUnit(embed)
        self.fc1 = LinearUnit(mlp, embed, bias=True)
        self.fc2 = LinearUnit(embed, mlp, bias=True)

    def tensors(self, spec: LayerSpec) -> Tensors:
        e, a, m = spec.in_ch, spec.attn_dim, spec.mid_ch
        return (self.norm1.params(e) + self.qkv.params(a, e) + self.proj.params(e, a) + self.norm2.params(e)
                + self.fc1.params(m, e) + self.fc2.params(e, m)), []

    def inner_moves(self) -> list[Move]:
        """MLP hidden units by the L1 norm of the fc2 weights reading them (as an mbconv's
        expanded channels); the largest layer computes the same function after."""
        perm = _descending(self.fc2.weight.detach().abs().sum(0))
        return self.fc1.out_moves(perm) + self.fc2.in_moves(perm)


class TokenPoolFamily(Family):
    """Token pooling: its final layer norm over the leading embed dims."""

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        self.norm = LNUnit(max(v.in_ch for v in specs))

    def tensors(self, spec: LayerSpec) -> Tensors:
        return self.norm.params(spec.in_ch), []


class CellFamily(Family):
    """NAS-Bench-201 one-shot cell: every op on every edge; a spec picks one op per edge.

    The two convolutions of each edge (1x1, 3x3) have weights of their own; skip,
    average pooling and none have none.
    """

    CONVS: ClassVar[dict[str, int]] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: ConvUnit(channels, channels, [k]) for op, k in self.CONVS.items()}) for _ in NB201_EDGES
        )

    def tensors(self, spec: LayerSpec) -> Tensors:
        params, buffers = [], []
        for units, op in zip(self.edges, spec.edges):
            if op in self.CONVS:
                params += units[op].params(self.channels, self.channels, self.CONVS[op])
                buffers += units[op].buffers_for(self.channels)
        return params, buffers


# Per op, the family that shares weights between a slot's variants.
ELASTIC_FAMILIES: dict[str, type[Family]] = {"mbconv": MBConvFamily, "conv": ConvFamily, "skip": ConvFamily,
                                             "linear": LinearFamily, "norm": NormFamily,
                                             "patch_embed": PatchEmbedFamily, "encoder": EncoderFamily,
                                             "token_pool": TokenPoolFamily}
# Ops a slot may hold only one variant of (the builder's module, trained as is): the
# ResNet block of NB201's reduction stages has no elastic form.
FIXED_ONLY_OPS = frozenset({"resblock"})
SUPPORTED_OPS = frozenset(ELASTIC_FAMILIES) | frozenset(WEIGHTLESS) | {"nb201_cell"}
REFUSED_OPS = FIXED_ONLY_OPS  # refused as elastic; a lone variant of any op is Fixed
# Precision is not part of a family (family_key ignores it): the supernet trains float
# weights, and the fp32 and int8 variants of a block are one set of them, quantized
# only when a subnet is deployed.
INT8_SUPPORTED_OPS = INT8_OPS
INT8_REFUSED_OPS: frozenset[str] = frozenset()


def make_family(key: str, specs: Sequence[LayerSpec]) -> Family:
    """The family of `specs` (all with this key); a lone variant keeps the builder's module."""
    s = specs[0]
    if key in WEIGHTLESS or key == "identity":
        return Weightless()
    if s.op == "nb201_cell":
        return CellFamily(s.in_ch)
    if len(specs) == 1:
        return Fixed(s)
    if s.op not in ELASTIC_FAMILIES:
        raise ConfigError(f"a supernet slot cannot share weights between {len(specs)} variants of op {s.op!r} "
                       f"(e.g. {s.key}); elastic ops: {', '.join(sorted(ELASTIC_FAMILIES))}")
    return ELASTIC_FAMILIES[s.op](specs)


def _descending(importance: torch.Tensor) -> torch.Tensor:
    return torch.argsort(importance, descending=True, stable=True)
