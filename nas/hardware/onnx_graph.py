"""LayerSpec -> ONNX graphs, built directly with onnx.helper.

Profiling needs one micro-model per unique LayerSpec and whole networks for
validation; exporting each through torch costs seconds per model, writing the graph
from the LayerSpec costs milliseconds. The graphs are what a deployment runtime sees:
batch norm is folded into the preceding conv (a bias), so the float initializers of a
graph are exactly the deployed weights that `nas.space.counters.layer_weight_bytes`
counts. Weights are random (He-scaled, so activations stay in a normal float range
and no denormals skew timings).

int8 blocks are written in the QDQ form that onnxruntime's `quantize_static` writes and
its CPU execution provider fuses into integer kernels (QLinearConv, QLinearAdd, QGemm,
...; docs/research/int8): every activation tensor is QuantizeLinear -> DequantizeLinear
to uint8 (asymmetric, one pair shared by all its readers), conv and Gemm weights are
int8 symmetric per output channel (axis 0) with int8 zero points, biases int32 with a
float scale s_x * s_w and int32 zero points, and no Relu/Clip follows an int8 conv (the
output's zero point 0 is the relu). HardSwish/HardSigmoid stay float between a DQ and a
Q, as quantize_static leaves them. Scales are fixed plausible values: timing does not
depend on them. A tensor between blocks takes the producer's precision, and the block
after a boundary pays it (a Q before an int8 block, a DQ before a float one). A model's
own input and output are in the precision of its end blocks: an int8 input or output
is uint8 channels-last (NHWC), which cancels against the Transpose onnxruntime puts at
the edge of every integer region, so a micro-model of a block inside an int8 run times
the bare integer kernels; a network whose last block is int8 returns quantized logits.

The same writer deploys a trained network (`Deployment`, from nas.quant): the weights then
come, in the order the graph reads them, from the BN-folded module, the activation scales
and zero points from calibration, and a deployed model's int8 output is dequantized to
float logits. So the int8 ONNX a user receives has the node layout and fusion of the
micro-models its LUT timed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nas.errors import NasError
from nas.space.layers import LN_EPS, NB201_EDGES, TOKEN_OPS, LayerSpec, nb201_edge_layer, resblock_layers

OPSET = 17
ACT_SCALE = 0.05  # fixed activation scale of int8 micro-models (timing does not depend on it)
GATE_SCALE = 1.0 / 255  # sigmoid-like outputs in [0, 1]
SIGNED_ZP, RELU_ZP = 128, 0


@dataclass
class Deployment:
    """Real parameters for a deployed network instead of random weights and fixed scales.

    weights: the float parameter arrays in the order the emitter reads them (per conv:
      weight, then bias when it has one; per linear: weight, bias; per norm: scale, shift),
      BN already folded (nas.quant.fold).
    act_qparams: (scale, zero point) of each quantized activation tensor in the order the
      graph quantizes them; None writes placeholders (a calibration pass reads the graph
      to learn which tensors to observe, then writes it again with their ranges).
    reduce_range: int8 weights in [-64, 64] (x86 without VNNI).
    """

    weights: Sequence[np.ndarray]
    act_qparams: Sequence[tuple[float, int]] | None = None
    reduce_range: bool = False


@dataclass(frozen=True)
class NetworkGraph:
    """A written network and what quantizing it needs to know about it.

    quantized: each QuantizeLinear output in graph order with the activation its range
      stands for (relu / relu6 after an int8 conv are the range, not a node).
    float_of: each weight or bias DequantizeLinear output -> the float array it quantizes
      (calibration runs the float network, as quantize_static does).
    """

    model: onnx.ModelProto
    quantized: list[tuple[str, str]]
    float_of: dict[str, np.ndarray]


@dataclass(frozen=True)
class QTensor:
    """A uint8 activation tensor with its quantization (scalar initializer names)."""

    name: str
    scale: float
    zp: int
    scale_name: str
    zp_name: str


class _Graph:
    """Accumulates nodes and initializers under unique names.

    `compact` weights repeat one small random pool: timing does not depend on weight
    values, and deflate then shrinks a profiling kit by orders of magnitude.
    """

    def __init__(self, seed: int, compact: bool = False, deployment: Deployment | None = None) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.pool = self.rng.standard_normal(251).astype(np.float32) if compact else None
        self.count = 0
        self.dq_of: dict[str, str] = {}  # one DequantizeLinear per quantized tensor, shared by its readers
        self.deployment = deployment
        self.reduce_range = bool(deployment and deployment.reduce_range)
        self._weights = iter(deployment.weights) if deployment else None
        self._qparams = iter(deployment.act_qparams) if deployment and deployment.act_qparams is not None else None
        self.quantized: list[tuple[str, str]] = []
        self.float_of: dict[str, np.ndarray] = {}  # weight / bias DQ output -> the float array it quantizes

    def weight(self, shape: tuple[int, ...], mean: float, std: float) -> np.ndarray:
        """The next parameter array: the deployed one, else random (constant when std is 0)."""
        if self._weights is not None:
            w = next(self._weights, None)
            if w is None or tuple(w.shape) != tuple(shape):
                raise NasError(f"deployed weights do not fit the graph: expected an array of shape {shape}, "
                               f"got {None if w is None else tuple(w.shape)}")
            return np.asarray(w, np.float32)
        if std == 0:
            return np.full(shape, mean, np.float32)
        return self.random(shape, mean, std)

    def random(self, shape: tuple[int, ...], mean: float, std: float) -> np.ndarray:
        if self.pool is None:
            return self.rng.normal(mean, std, shape).astype(np.float32)
        return (np.resize(self.pool, shape) * std + mean).astype(np.float32)

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, array: np.ndarray, prefix: str) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: Sequence[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    # -- primitives -------------------------------------------------------------
    def conv(self, x: str, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             bias: bool = True, pad: bool = True) -> str:
        fan_in = in_ch // groups * kernel * kernel
        w = self.weight((out_ch, in_ch // groups, kernel, kernel), 0, np.sqrt(2.0 / fan_in))
        inputs = [x, self.const(w, "w")]
        if bias:
            inputs.append(self.const(self.weight((out_ch,), 0, 0.01), "b"))
        p = kernel // 2 if pad else 0  # 'same' padding, or none (a patch embedding's)
        return self.node("Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride],
                         pads=[p, p, p, p], group=groups)

    def act(self, x: str, name: str) -> str:
        if name == "none":
            return x
        if name == "relu":
            return self.node("Relu", [x])
        if name == "relu6":
            return self.node("Clip", [x, self.const(np.array(0, np.float32), "lo"), self.const(np.array(6, np.float32), "hi")])
        if name == "hswish":
            return self.node("HardSwish", [x])
        if name == "swish":
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        if name == "sigmoid":
            return self.node("Sigmoid", [x])
        if name == "hsigmoid":
            return self.node("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)
        if name == "gelu":  # exact GELU, 0.5 x (1 + erf(x / sqrt 2)): opset 17 has no Gelu; onnxruntime fuses this
            erf = self.node("Erf", [self.node("Div", [x, self.const(np.array(np.sqrt(2.0), np.float32), "sqrt2")])])
            y = self.node("Mul", [x, self.node("Add", [erf, self.const(np.array(1, np.float32), "one")])])
            return self.node("Mul", [y, self.const(np.array(0.5, np.float32), "half")])
        raise ValueError(name)

    def dense(self, x: str, in_ch: int, out_ch: int) -> str:
        """A linear layer on the last axis of a token tensor: MatMul by (in, out) + bias."""
        w = self.weight((out_ch, in_ch), 0, np.sqrt(1.0 / in_ch))  # torch's (out, in) layout, the deployed order
        b = self.weight((out_ch,), 0, 0.01)
        y = self.node("MatMul", [x, self.const(np.ascontiguousarray(w.T), "w")])
        return self.node("Add", [y, self.const(b, "b")])

    def layer_norm(self, x: str, channels: int) -> str:
        scale = self.const(self.weight((channels,), 1, 0.05), "ln_scale")
        shift = self.const(self.weight((channels,), 0, 0.05), "ln_shift")
        return self.node("LayerNormalization", [x, scale, shift], axis=-1, epsilon=LN_EPS)

    def conv_layer(self, x: str, s: LayerSpec) -> str:
        """A `conv` LayerSpec: [act] conv(+folded BN) [act]."""
        if s.preact:
            x = self.act(x, s.act)
        y = self.conv(x, s.in_ch, s.out_ch, s.kernel, s.stride, s.groups, bias=s.bn or s.bias)
        return y if s.preact else self.act(y, s.act)

    # -- blocks -----------------------------------------------------------------
    def layer(self, x: str, s: LayerSpec) -> str:
        return EMITTERS[s.op](self, x, s)

    def _conv(self, x: str, s: LayerSpec) -> str:
        return self.conv_layer(x, s)

    def _mbconv(self, x: str, s: LayerSpec) -> str:
        mid = s.mid_ch or s.in_ch
        y = x
        if s.mid_ch:
            y = self.act(self.conv(y, s.in_ch, mid, groups=s.groups), s.act)
            if s.shuffle and s.groups > 1:
                y = self._shuffle(y, mid, s.in_size, s.groups)
        y = self.act(self.conv(y, mid, mid, s.kernel, s.stride, groups=mid), s.act)
        if s.se_ch:
            squeeze = self.node("GlobalAveragePool", [y])
            gate = self.conv(self.act(self.conv(squeeze, mid, s.se_ch), "relu"), s.se_ch, mid)
            y = self.node("Mul", [y, self.act(gate, s.se_gate)])
        y = self.conv(y, mid, s.out_ch, groups=s.groups)
        return self.node("Add", [x, y]) if s.residual else y

    def _shuffle(self, x: str, channels: int, size: int, groups: int) -> str:
        grouped = self.const(np.array([-1, groups, channels // groups, size, size], np.int64), "shape")
        flat = self.const(np.array([-1, channels, size, size], np.int64), "shape")
        y = self.node("Reshape", [x, grouped])
        y = self.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, flat])

    def _skip(self, x: str, s: LayerSpec) -> str:
        if s.is_identity:
            return self.node("Identity", [x])
        return self.act(self.conv(x, s.in_ch, s.out_ch, 1, s.stride), "relu")

    def _gap(self, x: str, s: LayerSpec) -> str:
        return self.node("Flatten", [self.node("GlobalAveragePool", [x])])

    def _linear(self, x: str, s: LayerSpec) -> str:
        w = self.weight((s.out_ch, s.in_ch), 0, np.sqrt(1.0 / s.in_ch))
        inputs = [x, self.const(w, "w")]
        if s.bias:
            inputs.append(self.const(self.weight((s.out_ch,), 0, 0), "b"))
        return self.act(self.node("Gemm", inputs, transB=1), s.act)

    def _norm(self, x: str, s: LayerSpec) -> str:
        scale = self.const(self.weight((s.in_ch, 1, 1), 1, 0.05), "scale")
        shift = self.const(self.weight((s.in_ch, 1, 1), 0, 0.05), "shift")
        return self.act(self.node("Add", [self.node("Mul", [x, scale]), shift]), s.act)

    def _avgpool(self, x: str, s: LayerSpec) -> str:
        pad = s.kernel // 2
        return self.node("AveragePool", [x], kernel_shape=[s.kernel, s.kernel], strides=[s.stride, s.stride],
                         pads=[pad, pad, pad, pad], count_include_pad=0)

    def _nb201_cell(self, x: str, s: LayerSpec) -> str:
        nodes = [x]
        for to in (1, 2, 3):
            inputs = []
            for (t, frm), op in zip(NB201_EDGES, s.edges):
                edge = nb201_edge_layer(op, s.in_ch, s.in_size) if t == to else None
                if edge is not None:
                    inputs.append(nodes[frm] if edge.is_identity else self.layer(nodes[frm], edge))
            if not inputs:
                nodes.append(self.node("Sub", [x, x]))  # zeros without a constant
            else:
                nodes.append(inputs[0] if len(inputs) == 1 else self.node("Sum", inputs))
        return nodes[3] if nodes[3] != x else self.node("Identity", [x])

    def _resblock(self, x: str, s: LayerSpec) -> str:
        conv_a, conv_b, shortcut = resblock_layers(s)
        body = self.conv_layer(self.conv_layer(x, conv_a), conv_b)
        pooled = self.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        return self.node("Add", [body, self.conv_layer(pooled, shortcut)])

    # -- transformer blocks (float only) -----------------------------------------------
    def _patch_embed(self, x: str, s: LayerSpec) -> str:
        y = self.conv(x, s.in_ch, s.out_ch, s.kernel, s.stride, pad=False)
        y = self.node("Reshape", [y, self.const(np.array([0, s.out_ch, -1], np.int64), "shape")])
        y = self.node("Transpose", [y], perm=[0, 2, 1])  # (N, patches, C)
        if s.cls_token:
            cls = self.const(self.weight((1, 1, s.out_ch), 0, 0.02), "cls_token")
            batch = self.node("Shape", [x], start=0, end=1)
            shape = self.node("Concat", [batch, self.const(np.array([1, s.out_ch], np.int64), "shape")], axis=0)
            y = self.node("Concat", [self.node("Expand", [cls, shape]), y], axis=1)
        return self.node("Add", [y, self.const(self.weight((1, s.tokens, s.out_ch), 0, 0.02), "pos_embed")])

    def _encoder(self, x: str, s: LayerSpec) -> str:
        t, a = s.tokens, s.attn_dim
        head_dim = a // s.heads
        qkv = self.dense(self.layer_norm(x, s.in_ch), s.in_ch, 3 * a)
        qkv = self.node("Reshape", [qkv, self.const(np.array([0, t, 3, s.heads, head_dim], np.int64), "shape")])
        qkv = self.node("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # (3, N, heads, T, head_dim)
        q, k, v = (self.node("Gather", [qkv, self.const(np.array(i, np.int64), "index")], axis=0) for i in range(3))
        scores = self.node("MatMul", [q, self.node("Transpose", [k], perm=[0, 1, 3, 2])])
        scores = self.node("Mul", [scores, self.const(np.array(1 / np.sqrt(head_dim), np.float32), "scale")])
        y = self.node("MatMul", [self.node("Softmax", [scores], axis=-1), v])
        y = self.node("Transpose", [y], perm=[0, 2, 1, 3])
        y = self.node("Reshape", [y, self.const(np.array([0, t, a], np.int64), "shape")])
        x = self.node("Add", [x, self.dense(y, a, s.in_ch)])
        h = self.act(self.dense(self.layer_norm(x, s.in_ch), s.in_ch, s.mid_ch), s.act)
        return self.node("Add", [x, self.dense(h, s.mid_ch, s.in_ch)])

    def _token_pool(self, x: str, s: LayerSpec) -> str:
        if s.cls_token:
            pooled = self.node("Gather", [x, self.const(np.array(0, np.int64), "index")], axis=1)
        else:
            pooled = self.node("ReduceMean", [x], axes=[1], keepdims=0)
        return self.layer_norm(pooled, s.in_ch)

    # -- int8 (QDQ) ----------------------------------------------------------------
    def quantize(self, x: str, scale: float, zp: int, implied: str = "none") -> QTensor:
        """Q(x) to uint8; a deployment's calibrated (scale, zp) replace the given ones. `implied`
        is the activation the range stands for (relu, relu6: the int8 conv's output has none)."""
        if self._qparams is not None:
            found = next(self._qparams, None)
            if found is None:
                raise NasError("deployed activation ranges do not fit the graph: it quantizes more tensors")
            scale, zp = float(np.float32(found[0])), int(found[1])
        s = self.const(np.array(scale, np.float32), "scale")
        z = self.const(np.array(zp, np.uint8), "zp")
        q = QTensor(self.node("QuantizeLinear", [x, s, z]), scale, zp, s, z)
        self.quantized.append((q.name, implied))
        return q

    def dequantize(self, q: QTensor) -> str:
        if q.name not in self.dq_of:
            self.dq_of[q.name] = self.node("DequantizeLinear", [q.name, q.scale_name, q.zp_name])
        return self.dq_of[q.name]

    def same_quant(self, name: str, q: QTensor) -> QTensor:
        """A tensor computed from q's uint8 values by a layout op (reshape, flatten): same scale."""
        return QTensor(name, q.scale, q.zp, q.scale_name, q.zp_name)

    def qconv(self, x: QTensor, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
              bias: bool = True, act: str = "none") -> QTensor:
        fan_in = in_ch // groups * kernel * kernel
        w = self.weight((out_ch, in_ch // groups, kernel, kernel), 0, np.sqrt(2.0 / fan_in))
        inputs = [self.dequantize(x), *self.qweights(w, x.scale, self.weight((out_ch,), 0, 0.01) if bias else None)]
        pad = kernel // 2
        y = self.node("Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride],
                      pads=[pad, pad, pad, pad], group=groups)
        return self.qact(y, act)

    def qweights(self, w: np.ndarray, x_scale: float, b: np.ndarray | None) -> list[str]:
        """DQ(int8 weight, per-channel scale, int8 zp) and DQ(int32 bias, s_x * s_w, int32 zp), as
        quantize_static writes them (axis 0: output channels of a conv, rows of a transB Gemm)."""
        q, w_scale = quantize_weights(w, self.reduce_range)
        out = [self.node("DequantizeLinear", [self.const(q, "w"), self.const(w_scale, "w_scale"),
                                              self.const(np.zeros(len(w), np.int8), "w_zp")], axis=0)]
        self.float_of[out[0]] = w
        if b is not None:
            b_scale = (np.float64(x_scale) * w_scale.astype(np.float64)).astype(np.float32)
            b_q = np.clip(np.round(b.astype(np.float64) / b_scale.astype(np.float64)),
                          np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
            out.append(self.node("DequantizeLinear", [self.const(b_q, "b"), self.const(b_scale, "b_scale"),
                                                      self.const(np.zeros(len(w), np.int32), "b_zp")], axis=0))
            self.float_of[out[1]] = np.asarray(b, np.float32)
        return out

    def qact(self, y: str, name: str) -> QTensor:
        """The activation after an int8 conv or Gemm, quantized: relu/relu6 are the output's zero
        point 0 (no node), hswish and the gates run in float between a DQ and a Q, swish is
        QLinearSigmoid times its input."""
        if name in ("relu", "relu6"):
            return self.quantize(y, ACT_SCALE, RELU_ZP, implied=name)
        q = self.quantize(y, ACT_SCALE, SIGNED_ZP)
        if name == "none":
            return q
        if name in ("sigmoid", "hsigmoid"):
            return self.quantize(self.act(self.dequantize(q), name), GATE_SCALE, RELU_ZP)
        if name == "hswish":
            return self.quantize(self.act(self.dequantize(q), name), ACT_SCALE, RELU_ZP + 8)
        if name == "swish":
            gate = self.quantize(self.act(self.dequantize(q), "sigmoid"), GATE_SCALE, RELU_ZP)
            return self.quantize(self.node("Mul", [self.dequantize(q), self.dequantize(gate)]), ACT_SCALE, RELU_ZP + 8)
        raise ValueError(name)

    def qlayer(self, x: QTensor, s: LayerSpec) -> QTensor:
        return INT8_EMITTERS[s.op](self, x, s)

    def _q_conv(self, x: QTensor, s: LayerSpec) -> QTensor:
        if s.preact:
            x = self.quantize(self.act(self.dequantize(x), s.act), ACT_SCALE, RELU_ZP)
        return self.qconv(x, s.in_ch, s.out_ch, s.kernel, s.stride, s.groups, bias=s.bn or s.bias,
                          act="none" if s.preact else s.act)

    def _q_mbconv(self, x: QTensor, s: LayerSpec) -> QTensor:
        mid = s.mid_ch or s.in_ch
        y = x
        if s.mid_ch:
            y = self.qconv(y, s.in_ch, mid, groups=s.groups, act=s.act)
            if s.shuffle and s.groups > 1:
                y = self.same_quant(self._shuffle(y.name, mid, s.in_size, s.groups), y)
        y = self.qconv(y, mid, mid, s.kernel, s.stride, groups=mid, act=s.act)
        if s.se_ch:
            squeeze = self.quantize(self.node("GlobalAveragePool", [self.dequantize(y)]), ACT_SCALE, RELU_ZP)
            gate = self.qconv(self.qconv(squeeze, mid, s.se_ch, act="relu"), s.se_ch, mid, act=s.se_gate)
            y = self.quantize(self.node("Mul", [self.dequantize(y), self.dequantize(gate)]), ACT_SCALE, RELU_ZP)
        y = self.qconv(y, mid, s.out_ch, groups=s.groups)
        if not s.residual:
            return y
        return self.quantize(self.node("Add", [self.dequantize(x), self.dequantize(y)]), ACT_SCALE, SIGNED_ZP)

    def _q_skip(self, x: QTensor, s: LayerSpec) -> QTensor:
        if s.is_identity:
            return self.same_quant(self.node("Identity", [x.name]), x)
        return self.qconv(x, s.in_ch, s.out_ch, 1, s.stride, act="relu")

    def _q_gap(self, x: QTensor, s: LayerSpec) -> QTensor:
        pooled = self.quantize(self.node("GlobalAveragePool", [self.dequantize(x)]), x.scale, x.zp)
        return self.same_quant(self.node("Flatten", [pooled.name]), pooled)

    def _q_linear(self, x: QTensor, s: LayerSpec) -> QTensor:
        w = self.weight((s.out_ch, s.in_ch), 0, np.sqrt(1.0 / s.in_ch))
        bias = self.weight((s.out_ch,), 0, 0) if s.bias else None
        return self.qact(self.node("Gemm", [self.dequantize(x), *self.qweights(w, x.scale, bias)], transB=1), s.act)


EMITTERS = {"conv": _Graph._conv, "mbconv": _Graph._mbconv, "skip": _Graph._skip, "gap": _Graph._gap,
            "linear": _Graph._linear, "norm": _Graph._norm, "avgpool": _Graph._avgpool,
            "nb201_cell": _Graph._nb201_cell, "resblock": _Graph._resblock,
            "patch_embed": _Graph._patch_embed, "encoder": _Graph._encoder, "token_pool": _Graph._token_pool}
INT8_EMITTERS = {"conv": _Graph._q_conv, "mbconv": _Graph._q_mbconv, "skip": _Graph._q_skip, "gap": _Graph._q_gap,
                 "linear": _Graph._q_linear}
SUPPORTED_OPS = frozenset(EMITTERS)
REFUSED_OPS: frozenset[str] = frozenset()
# Ops written in int8 (every op reads an int8 input: a DQ first); layers.INT8_OPS are all there is.
INT8_SUPPORTED_OPS = frozenset(INT8_EMITTERS)
INT8_REFUSED_OPS: frozenset[str] = frozenset()
_NCHW_TO_NHWC, _NHWC_TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def quantize_weights(w: np.ndarray, reduce_range: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (axis 0) symmetric int8 weights and their float32 scales, exactly
    as quantize_static computes them (quant_utils.quantize_data, symmetric INT8): scale =
    max|w_c| / 127 in float64 stored as float32 (/ 64 with reduce_range), 1.0 for an all-zero
    channel, q = round(w / scale) in float32, saturated to int8."""
    qmax = 64 if reduce_range else 127
    w = np.asarray(w, np.float32)
    absmax = np.abs(w.reshape(len(w), -1)).max(axis=1).astype(np.float64)
    scale64 = 2 * absmax / (2 * qmax)
    scale = np.where(scale64 < np.finfo(np.float32).tiny, 1.0, scale64).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -128, 127).astype(np.int8)
    return q, scale


def input_shape(spec: LayerSpec, batch: int = 1) -> list[int]:
    """The logical input shape of a block: (N, C) for linear layers, (N, tokens, C) for
    blocks reading tokens, else (N, C, H, W)."""
    if spec.op == "linear":
        return [batch, spec.in_ch]
    if spec.op in TOKEN_OPS:
        return [batch, spec.tokens, spec.in_ch]
    return [batch, spec.in_ch, spec.in_size, spec.in_size]


def output_shape(spec: LayerSpec, batch: int | str = 1) -> list:
    """The logical output shape of a block: (N, C) after pooling and linear layers,
    (N, tokens, C) for blocks writing tokens, else (N, C, H, W)."""
    if spec.op in ("gap", "linear", "token_pool"):
        return [batch, spec.out_ch]
    if spec.op in ("patch_embed", "encoder"):
        return [batch, spec.tokens, spec.out_ch]
    return [batch, spec.out_ch, spec.out_size, spec.out_size]


def model_input_shape(spec: LayerSpec, batch: int = 1) -> list[int]:
    """The input shape of the model whose first block is `spec`: channels-last when int8."""
    shape = input_shape(spec, batch)
    return [shape[i] for i in _NCHW_TO_NHWC] if spec.in_precision == "int8" and len(shape) == 4 else shape


def model_input(spec: LayerSpec, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A random input for the model whose first block is `spec` (uint8 when it reads int8)."""
    rng = np.random.default_rng(seed)
    shape = model_input_shape(spec, batch)
    if spec.in_precision == "int8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def network_model(layers: Sequence[LayerSpec], batch: int | None = 1, seed: int = 0, name: str = "hwnas",
                  compact: bool = False, deployment: Deployment | None = None) -> onnx.ModelProto:
    """One ONNX model running the blocks in order; batch None makes the batch axis dynamic.

    Its input and output are in the precision of its first block's input and its last
    block (see the module doc), so one block alone is its micro-model for the LUT. With a
    `deployment` the graph holds its weights and ranges and returns float logits.
    """
    return network_graph(layers, batch, seed, name, compact, deployment).model


def network_graph(layers: Sequence[LayerSpec], batch: int | None = 1, seed: int = 0, name: str = "hwnas",
                  compact: bool = False, deployment: Deployment | None = None
                  ) -> NetworkGraph:
    """`network_model` with what nas.quant calibrates and simulates (see NetworkGraph)."""
    g = _Graph(seed, compact, deployment)
    first, last = layers[0], layers[-1]
    x: str | QTensor = "input"
    if first.in_precision == "int8":
        x = "input" if first.op == "linear" else g.node("Transpose", ["input"], perm=_NHWC_TO_NCHW)
        x = QTensor(x, ACT_SCALE, SIGNED_ZP, g.const(np.array(ACT_SCALE, np.float32), "scale"),
                    g.const(np.array(SIGNED_ZP, np.uint8), "zp"))
    for i, spec in enumerate(layers):
        if spec.in_precision != (layers[i - 1].precision if i else first.in_precision):
            raise NasError(f"layer {spec.key} reads {spec.in_precision} but follows a {layers[i - 1].precision} block")
        if spec.precision == "int8":
            x = g.qlayer(g.quantize(x, ACT_SCALE, SIGNED_ZP) if isinstance(x, str) else x, spec)
        else:
            x = g.layer(g.dequantize(x) if isinstance(x, QTensor) else x, spec)
    out_shape = output_shape(last, batch or "batch")
    if isinstance(x, QTensor) and deployment is not None:
        x = g.dequantize(x)  # deployed: float logits (the LUT leaves this tiny DQ to the intercept)
    if isinstance(x, QTensor):
        if len(out_shape) == 4:
            out_shape = [out_shape[i] for i in _NCHW_TO_NHWC]
            x = g.same_quant(g.node("Transpose", [x.name], perm=_NCHW_TO_NHWC), x)
        x = x.name
    g.nodes.append(helper.make_node("Identity", [x], ["output"]))
    in_shape: list = model_input_shape(first, batch or 1)
    in_shape[0] = batch if batch else "batch"
    in_type = TensorProto.UINT8 if first.in_precision == "int8" else TensorProto.FLOAT
    out_type = TensorProto.UINT8 if last.precision == "int8" and deployment is None else TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("input", in_type, in_shape)],
        [helper.make_tensor_value_info("output", out_type, out_shape)],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwnas")
    model.ir_version = min(model.ir_version, 9)  # readable by older onnxruntime on remote devices
    if g._weights is not None and next(g._weights, None) is not None:
        raise NasError("deployed weights do not fit the graph: arrays are left over")
    if g._qparams is not None and next(g._qparams, None) is not None:
        raise NasError("deployed activation ranges do not fit the graph: ranges are left over")
    return NetworkGraph(model, g.quantized, g.float_of)


def layer_model(spec: LayerSpec, batch: int = 1, seed: int = 0, compact: bool = False) -> onnx.ModelProto:
    """The micro-model of one block, for profiling its latency."""
    return network_model([spec], batch, seed, name=spec.key, compact=compact)


WEIGHT_TYPES = (TensorProto.FLOAT, TensorProto.INT8, TensorProto.INT32)


def weight_initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the weight tensors of a model: float weights, and int8 weights with their
    per-channel scales, zero points and int32 biases. Scalars (activation scales and zero
    points, clip bounds) and int64 shape constants are excluded."""
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer
               if t.data_type in WEIGHT_TYPES and len(t.dims) > 0)
