"""LayerSpec -> ONNX graphs, built directly with onnx.helper.

Profiling needs one micro-model per unique LayerSpec and whole networks for
validation; exporting each through torch costs seconds per model, writing the graph
from the LayerSpec costs milliseconds. The graphs are what a deployment runtime sees:
batch norm is folded into the preceding conv (a bias), so the float initializers of a
graph are exactly the deployed weights that `nas.space.counters.layer_weight_params`
counts. Weights are random (He-scaled, so activations stay in a normal float range
and no denormals skew timings).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nas.space.layers import NB201_EDGES, LayerSpec, nb201_edge_layer, resblock_layers

OPSET = 17


class _Graph:
    """Accumulates nodes and initializers under unique names.

    `compact` weights repeat one small random pool: timing does not depend on weight
    values, and deflate then shrinks a profiling kit by orders of magnitude.
    """

    def __init__(self, seed: int, compact: bool = False) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.pool = self.rng.standard_normal(251).astype(np.float32) if compact else None
        self.count = 0

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
             bias: bool = True) -> str:
        fan_in = in_ch // groups * kernel * kernel
        w = self.random((out_ch, in_ch // groups, kernel, kernel), 0, np.sqrt(2.0 / fan_in))
        inputs = [x, self.const(w, "w")]
        if bias:
            inputs.append(self.const(self.random((out_ch,), 0, 0.01), "b"))
        pad = kernel // 2
        return self.node("Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride],
                         pads=[pad, pad, pad, pad], group=groups)

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
        raise ValueError(name)

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
        w = self.random((s.out_ch, s.in_ch), 0, np.sqrt(1.0 / s.in_ch))
        inputs = [x, self.const(w, "w")]
        if s.bias:
            inputs.append(self.const(np.zeros(s.out_ch, np.float32), "b"))
        return self.act(self.node("Gemm", inputs, transB=1), s.act)

    def _norm(self, x: str, s: LayerSpec) -> str:
        scale = self.const(self.random((s.in_ch, 1, 1), 1, 0.05), "scale")
        shift = self.const(self.random((s.in_ch, 1, 1), 0, 0.05), "shift")
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


EMITTERS = {"conv": _Graph._conv, "mbconv": _Graph._mbconv, "skip": _Graph._skip, "gap": _Graph._gap,
            "linear": _Graph._linear, "norm": _Graph._norm, "avgpool": _Graph._avgpool,
            "nb201_cell": _Graph._nb201_cell, "resblock": _Graph._resblock}
SUPPORTED_OPS = frozenset(EMITTERS)
REFUSED_OPS: frozenset[str] = frozenset()


def input_shape(spec: LayerSpec, batch: int = 1) -> list[int]:
    """The input tensor shape of a block: (N, C) for linear layers, else (N, C, H, W)."""
    if spec.op == "linear":
        return [batch, spec.in_ch]
    return [batch, spec.in_ch, spec.in_size, spec.in_size]


def network_model(layers: Sequence[LayerSpec], batch: int | None = 1, seed: int = 0, name: str = "hwnas",
                  compact: bool = False) -> onnx.ModelProto:
    """One ONNX model running the blocks in order; batch None makes the batch axis dynamic."""
    g = _Graph(seed, compact)
    x = "input"
    for spec in layers:
        x = g.layer(x, spec)
    g.nodes.append(helper.make_node("Identity", [x], ["output"]))
    in_shape = input_shape(layers[0], batch or 1)
    in_shape[0] = batch if batch else "batch"
    last = layers[-1]
    out_shape: list = [batch or "batch", last.out_ch]
    if last.op not in ("gap", "linear"):
        out_shape += [last.out_size, last.out_size]
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwnas")
    model.ir_version = min(model.ir_version, 9)  # readable by older onnxruntime on remote devices
    return model


def layer_model(spec: LayerSpec, batch: int = 1, seed: int = 0, compact: bool = False) -> onnx.ModelProto:
    """The micro-model of one block, for profiling its latency."""
    return network_model([spec], batch, seed, name=spec.key, compact=compact)


def float_initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the float weight tensors in a model (scalars and shape constants excluded)."""
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer
               if t.data_type == TensorProto.FLOAT and len(t.dims) > 0)
