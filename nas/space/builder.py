"""LayerSpec -> torch modules.

The modules use nothing but torch at run time, so a built network can be saved,
traced and exported without hwnas. Each module mirrors the structure that
`nas.space.counters` counts; the tests hold the two together.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.space.layers import INT8_OPS, LN_EPS, NB201_EDGES, LayerSpec, nb201_edge_layer, resblock_layers


def activation(name: str) -> nn.Module:
    return {
        "none": nn.Identity,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "hswish": nn.Hardswish,
        "swish": nn.SiLU,
        "gelu": nn.GELU,  # exact (erf) GELU, as ViT and DeiT use
    }[name]()


def _gate(name: str) -> nn.Module:
    return {"sigmoid": nn.Sigmoid, "hsigmoid": nn.Hardsigmoid}[name]()


class ConvBNAct(nn.Sequential):
    """Conv (+BN) with its activation after, or before when `preact` (ReLU-Conv-BN)."""

    def __init__(self, spec: LayerSpec) -> None:
        layers: list[nn.Module] = [activation(spec.act)] if spec.preact else []
        layers.append(nn.Conv2d(spec.in_ch, spec.out_ch, spec.kernel, spec.stride, spec.kernel // 2,
                                groups=spec.groups, bias=spec.bias))
        if spec.bn:
            layers.append(nn.BatchNorm2d(spec.out_ch))
        if not spec.preact:
            layers.append(activation(spec.act))
        super().__init__(*layers)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int, gate: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.act = nn.ReLU()
        self.gate = _gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ input)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        mid = spec.mid_ch or spec.in_ch
        layers: list[nn.Module] = []
        if spec.mid_ch:
            layers.append(ConvBNAct(LayerSpec("conv", spec.in_ch, mid, spec.in_size, groups=spec.groups, act=spec.act)))
            if spec.shuffle and spec.groups > 1:
                layers.append(ChannelShuffle(spec.groups))
        layers.append(ConvBNAct(LayerSpec("conv", mid, mid, spec.in_size, kernel=spec.kernel, stride=spec.stride,
                                          groups=mid, act=spec.act)))
        if spec.se_ch:
            layers.append(SqueezeExcite(mid, spec.se_ch, spec.se_gate))
        layers.append(ConvBNAct(LayerSpec("conv", mid, spec.out_ch, spec.out_size, groups=spec.groups)))
        self.body = nn.Sequential(*layers)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class LinearAct(nn.Sequential):
    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(nn.Linear(spec.in_ch, spec.out_ch, bias=spec.bias), activation(spec.act))


class NB201Cell(nn.Module):
    """node_i = sum of op(node_j) over the cell's edges j -> i; the output is node 3."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.channels_size = (spec.in_ch, spec.in_size)
        self.edges = nn.ModuleDict()
        for (to, frm), op in zip(NB201_EDGES, spec.edges):
            edge = nb201_edge_layer(op, spec.in_ch, spec.in_size)
            if edge is not None:
                self.edges[f"{to}<-{frm}"] = build_layer(edge)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for to in (1, 2, 3):
            inputs = [self.edges[f"{to}<-{frm}"](nodes[frm]) for frm in range(to) if f"{to}<-{frm}" in self.edges]
            nodes.append(sum(inputs[1:], inputs[0]) if inputs else torch.zeros_like(x))
        return nodes[3]


class ResBlock(nn.Module):
    """NB201's reduction block: two ReLU-Conv-BN convs, shortcut = avg pool 2x2 + 1x1 conv."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        conv_a, conv_b, shortcut = resblock_layers(spec)
        self.body = nn.Sequential(ConvBNAct(conv_a), ConvBNAct(conv_b))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), ConvBNAct(shortcut))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class PatchEmbed(nn.Module):
    """Patch conv -> tokens (N, tokens, C), [class token first], + position embedding."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.proj = nn.Conv2d(spec.in_ch, spec.out_ch, spec.kernel, spec.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.out_ch)) if spec.cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.tokens, spec.out_ch))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed


class Encoder(nn.Module):
    """Pre-norm transformer layer: x + proj(MHSA(LN(x))), then x + MLP(LN(x))."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.heads = spec.heads
        self.norm1 = nn.LayerNorm(spec.in_ch, eps=LN_EPS)
        self.qkv = nn.Linear(spec.in_ch, 3 * spec.attn_dim)
        self.proj = nn.Linear(spec.attn_dim, spec.in_ch)
        self.norm2 = nn.LayerNorm(spec.in_ch, eps=LN_EPS)
        self.fc1 = nn.Linear(spec.in_ch, spec.mid_ch)
        self.act = activation(spec.act)
        self.fc2 = nn.Linear(spec.mid_ch, spec.in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (n, heads, t, head_dim)
        x = x + self.proj(y.transpose(1, 2).reshape(n, t, -1))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TokenPool(nn.Module):
    """The class token, or the mean of the tokens without one; then the final LayerNorm."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.cls_token = spec.cls_token
        self.norm = nn.LayerNorm(spec.in_ch, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x[:, 0] if self.cls_token else x.mean(1))


def _skip(spec: LayerSpec) -> nn.Module:
    if spec.is_identity:
        return nn.Identity()
    return ConvBNAct(LayerSpec("conv", spec.in_ch, spec.out_ch, spec.in_size, stride=spec.stride, act="relu"))


_BUILDERS: dict[str, Callable[[LayerSpec], nn.Module]] = {
    "conv": ConvBNAct,
    "mbconv": MBConv,
    "skip": _skip,
    "gap": lambda s: GlobalAvgPool(),
    "linear": LinearAct,
    "norm": lambda s: nn.Sequential(nn.BatchNorm2d(s.in_ch), activation(s.act)),
    "avgpool": lambda s: nn.AvgPool2d(s.kernel, s.stride, s.kernel // 2, count_include_pad=False),
    "nb201_cell": NB201Cell,
    "resblock": ResBlock,
    "patch_embed": PatchEmbed,
    "encoder": Encoder,
    "token_pool": TokenPool,
}


SUPPORTED_OPS = frozenset(_BUILDERS)
REFUSED_OPS: frozenset[str] = frozenset()
# An int8 block builds its float module: networks train in float, and precision only
# changes how the block is deployed (quantized from these weights after training).
INT8_SUPPORTED_OPS = INT8_OPS
INT8_REFUSED_OPS: frozenset[str] = frozenset()


def build_layer(spec: LayerSpec) -> nn.Module:
    """The torch module of one block (the float module at every precision)."""
    return _BUILDERS[spec.op](spec)


# The most memory a network built here may need (float32 weights + the peak activation at
# batch 1, as nas.space.counters counts them): far beyond every shipped space, and a clear
# refusal instead of torch dying in a 192 GB allocation.
MAX_NETWORK_BYTES = 16 * 2**30


def build_network(layers: Sequence[LayerSpec]) -> nn.Sequential:
    """A plain nn.Sequential of the blocks; input (N, C, H, W) -> logits (N, classes)."""
    check_network_size(layers)
    return nn.Sequential(*(build_layer(s) for s in layers))


def check_network_size(layers: Sequence[LayerSpec]) -> None:
    """Refuse, before allocating anything, a network beyond MAX_NETWORK_BYTES."""
    from nas.errors import NasError
    from nas.space.counters import network_counts

    counts = network_counts(layers)
    need = counts["params"] * 4 + counts["peak_activation_bytes"]
    if need > MAX_NETWORK_BYTES:
        raise NasError(f"the network needs about {need / 2**30:,.1f} GiB ({counts['params']:,} parameters and "
                       f"{counts['peak_activation_bytes'] / 2**30:,.1f} GiB of activations per image), beyond the "
                       f"{MAX_NETWORK_BYTES / 2**30:.0f} GiB hwnas builds; shrink the space's widths or depths")
