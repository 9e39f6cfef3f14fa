"""Runs an int8 QDQ graph (nas.hardware.onnx_graph) in torch, two ways.

`integer`: what onnxruntime's CPU execution provider computes after it fuses the QDQ
pattern into integer kernels (docs/research/int8, §4): QLinearConv / QGemm accumulate
exactly in integers and requantize with a float32 multiplier, QLinearAdd / QLinearMul /
QLinearGlobalAveragePool with their own float32 formulas (QLinearAdd's fused
multiply-adds as MLAS's AVX2 kernel has them), QuantizeLinear divides by the scale, every
rounding is half to even; ops onnxruntime runs in float (HardSwish, HardSigmoid,
Sigmoid's table, float blocks) run in float32 between a DQ and a Q, the logistic with
onnxruntime's own polynomial (`mlas_logistic`). The simulation reads the very graph that
is deployed, so the two cannot disagree about structure; it was bit-exact against
onnxruntime on the research's networks and on trained subnets (docs/benchmarks.md).

`float` with an observer: the float network the graph was quantized from (float weights,
no rounding), reporting each quantized tensor's values to calibration, with the relu or
relu6 that an int8 conv's range stands for applied, as quantize_static calibrates on the
float model's activation outputs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from nas.hardware.onnx_graph import NetworkGraph

F32 = np.float32
FUSED_OPS = ("Conv", "Gemm", "Add", "Mul", "GlobalAveragePool")
LAYOUT_OPS = ("Identity", "Flatten", "Reshape", "Transpose")


@dataclass(frozen=True)
class QValue:
    """A uint8 tensor (integer values held in float32) with its scale and zero point."""

    q: torch.Tensor
    scale: np.float32
    zp: int

    def dequantize(self) -> torch.Tensor:
        return (self.q - float(self.zp)) * torch.tensor(self.scale)


@dataclass(frozen=True)
class _Weight:
    """An int8 weight or int32 bias behind a DequantizeLinear (per output channel)."""

    q: torch.Tensor       # float64 integer values
    q32: torch.Tensor     # the same in float32 (exact: int8 values)
    bound: float          # max |q|
    scale: np.ndarray     # float32 [C]
    real: torch.Tensor    # the float array it quantizes (the float network's parameter)


# float32 adds integers exactly while every partial sum stays below 2**24; a uint8 value
# minus its zero point is at most 255 in magnitude
EXACT = 2.0 ** 24
MAX_CENTRED = 255.0


def _exact_linear(x: torch.Tensor, w_t: torch.Tensor, bound: float) -> torch.Tensor:
    """x @ w_t of integer-valued float32 tensors, exactly: float32 matmuls over slices of
    the reduction short enough to be exact, summed in float64 when there are several."""
    step = max(1, int(EXACT // (MAX_CENTRED * max(bound, 1.0))) - 1)
    if step >= x.shape[-1]:
        return x @ w_t
    return sum((x[..., i:i + step] @ w_t[i:i + step]).double() for i in range(0, x.shape[-1], step))


def _exact_conv(x: torch.Tensor, w: _Weight, stride, pads, groups: int) -> torch.Tensor:
    """conv2d of integer-valued tensors, exactly (the int32 accumulation of QLinearConv):
    float32 convolutions over input-channel slices short enough to be exact (a depthwise
    conv's sums always are), summed in float64 when there are several; grouped convs too
    long for float32 run in float64."""
    wq = w.q32
    per_channel = wq.shape[2] * wq.shape[3] * MAX_CENTRED * max(w.bound, 1.0)
    if wq.shape[1] * per_channel < EXACT:
        return F.conv2d(x, wq, None, stride, pads, 1, groups)
    if groups != 1:
        return F.conv2d(x.double(), w.q, None, stride, pads, 1, groups)
    step = max(1, int(EXACT // per_channel) - 1)
    return sum(F.conv2d(x[:, i:i + step], wq[:, i:i + step], None, stride, pads).double()
               for i in range(0, x.shape[1], step))


# onnxruntime's logistic (MLAS, from Eigen): a rational polynomial over [-18, 18], which its
# Sigmoid and the 256-entry table of QLinearSigmoid both evaluate; torch.sigmoid differs
# from it in the last bits, enough to move about 3 % of a gate's uint8 values by one step
LOGISTIC_RANGE = 18.0
LOGISTIC_P = (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03,
              2.48287947061529e-01)
LOGISTIC_Q = (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03,
              1.16817656904453e-01, 9.93151921023180e-01)


def _fma(a: torch.Tensor, b: torch.Tensor, c) -> torch.Tensor:
    """float32 a * b + c with one rounding (the kernels' fused multiply-add): the product of
    two float32 values is exact in float64."""
    c = c.double() if isinstance(c, torch.Tensor) else float(np.float32(c))
    return (a.double() * b.double() + c).float()


def mlas_logistic(x: torch.Tensor) -> torch.Tensor:
    """The logistic function as onnxruntime's CPU kernels compute it (float32, fused
    multiply-adds, the output clamped to [0, 1])."""
    v = torch.clamp(x.float(), -LOGISTIC_RANGE, LOGISTIC_RANGE)
    v2 = v * v
    p = _fma(v2, torch.tensor(F32(LOGISTIC_P[0])), LOGISTIC_P[1])
    for c in LOGISTIC_P[2:]:
        p = _fma(p, v2, c)
    p = p * v
    q = _fma(v2, torch.tensor(F32(LOGISTIC_Q[0])), LOGISTIC_Q[1])
    for c in LOGISTIC_Q[2:]:
        q = _fma(q, v2, c)
    return torch.clamp(p / q + 0.5, 0, 1)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class GraphSimulator:
    """The torch interpreter of one NetworkGraph (see the module doc)."""

    def __init__(self, graph: NetworkGraph) -> None:
        model = graph.model
        self.nodes = list(model.graph.node)
        self.init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.implied = dict(graph.quantized)
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.tensors = {k: torch.from_numpy(np.array(v)) for k, v in self.init.items()}
        self.weights: dict[str, _Weight] = {}
        for n in self.nodes:
            if n.op_type == "DequantizeLinear" and n.input[0] in self.init:
                q = torch.from_numpy(self.init[n.input[0]].astype(np.float64))
                self.weights[n.output[0]] = _Weight(q, q.float(), float(q.abs().max()) if q.numel() else 0.0,
                                                    self.init[n.input[1]].astype(F32),
                                                    torch.from_numpy(graph.float_of[n.output[0]]))
        # an op onnxruntime fuses with its DQ inputs and its one Q consumer into an integer kernel
        self.fused = {n.output[0] for n in self.nodes if n.op_type in FUSED_OPS and self._fusable(n)}

    def _is_dq(self, name: str) -> bool:
        node = self.producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    def _fusable(self, n: onnx.NodeProto) -> bool:
        users = self.consumers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            return False
        if n.op_type in ("Conv", "Gemm"):
            return all(self._is_dq(i) for i in n.input) and n.input[1] in self.weights
        return all(self._is_dq(i) and i not in self.weights for i in n.input)

    # ------------------------------------------------------------------ running
    def run(self, x: torch.Tensor, observe: Callable[[str, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Logits for a float NCHW batch: integer arithmetic, or the float network with
        `observe(tensor name, values)` called on every quantized tensor."""
        env: dict[str, object] = {"input": x.float()}
        for n in self.nodes:
            out = n.output[0]
            if out in self.fused and observe is None:
                continue  # computed by its QuantizeLinear
            env[out] = self._node(n, env, observe)
        return self._float(env["output"])

    def _float(self, v: object) -> torch.Tensor:
        return v.dequantize() if isinstance(v, QValue) else v

    def _in(self, env: dict, name: str) -> torch.Tensor:
        if name in self.weights:
            return self.weights[name].real
        if name in env:
            return self._float(env[name])
        return self.tensors[name]

    def _node(self, n: onnx.NodeProto, env: dict, observe) -> object:
        op, a = n.op_type, _attrs(n)
        if op == "QuantizeLinear":
            return self._quantize(n, env, observe)
        if op == "DequantizeLinear":
            if n.output[0] in self.weights:
                return None  # read through self.weights
            return env[n.input[0]]  # a QValue: integer kernels read it whole, float ops dequantize it
        if op in LAYOUT_OPS:
            src = env[n.input[0]]
            if isinstance(src, QValue):
                return QValue(self._layout(op, a, src.q, n), src.scale, src.zp)
            return self._layout(op, a, src, n)
        x = [self._in(env, i) for i in n.input]
        if op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            return F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, a.get("strides", [1, 1]),
                            pads[:2], 1, a.get("group", 1))
        if op == "Gemm":
            return F.linear(x[0], x[1] if a.get("transB") else x[1].T, x[2] if len(x) > 2 else None)
        if op in ("Add", "Sum"):
            return sum(x[1:], x[0])
        if op == "Mul":
            return x[0] * x[1]
        if op == "Sub":
            return x[0] - x[1]
        if op == "Relu":
            return torch.relu(x[0])
        if op == "Clip":
            return torch.clamp(x[0], float(x[1]), float(x[2]))
        if op == "Sigmoid":
            return mlas_logistic(x[0])
        if op == "HardSigmoid":
            return torch.clamp(x[0] * F32(a["alpha"]) + F32(a["beta"]), 0, 1)
        if op == "HardSwish":
            return F.hardswish(x[0])
        if op == "GlobalAveragePool":
            return x[0].mean((2, 3), keepdim=True)
        if op == "AveragePool":
            k, s, p = a["kernel_shape"], a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0])
            return F.avg_pool2d(x[0], k, s, p[:2], count_include_pad=bool(a.get("count_include_pad", 0)))
        raise NotImplementedError(f"the int8 simulation has no {op} node")

    def _layout(self, op: str, a: dict, x: torch.Tensor, n: onnx.NodeProto) -> torch.Tensor:
        if op == "Identity":
            return x
        if op == "Flatten":
            return x.flatten(a.get("axis", 1))
        if op == "Transpose":
            return x.permute(*a["perm"])
        shape = [int(v) for v in self.init[n.input[1]]]
        return x.reshape(shape)

    def _qparams(self, n: onnx.NodeProto) -> tuple[np.float32, int]:
        return F32(self.init[n.input[1]]), int(self.init[n.input[2]])

    def _quantize(self, n: onnx.NodeProto, env: dict, observe) -> object:
        src = n.input[0]
        if observe is not None:
            x = env[src]
            implied = self.implied.get(n.output[0], "none")
            if implied == "relu":
                x = torch.relu(x)
            elif implied == "relu6":
                x = torch.clamp(x, 0, 6)
            observe(n.output[0], x)
            return x
        scale, zp = self._qparams(n)
        if src in self.fused:
            q = self._fused(self.producer[src], env, scale, zp)
        else:
            q = torch.round(env[src].float() / torch.tensor(scale)) + float(zp)  # MLAS divides by the scale
        return QValue(torch.clamp(q, 0, 255), scale, zp)

    # ------------------------------------------------------------------ integer kernels
    def _fused(self, n: onnx.NodeProto, env: dict, ys: np.float32, yz: int) -> torch.Tensor:
        """The unclamped, rounded uint8 result of an integer kernel (before saturation)."""
        op = n.op_type
        if op in ("Conv", "Gemm"):
            x: QValue = env[n.input[0]]
            w = self.weights[n.input[1]]
            a = _attrs(n)
            centred = x.q - float(x.zp)
            if op == "Conv":
                pads = a.get("pads", [0, 0, 0, 0])
                acc = _exact_conv(centred, w, a.get("strides", [1, 1]), pads[:2], a.get("group", 1))
                shape = (1, -1, 1, 1)
            else:
                acc = _exact_linear(centred, w.q32.T if a.get("transB") else w.q32, w.bound)
                shape = (1, -1)
            if len(n.input) > 2:
                bias = self.weights[n.input[2]]
                exact32 = acc.dtype == torch.float32 and float(acc.abs().max()) + bias.bound < EXACT
                acc = acc + (bias.q32 if exact32 else bias.q).reshape(shape)
            mult = ((F32(x.scale) * w.scale) / ys).astype(F32)  # float32, as the runtime computes it
            return torch.round(acc.float() * torch.from_numpy(mult).reshape(shape)) + float(yz)
        ins = [env[i] for i in n.input]
        a_ = ins[0]
        if op == "Add":  # MLAS's AVX2 QLinearAdd: two fused multiply-adds on the raw uint8 values
            b_ = ins[1]
            ra, rb = F32(a_.scale) / ys, F32(b_.scale) / ys
            # zc - (rA * za + rB * zb), which the compiler contracts to zc - fma(rA, za, rB * zb)
            fixed = F32(yz) - F32(np.float64(ra) * np.float64(a_.zp) + np.float64(F32(rb * F32(b_.zp))))
            v = _fma(a_.q, torch.tensor(ra), _fma(b_.q, torch.tensor(rb), fixed))
            return torch.round(v)
        elif op == "Mul":
            b_ = ins[1]
            ratio = torch.tensor(F32(a_.scale) * F32(b_.scale) / ys)
            v = (a_.q - float(a_.zp)) * (b_.q - float(b_.zp)) * ratio + float(yz)
        else:  # GlobalAveragePool
            hw = a_.q.shape[2] * a_.q.shape[3]
            acc = a_.q.double().sum((2, 3), keepdim=True) - float(a_.zp) * hw
            v = acc.float() * torch.tensor(F32(a_.scale) / (ys * F32(hw))) + float(yz)
        return torch.round(v)
