"""Quantization-aware training: fake int8 quantization of a block where its int8 ONNX quantizes.

The supernet (and a fine-tuned export) keeps float weights; an int8 block only changes
how it is deployed (nas.hardware.onnx_graph writes it in onnxruntime's QDQ form, the
post-training quantizer calibrates it). Training quantization-aware runs such a block
with the rounding it will get, so the float weights learn to tolerate it:

* weights: per-channel symmetric int8 ([-127, 127], or [-64, 64] with `reduce_range`),
  through `torch.fake_quantize_per_channel_affine`. The raw conv weight is quantized,
  before batch norm: per-channel symmetric rounding commutes with the per-channel
  scale that folding BN multiplies in (quant(a w) = a quant(w) for each channel), so
  this is the rounding of the folded weight the int8 model stores, while the BN keeps
  training on batch statistics as in the float steps.
* activations: uint8 asymmetric ([0, 255], the range extended to hold 0, as
  quantize_static calibrates), through `torch.fake_quantize_per_tensor_affine`, with
  the range observed on the batch itself. A shared supernet has no single range per
  tensor (every subnet has its own, and the deployed one is calibrated per subnet
  afterwards), so a running observer would describe no real subnet; the batch's own
  range is the min/max calibration applied to the images at hand, and keeps QAT free
  of state (checkpoints and resumption are as before).
* where: at every tensor the QDQ emitter quantizes (docs/research/int8): the block's
  input when its producer is float (the Q at a precision boundary), the output of each
  conv + BN + activation (relu and relu6 are the quantized range, other activations
  quantize their input too, then run in float and quantize again), inside SE the pooled
  vector, the squeeze activation, the pre-gate logits, the gate and the product, the
  residual sum, the pooled output of GAP and the output of a linear layer. The points
  are hooks on the builder's own modules, so the supernet and a stand-alone network
  quantize the same tensors.

Gradients pass straight through the rounding (torch's fake-quant ops: identity inside
the range, zero outside, and the batch range holds every value). Float blocks of the
same subnet run unchanged.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from nas.space.layers import INT8_OPS, LayerSpec

QUANT_LEVELS = 255  # uint8 activations

Point = tuple[nn.Module, str]  # (module, "in" | "out"): quantize its input or its output


def weight_qmax(reduce_range: bool) -> int:
    """The symmetric int8 weight range: [-127, 127], or [-64, 64] where the device saturates."""
    return 64 if reduce_range else 127


def fake_quant_weight(w: torch.Tensor, reduce_range: bool = False) -> torch.Tensor:
    """Per-output-channel symmetric int8 rounding of a conv or linear weight (scale max|w|/qmax)."""
    qmax = weight_qmax(reduce_range)
    amax = w.detach().abs().flatten(1).amax(1).float()
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))  # an all-zero channel: scale 1, as ORT
    zero = torch.zeros(len(scale), dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -qmax, qmax).to(w.dtype)


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """uint8 asymmetric rounding over the tensor's own range (extended to hold 0)."""
    lo = x.detach().min().float().clamp(max=0)
    hi = x.detach().max().float().clamp(min=0)
    scale = torch.where(hi > lo, (hi - lo) / QUANT_LEVELS, torch.ones_like(hi)).reshape(1)
    zero = torch.round(-lo / scale).clamp(0, QUANT_LEVELS).to(torch.int32).reshape(1)
    return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, 0, QUANT_LEVELS).to(x.dtype)


# ---------------------------------------------------------------- where each op quantizes
_RELU_RANGE = (nn.ReLU, nn.ReLU6, nn.Identity)  # activations an int8 conv's output range is (no node of their own)


def _conv_bn_act(m: nn.Sequential) -> list[Point]:
    """ConvBNAct: a preact's activation output, a non-relu activation's input, the output."""
    if not isinstance(m[0], nn.Conv2d):  # preact: act, conv, bn
        return [(m[0], "out"), (m, "out")]
    return ([] if isinstance(m[-1], _RELU_RANGE) else [(m[-2], "out")]) + [(m, "out")]


def _conv_points(m: nn.Module, s: LayerSpec) -> list[Point]:
    return _conv_bn_act(m)


def _mbconv_points(m: nn.Module, s: LayerSpec) -> list[Point]:
    from nas.space.builder import ConvBNAct, SqueezeExcite

    points: list[Point] = []
    for part in m.body:
        if isinstance(part, ConvBNAct):
            points += _conv_bn_act(part)
        elif isinstance(part, SqueezeExcite):
            points += [(part.reduce, "in"), (part.act, "out"), (part.expand, "out"), (part.gate, "out"), (part, "out")]
    return points + ([(m, "out")] if s.residual else [])


def _skip_points(m: nn.Module, s: LayerSpec) -> list[Point]:
    return [] if s.is_identity else _conv_bn_act(m)


def _gap_points(m: nn.Module, s: LayerSpec) -> list[Point]:
    return [(m, "out")]


def _linear_points(m: nn.Module, s: LayerSpec) -> list[Point]:
    return ([] if isinstance(m[-1], _RELU_RANGE) else [(m[0], "out")]) + [(m, "out")]


QUANT_POINTS: dict[str, Callable[[nn.Module, LayerSpec], list[Point]]] = {
    "conv": _conv_points, "mbconv": _mbconv_points, "skip": _skip_points, "gap": _gap_points,
    "linear": _linear_points,
}
# Every op with an int8 form is trained quantization-aware (layers.INT8_OPS; a test holds them equal).
INT8_SUPPORTED_OPS = frozenset(QUANT_POINTS)
INT8_REFUSED_OPS: frozenset[str] = frozenset()


def quant_points(module: nn.Module, spec: LayerSpec) -> list[Point]:
    """The tensors of the builder's module for an int8 `spec` that its int8 ONNX quantizes."""
    inputs: list[Point] = [(module, "in")] if spec.in_precision == "fp32" else []  # the Q at a boundary
    return inputs + QUANT_POINTS[spec.op](module, spec)


@contextlib.contextmanager
def _hooks(points: Sequence[Point]) -> Iterator[None]:
    handles = []
    for module, where in points:
        if where == "in":
            handles.append(module.register_forward_pre_hook(lambda _m, args: (fake_quant_activation(args[0]), *args[1:])))
        else:
            handles.append(module.register_forward_hook(lambda _m, _args, out: fake_quant_activation(out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _quantized_weights(module: nn.Module, tensors: Mapping[str, torch.Tensor], reduce_range: bool) -> dict[str, torch.Tensor]:
    """`tensors` (name -> tensor of `module`) with every conv and linear weight fake-quantized."""
    out = dict(tensors)
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            key = f"{name}.weight" if name else "weight"
            out[key] = fake_quant_weight(out[key], reduce_range)
    return out


def fake_quant_call(module: nn.Module, spec: LayerSpec, x: torch.Tensor, reduce_range: bool = False,
                    tensors: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Run the builder's `module` of int8 `spec` on `x` with int8 rounding of its weights and of
    the activations its int8 ONNX quantizes; `tensors` (name -> tensor) stand in for the
    module's own parameters and buffers, as a supernet slot hands them out."""
    if tensors is None:
        tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    with _hooks(quant_points(module, spec)):
        return functional_call(module, _quantized_weights(module, tensors, reduce_range), (x,), strict=True)


class FakeQuantNetwork(nn.Module):
    """A stand-alone network (nn.Sequential of blocks, as nas.space.builder builds it) run with
    its int8 blocks fake-quantized: for quantization-aware fine-tuning. Holds the network,
    not a copy: training this trains it."""

    def __init__(self, net: nn.Sequential, layers: Sequence[LayerSpec], reduce_range: bool = False) -> None:
        super().__init__()
        if len(net) != len(layers):
            raise ValueError(f"{len(net)} modules for {len(layers)} layers")
        self.net, self.layers, self.reduce_range = net, list(layers), reduce_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module, spec in zip(self.net, self.layers):
            x = fake_quant_call(module, spec, x, self.reduce_range) if spec.precision == "int8" else module(x)
        return x
