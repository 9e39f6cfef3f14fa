"""Exact analytic counts of a LayerSpec: parameters, MACs and peak activation memory.

MACs are the multiply-accumulates of convolutions and linear layers (the figure papers
publish; torch's FlopCounterMode reports twice this). Parameters are trainable tensors
(BN running statistics are buffers and not counted).

Peak activation memory follows an execution model that a deployment runtime would
use: each conv is fused with its BN and activation, a tensor lives from the step that
writes it until its last reader has run, and a block's input stays alive while a
residual or shortcut still needs it. The peak of a network is the largest sum of
live tensor sizes over all steps, batch 1.

Bytes follow each block's precision (LayerSpec.precision). A float block stores its
deployed weights at the dtype's width; an int8 block stores what onnxruntime's
quantize_static writes in QDQ form, per conv or Gemm with W weights and C output
channels: int8 weights (W), float32 per-channel scales (4C), int8 zero points (C), and
with a bias an int32 bias, its float32 scale and int32 zero points (12C), so W + 17C,
or W + 5C without a bias. The scalar scale and zero point of each quantized activation
(5 bytes) are not weights, as the float counter leaves out scalars: the rule for both is
"initializers with at least one dimension" (nas.hardware.onnx_graph.weight_initializer_bytes).
Activations take 1 byte per element inside an int8 block; at a precision boundary the
block's input is alive in both forms while it is quantized or dequantized. (HardSwish
and the hard sigmoid gate run in float between a DQ and a Q inside an int8 block; those
short-lived float copies are not modelled.)

Transformer blocks (issue 18) count their linear layers and the two attention matmuls,
Q·K^T and attention·V (heads x tokens x tokens x head_dim MACs each); layer norms,
softmax and GELU are not MACs, as BN and activations are not. Their peak holds the
attention map (heads x tokens x tokens) beside the queries, keys and values
(`_encoder_peak`). They are float-only, with no BN: deployed weights are their parameters
(the class token and position embedding included).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from nas.errors import NasError
from nas.space.layers import INT8_OPS, NB201_EDGES, TOKEN_OPS, LayerSpec, nb201_edge_layer, resblock_layers

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise NasError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}") from None


def _area(channels: int, size: int) -> int:
    return channels * size * size


# ----------------------------------------------------------------------------- params

def _conv_params(s: LayerSpec) -> int:
    weights = s.kernel * s.kernel * (s.in_ch // s.groups) * s.out_ch
    return weights + (s.out_ch if s.bias else 0) + (2 * s.out_ch if s.bn else 0)


def _mbconv_params(s: LayerSpec) -> int:
    mid = s.mid_ch or s.in_ch
    total = 0
    if s.mid_ch:
        total += s.in_ch // s.groups * mid + 2 * mid
    total += mid * s.kernel * s.kernel + 2 * mid
    if s.se_ch:
        total += mid * s.se_ch + s.se_ch + s.se_ch * mid + mid
    total += mid // s.groups * s.out_ch + 2 * s.out_ch
    return total


def _skip_params(s: LayerSpec) -> int:
    return 0 if s.is_identity else s.in_ch * s.out_ch + 2 * s.out_ch


def _linear_params(s: LayerSpec) -> int:
    return s.in_ch * s.out_ch + (s.out_ch if s.bias else 0)


def _cell_params(s: LayerSpec) -> int:
    edges = (nb201_edge_layer(op, s.in_ch, s.in_size) for op in s.edges)
    return sum(layer_params(e) for e in edges if e is not None)


def _patch_embed_params(s: LayerSpec) -> int:
    # conv with bias, class token, position embedding
    return s.kernel * s.kernel * s.in_ch * s.out_ch + s.out_ch + s.cls_token * s.out_ch + s.tokens * s.out_ch


def _encoder_params(s: LayerSpec) -> int:
    c, a, m = s.in_ch, s.attn_dim, s.mid_ch
    norms = 2 * 2 * c
    attention = c * 3 * a + 3 * a + a * c + c  # qkv and output projection, with biases
    mlp = c * m + m + m * c + c
    return norms + attention + mlp


_PARAMS: dict[str, Callable[[LayerSpec], int]] = {
    "conv": _conv_params,
    "mbconv": _mbconv_params,
    "skip": _skip_params,
    "gap": lambda s: 0,
    "linear": _linear_params,
    "norm": lambda s: 2 * s.in_ch,
    "avgpool": lambda s: 0,
    "nb201_cell": _cell_params,
    "resblock": lambda s: sum(layer_params(p) for p in resblock_layers(s)),
    "patch_embed": _patch_embed_params,
    "encoder": _encoder_params,
    "token_pool": lambda s: 2 * s.in_ch,  # the final LayerNorm
}


def layer_params(spec: LayerSpec) -> int:
    """Trainable parameters of the block."""
    return _PARAMS[spec.op](spec)


# Parameters that vanish when each conv's BN is folded into the conv's bias.
_FOLDED_BN: dict[str, Callable[[LayerSpec], int]] = {
    "conv": lambda s: s.out_ch * (1 + s.bias) if s.bn else 0,
    "mbconv": lambda s: (s.mid_ch if s.mid_ch else 0) + (s.mid_ch or s.in_ch) + s.out_ch,
    "skip": lambda s: 0 if s.is_identity else s.out_ch,
    "gap": lambda s: 0,
    "linear": lambda s: 0,
    "norm": lambda s: 0,  # a lone BN stays a scale and a shift
    "avgpool": lambda s: 0,
    "nb201_cell": lambda s: sum(s.in_ch for op in s.edges if op.startswith("nor_conv")),
    "resblock": lambda s: 2 * s.out_ch,
    "patch_embed": lambda s: 0,  # no BN: transformer blocks deploy every parameter
    "encoder": lambda s: 0,
    "token_pool": lambda s: 0,
}


def layer_weight_params(spec: LayerSpec) -> int:
    """Deployed weights: parameters after BN folding (each BN leaves one bias per channel).

    This is what an inference runtime stores, and what the ONNX graphs of
    nas.hardware.onnx_graph hold as float initializers.
    """
    return layer_params(spec) - _FOLDED_BN[spec.op](spec)


# The convs and Gemms of an int8 block as (weights W, output channels C, has a bias), in
# the deployed graph (BN folded into a bias): what its int8 weight bytes are made of.
WeightLayers = list[tuple[int, int, bool]]


def _mbconv_weight_layers(s: LayerSpec) -> WeightLayers:
    mid = s.mid_ch or s.in_ch
    parts = [(s.in_ch // s.groups * mid, mid, True)] if s.mid_ch else []
    parts.append((mid * s.kernel * s.kernel, mid, True))
    if s.se_ch:
        parts += [(mid * s.se_ch, s.se_ch, True), (s.se_ch * mid, mid, True)]
    return parts + [(mid // s.groups * s.out_ch, s.out_ch, True)]


_WEIGHT_LAYERS: dict[str, Callable[[LayerSpec], WeightLayers]] = {
    "conv": lambda s: [(s.kernel * s.kernel * (s.in_ch // s.groups) * s.out_ch, s.out_ch, s.bn or s.bias)],
    "mbconv": _mbconv_weight_layers,
    "skip": lambda s: [] if s.is_identity else [(s.in_ch * s.out_ch, s.out_ch, True)],
    "gap": lambda s: [],
    "linear": lambda s: [(s.in_ch * s.out_ch, s.out_ch, s.bias)],
}
INT8_WEIGHT_BYTES = {True: 17, False: 5}  # bytes per output channel beside the int8 weights, with / without bias


def weight_layers(spec: LayerSpec) -> WeightLayers:
    """(W, C, bias) of each conv or Gemm of an int8-capable block (see _WEIGHT_LAYERS)."""
    return _WEIGHT_LAYERS[spec.op](spec)


def layer_weight_bytes(spec: LayerSpec, dtype: str = "float32") -> int:
    """Bytes of the deployed weights: at the dtype's width for a float block, in
    quantize_static's QDQ layout (W + 17C, or W + 5C without bias) for an int8 one."""
    if spec.precision == "int8":
        return sum(w + INT8_WEIGHT_BYTES[bool(bias)] * c for w, c, bias in weight_layers(spec))
    return layer_weight_params(spec) * dtype_bytes(dtype)


# ----------------------------------------------------------------------------- MACs

def _conv_macs(s: LayerSpec) -> int:
    return s.kernel * s.kernel * (s.in_ch // s.groups) * s.out_ch * s.out_size ** 2


def _mbconv_macs(s: LayerSpec) -> int:
    mid = s.mid_ch or s.in_ch
    total = 0
    if s.mid_ch:
        total += s.in_ch // s.groups * mid * s.in_size ** 2
    total += mid * s.kernel * s.kernel * s.out_size ** 2
    if s.se_ch:
        total += 2 * mid * s.se_ch
    total += mid // s.groups * s.out_ch * s.out_size ** 2
    return total


def _cell_macs(s: LayerSpec) -> int:
    edges = (nb201_edge_layer(op, s.in_ch, s.in_size) for op in s.edges)
    return sum(layer_macs(e) for e in edges if e is not None)


def _encoder_macs(s: LayerSpec) -> int:
    t, c, a, m = s.tokens, s.in_ch, s.attn_dim, s.mid_ch
    projections = t * c * 3 * a + t * a * c
    attention = 2 * t * t * a  # Q·K^T and attention·V: heads x tokens x tokens x head_dim each
    return projections + attention + 2 * t * c * m


_MACS: dict[str, Callable[[LayerSpec], int]] = {
    "conv": _conv_macs,
    "mbconv": _mbconv_macs,
    "skip": lambda s: 0 if s.is_identity else s.in_ch * s.out_ch * s.out_size ** 2,
    "gap": lambda s: 0,
    "linear": lambda s: s.in_ch * s.out_ch,
    "norm": lambda s: 0,
    "avgpool": lambda s: 0,
    "nb201_cell": _cell_macs,
    "resblock": lambda s: sum(layer_macs(p) for p in resblock_layers(s)),
    "patch_embed": lambda s: s.kernel * s.kernel * s.in_ch * s.out_ch * s.out_size ** 2,
    "encoder": _encoder_macs,
    "token_pool": lambda s: 0,
}


def layer_macs(spec: LayerSpec) -> int:
    """Multiply-accumulates of the block's convolutions and linear layers, batch 1."""
    return _MACS[spec.op](spec)


# ----------------------------------------------------------------------------- peak memory

def _mbconv_peak(s: LayerSpec) -> int:
    mid = s.mid_ch or s.in_ch
    x = _area(s.in_ch, s.in_size)
    dw_out = _area(mid, s.out_size)
    out = _area(s.out_ch, s.out_size)
    held = x if s.residual else 0  # the input waits for the residual add
    steps = []
    if s.mid_ch:
        expanded = _area(mid, s.in_size)
        steps += [x + expanded, held + expanded + dw_out]
    else:
        steps += [x + dw_out]
    if s.se_ch:
        # pool dw_out to a vector, reduce it, expand to the gate, then scale: the
        # scaling reads dw_out and the gate and writes a new tensor of dw_out's size
        steps += [held + dw_out + mid + s.se_ch, held + 2 * dw_out + mid]
    steps += [held + dw_out + out]
    if s.residual:
        steps += [x + 2 * out]
    return max(steps)


def _cell_peak(s: LayerSpec) -> int:
    """Nodes are computed in order; node j lives until the last node that reads it is done.

    Each edge writes its output into a temporary that is added to the node's
    accumulator; a skip edge adds its input directly and needs no temporary.
    """
    node = _area(s.in_ch, s.in_size)
    live_edges = [(to, frm, op) for (to, frm), op in zip(NB201_EDGES, s.edges) if op != "none"]
    last_reader = {j: max((to for to, frm, _ in live_edges if frm == j), default=-1) for j in range(3)}
    peak = node
    for to in (1, 2, 3):
        alive = sum(node for j in range(to) if last_reader[j] >= to)
        incoming = [op for t, _, op in live_edges if t == to]
        if not incoming:  # the node is a tensor of zeros
            peak = max(peak, alive + node)
        for n, op in enumerate(incoming):
            temporary = 0 if op == "skip_connect" else node
            accumulator = node if n > 0 else 0
            peak = max(peak, alive + accumulator + temporary)
    return peak


def _resblock_peak(s: LayerSpec) -> int:
    x = _area(s.in_ch, s.in_size)
    y = _area(s.out_ch, s.out_size)
    pooled = _area(s.in_ch, s.out_size)
    return max(x + y, x + 2 * y, x + y + pooled, y + pooled + y, 3 * y)


def _patch_embed_peak(s: LayerSpec) -> int:
    x = _area(s.in_ch, s.in_size)
    patches = _area(s.out_ch, s.out_size)  # the conv's output, flattened in place
    return max(x + patches, patches + s.tokens * s.out_ch)  # then class token and position embedding


def _encoder_peak(s: LayerSpec) -> int:
    """The input lives until the first residual add, its sum until the second. Attention
    runs as one kernel (scaled_dot_product_attention): scores and softmax write one map
    of heads x tokens x tokens, read with V into the heads' output."""
    t, c, a, m = s.tokens, s.in_ch, s.attn_dim, s.mid_ch
    x = t * c
    qkv, attn_map, heads_out, hidden = 3 * t * a, s.heads * t * t, t * a, t * m
    steps = [
        x + x,                                  # layer norm
        x + x + qkv,                            # qkv projection reads the normed tokens
        x + qkv + attn_map,                     # Q·K^T, softmax
        x + qkv + attn_map + heads_out,         # attention·V
        x + heads_out + x,                      # output projection
        x + x + x,                              # residual add writes a new tensor
        x + x,                                  # layer norm (the sum waits for the second add)
        x + x + hidden,                         # fc1 (+ activation, fused)
        x + hidden + x,                         # fc2
        x + x + x,                              # residual add
    ]
    return max(steps)


_PEAK: dict[str, Callable[[LayerSpec], int]] = {
    "conv": lambda s: _area(s.in_ch, s.in_size) + _area(s.out_ch, s.out_size),
    "mbconv": _mbconv_peak,
    "skip": lambda s: _area(s.in_ch, s.in_size) + (0 if s.is_identity else _area(s.out_ch, s.out_size)),
    "gap": lambda s: _area(s.in_ch, s.in_size) + s.in_ch,
    "linear": lambda s: s.in_ch + s.out_ch,
    "norm": lambda s: 2 * _area(s.in_ch, s.in_size),
    "avgpool": lambda s: _area(s.in_ch, s.in_size) + _area(s.out_ch, s.out_size),
    "nb201_cell": _cell_peak,
    "resblock": _resblock_peak,
    "patch_embed": _patch_embed_peak,
    "encoder": _encoder_peak,
    "token_pool": lambda s: s.tokens * s.in_ch + 2 * s.in_ch,  # tokens, pooled, normed
}


def layer_peak_elements(spec: LayerSpec) -> int:
    """Largest number of activation elements alive at once inside the block, batch 1."""
    return _PEAK[spec.op](spec)


# Every op of the LayerSpec vocabulary has an entry in each table above (the op-conformance test holds them to OPS).
SUPPORTED_OPS = frozenset(_PARAMS) & frozenset(_FOLDED_BN) & frozenset(_MACS) & frozenset(_PEAK)
REFUSED_OPS: frozenset[str] = frozenset()
# Ops counted in int8 (their weight layers are known); layers.INT8_OPS are all there is.
INT8_SUPPORTED_OPS = frozenset(_WEIGHT_LAYERS) & INT8_OPS
INT8_REFUSED_OPS: frozenset[str] = frozenset()


def _input_elements(spec: LayerSpec) -> int:
    if spec.op in TOKEN_OPS:
        return spec.tokens * spec.in_ch
    return spec.in_ch if spec.op == "linear" else _area(spec.in_ch, spec.in_size)


def _output_elements(spec: LayerSpec) -> int:
    if spec.op in ("patch_embed", "encoder"):
        return spec.tokens * spec.out_ch
    return spec.out_ch * spec.out_size * spec.out_size


def layer_peak_bytes(spec: LayerSpec, dtype: str = "float32") -> int:
    """Largest number of activation bytes alive at once inside the block, batch 1: one
    byte per element in an int8 block, and at a precision boundary the input in both
    forms (the float tensor and its uint8 copy) while it is converted."""
    float_bytes = dtype_bytes(dtype)
    peak = layer_peak_elements(spec) * (1 if spec.precision == "int8" else float_bytes)
    if spec.precision != spec.in_precision:
        peak = max(peak, _input_elements(spec) * (float_bytes + 1))
    return peak


def layer_io_elements(spec: LayerSpec) -> int:
    """Activation elements a block reads and writes at its boundary (its input and output).

    The traffic term of the analytic energy model: tensors inside a fused block are
    assumed to stay on chip, the block's input and output go through memory.
    """
    return _input_elements(spec) + _output_elements(spec)


# ----------------------------------------------------------------------------- whole networks

def network_counts(layers: Sequence[LayerSpec], dtype: str = "float32") -> dict[str, int]:
    """params, macs, peak_activation_bytes and weight_bytes (deployed, BN folded, each block
    at its precision) of a chain."""
    return {
        "params": sum(layer_params(s) for s in layers),
        "macs": sum(layer_macs(s) for s in layers),
        "peak_activation_bytes": max(layer_peak_bytes(s, dtype) for s in layers),
        "weight_bytes": sum(layer_weight_bytes(s, dtype) for s in layers),
    }
