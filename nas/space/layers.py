"""LayerSpec: the one description of a concrete layer.

A LayerSpec is a whole block (an inverted residual, a NAS-Bench-201 cell, a stem conv)
with every number resolved: absolute channel counts, input size, squeeze width. The
torch builder, the analytic counters, LUT keys, profiling micro-models and predictor
features all read it; nothing describes a layer a second way. Blocks rather than
primitive ops are the unit so that a latency table captures fusion inside a block.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from numbers import Integral

from nas.errors import NasError, unknown_key

OPS = ("conv", "mbconv", "skip", "gap", "linear", "norm", "avgpool", "nb201_cell", "resblock",
       "patch_embed", "encoder", "token_pool")
ACTIVATIONS = ("none", "relu", "relu6", "hswish", "swish", "gelu")
# Ops that read a token tensor (N, tokens, in_ch) rather than a feature map (N, C, H, W);
# patch_embed reads a feature map and writes tokens (see LayerSpec).
TOKEN_OPS = frozenset({"encoder", "token_pool"})
LN_EPS = 1e-6  # the layer norms' epsilon (ViT's and DeiT's), in torch and in ONNX alike
GATES = ("sigmoid", "hsigmoid")
# Numeric formats a block can be deployed in. int8 is onnxruntime's QDQ form (uint8
# asymmetric activations, int8 symmetric per-channel weights, int32 bias); the torch
# module is the float one for every precision, so precision changes deployment only.
PRECISIONS = ("fp32", "int8")
# Ops with an int8 deployment form: the chain ops whose every part onnxruntime runs as an
# integer kernel or between a DQ and a Q. A LayerSpec of another op refuses int8.
INT8_OPS = frozenset({"conv", "mbconv", "skip", "gap", "linear"})

# NAS-Bench-201 edge operations in the benchmark's own order (their code indices).
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edges of an NB201 cell as (to_node, from_node), in arch-string order.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded layer of this stride (odd kernels, pad k//2)."""
    return -(-size // stride)


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """A block with every number resolved (batch-independent, square inputs).

    op          one of OPS
    in_ch/out_ch  channels in and out; in_size the input height (= width)
    kernel/stride the spatial conv (depthwise one for mbconv)
    mid_ch      mbconv: channels after the 1x1 expansion conv; 0 = no expansion conv
    groups      groups of the 1x1 convs of an mbconv, or of a plain conv
    shuffle     channel shuffle after a grouped expansion conv (ShuffleNet/FBNet)
    act         activation after each conv except the last of a block (conv: after it)
    se_ch       squeeze-and-excitation width; 0 = no SE
    se_gate     gate of the SE block
    bn, bias    conv/linear: batch norm after, bias in the conv/linear
    preact      conv: activation before the conv (NB201's ReLU-Conv-BN)
    edges       nb201_cell: the six edge ops, NB201_EDGES order
    precision   how the block is deployed (PRECISIONS)
    in_precision  the precision of the tensor the block reads, i.e. of the block before it
                (fp32 for a network's first block): a block after another precision pays
                the quantize or dequantize at the boundary, so each boundary is timed once
    cls_token   a class token leads the token sequence (patch_embed: it adds one)
    heads       encoder: attention heads
    head_dim    encoder: width of each head; 0 = in_ch // heads (ViT's), else the
                attention width heads * head_dim may differ from the embed dim (AutoFormer)

    Transformer blocks (issue 18). A token tensor is (N, tokens, C): in_ch/out_ch are the
    embed dim and in_size the side of the square patch grid the tokens came from, so
    tokens = in_size**2 + cls_token (`tokens`), and a resolution reaches tokens as it reaches
    feature maps.
    patch_embed  a kernel = stride = patch conv (with bias) from a feature map or image to
                out_ch channels, flattened to tokens, a class token prepended when `cls_token`,
                plus a learned position embedding (tokens x out_ch). On a hybrid's
                feature map this is the reshape to tokens (patch 1: a 1x1 projection).
    encoder     pre-norm transformer layer: x + proj(MHSA(LN(x))), then
                x + fc2(act(fc1(LN(x)))), MLP hidden width mid_ch; every linear has a bias.
    token_pool  the class token (when the sequence has one) or the mean of the tokens,
                then the final LayerNorm: (N, C), like gap.
    """

    op: str
    in_ch: int
    out_ch: int
    in_size: int
    kernel: int = 1
    stride: int = 1
    mid_ch: int = 0
    groups: int = 1
    shuffle: bool = False
    act: str = "none"
    se_ch: int = 0
    se_gate: str = "sigmoid"
    bn: bool = True
    bias: bool = False
    preact: bool = False
    edges: tuple[str, ...] = ()
    precision: str = "fp32"
    in_precision: str = "fp32"
    cls_token: bool = False
    heads: int = 0
    head_dim: int = 0

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise NasError(f"invalid layer {self.key}: {problem}")

    def _problem(self) -> str:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool):
                return f"{name} must be an integer, got {value!r}"
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                return f"{name} must be true or false, got {getattr(self, name)!r}"
        if not isinstance(self.edges, tuple):
            return f"edges must be a tuple of NB201 ops, got {self.edges!r}"
        if self.op not in OPS:
            return f"unknown op {self.op!r}; known ops: {', '.join(OPS)}"
        if self.act not in ACTIVATIONS:
            return f"unknown activation {self.act!r}; known: {', '.join(ACTIVATIONS)}"
        if self.se_gate not in GATES:
            return f"unknown SE gate {self.se_gate!r}; known: {', '.join(GATES)}"
        for name in ("precision", "in_precision"):
            if getattr(self, name) not in PRECISIONS:
                return f"{name}: {unknown_key(getattr(self, name), PRECISIONS, 'precision')}"
        if self.precision == "int8" and self.op not in INT8_OPS:
            return f"op {self.op} has no int8 form; int8 ops: {', '.join(sorted(INT8_OPS))}"
        if min(self.in_ch, self.out_ch, self.in_size, self.kernel, self.stride, self.groups) < 1:
            return "channels, size, kernel, stride and groups must be positive"
        if min(self.mid_ch, self.se_ch) < 0:
            return "mid_ch and se_ch must not be negative"
        if self.kernel % 2 == 0 and self.op in ("conv", "mbconv", "avgpool"):
            return f"kernel {self.kernel} must be odd (same padding)"
        if self.op == "conv" and (self.in_ch % self.groups or self.out_ch % self.groups):
            return f"groups {self.groups} must divide in_ch {self.in_ch} and out_ch {self.out_ch}"
        if self.op == "mbconv":
            mid = self.mid_ch or self.in_ch
            if self.mid_ch and (self.in_ch % self.groups or self.mid_ch % self.groups):
                return f"groups {self.groups} must divide in_ch {self.in_ch} and mid_ch {self.mid_ch}"
            if mid % self.groups or self.out_ch % self.groups:
                return f"groups {self.groups} must divide mid_ch {mid} and out_ch {self.out_ch}"
        if self.op == "nb201_cell":
            if len(self.edges) != len(NB201_EDGES) or any(e not in NB201_OPS for e in self.edges):
                return f"an NB201 cell needs 6 edge ops from {', '.join(NB201_OPS)}"
            if self.in_ch != self.out_ch or self.stride != 1:
                return "an NB201 cell keeps channels and size"
        if self.op in ("gap", "norm", "avgpool", "encoder", "token_pool") and self.in_ch != self.out_ch:
            return f"{self.op} keeps the channel count"
        if self.op in ("gap", "linear") and self.stride != 1:
            return f"{self.op} has no stride"
        return self._transformer_problem()

    def _transformer_problem(self) -> str:
        if min(self.heads, self.head_dim) < 0:
            return "heads and head_dim must not be negative"
        if self.cls_token and self.op not in TOKEN_OPS | {"patch_embed"}:
            return f"{self.op} has no token sequence, so no class token"
        if self.op == "patch_embed":
            if self.kernel != self.stride:
                return f"a patch embedding's kernel and stride are its patch size, got {self.kernel} and {self.stride}"
            if self.in_size % self.kernel:
                return (f"patch {self.kernel} does not tile the {self.in_size}x{self.in_size} input "
                        f"({self.in_size / self.kernel:g} patches a side)")
        if self.op == "encoder":
            if self.heads < 1 or self.mid_ch < 1:
                return "an encoder needs heads and an MLP width (mid_ch)"
            if not self.head_dim and self.in_ch % self.heads:
                return f"heads {self.heads} must divide the embed dim {self.in_ch} (or give head_dim)"
        if self.op in TOKEN_OPS and self.stride != 1:
            return f"{self.op} has no stride"
        return ""

    @property
    def out_size(self) -> int:
        """Output height (a token block's: its patch grid's side): 1 after global or token
        pooling and for linear layers."""
        if self.op in ("gap", "linear", "token_pool"):
            return 1
        return out_size(self.in_size, self.stride)

    @property
    def tokens(self) -> int:
        """Length of the token sequence the block reads (encoder, token_pool) or writes
        (patch_embed); 0 for blocks without one."""
        if self.op == "patch_embed":
            return self.out_size ** 2 + self.cls_token
        return self.in_size ** 2 + self.cls_token if self.op in TOKEN_OPS else 0

    @property
    def attn_dim(self) -> int:
        """encoder: the width of queries, keys and values over all heads (heads * head_dim)."""
        return self.heads * (self.head_dim or self.in_ch // self.heads) if self.op == "encoder" else 0

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output (inverted residuals only)."""
        return self.op == "mbconv" and self.stride == 1 and self.in_ch == self.out_ch

    @property
    def is_identity(self) -> bool:
        """A skip that passes its input through unchanged."""
        return self.op == "skip" and self.stride == 1 and self.in_ch == self.out_ch

    @property
    def key(self) -> str:
        """Stable, readable identity of the layer: the LUT key and the micro-model name."""
        parts = [self.op, f"{self.in_ch}>{self.out_ch}", f"s{self.in_size}"]
        for name, dflt in _KEY_DEFAULTS.items():
            value = getattr(self, name)
            if value != dflt:
                value = "+".join(value) if isinstance(value, tuple) else value
                parts.append(f"{name}={value}")
        if self.quantized:  # both, so a mixed key reads whole; a float block's key is as before
            parts += [f"precision={self.precision}", f"in_precision={self.in_precision}"]
        return " ".join(parts)

    @property
    def quantized(self) -> bool:
        """Whether the block or its input is int8 (what float-only consumers cannot take)."""
        return (self.precision, self.in_precision) != ("fp32", "fp32")

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready) for files and reports."""
        out = {f.name: getattr(self, f.name) for f in fields(LayerSpec)}
        out["edges"] = list(self.edges)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "LayerSpec":
        known = {f.name for f in fields(LayerSpec)}
        unknown = set(data) - known
        if unknown:
            raise NasError(f"unknown LayerSpec field(s) {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        if "edges" in data:
            data["edges"] = tuple(data["edges"])
        return cls(**data)


_INT_FIELDS = ("in_ch", "out_ch", "in_size", "kernel", "stride", "mid_ch", "groups", "se_ch", "heads", "head_dim")
_BOOL_FIELDS = ("shuffle", "bn", "bias", "preact", "cls_token")
_KEY_DEFAULTS = {f.name: f.default for f in fields(LayerSpec)
                 if f.name not in ("op", "in_ch", "out_ch", "in_size", "precision", "in_precision")}


@functools.lru_cache(maxsize=1024)  # LayerSpecs are immutable; cell tables ask for the same few edges
def nb201_edge_layer(op: str, channels: int, size: int) -> LayerSpec | None:
    """The LayerSpec of one NB201 edge op; None for 'none' (the edge is absent)."""
    if op == "none":
        return None
    if op == "skip_connect":
        return LayerSpec("skip", channels, channels, size)
    if op == "avg_pool_3x3":
        return LayerSpec("avgpool", channels, channels, size, kernel=3)
    kernel = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}[op]
    return LayerSpec("conv", channels, channels, size, kernel=kernel, act="relu", preact=True)


def resblock_layers(spec: LayerSpec) -> tuple[LayerSpec, LayerSpec, LayerSpec]:
    """NB201's reduction block as its parts: conv_a, conv_b and the shortcut's 1x1 conv.

    The shortcut is a 2x2 average pool followed by a bias-free 1x1 conv without BN.
    """
    size_out = spec.out_size
    conv_a = LayerSpec("conv", spec.in_ch, spec.out_ch, spec.in_size, kernel=3, stride=spec.stride, act="relu", preact=True)
    conv_b = LayerSpec("conv", spec.out_ch, spec.out_ch, size_out, kernel=3, act="relu", preact=True)
    shortcut = LayerSpec("conv", spec.in_ch, spec.out_ch, size_out, bn=False)
    return conv_a, conv_b, shortcut
