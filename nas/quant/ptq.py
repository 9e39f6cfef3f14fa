"""Post-training quantization of a built network, simulated with onnxruntime's arithmetic.

`quantize(model, layers, calib, settings)` folds batch norm, writes the network's QDQ graph
with the one ONNX emitter (nas.hardware.onnx_graph, the writer the int8 LUTs time),
calibrates the range of every tensor that graph quantizes on `calib` by running the float
network, and writes the graph again with those ranges: the `QuantizedNet` it returns holds
that graph, simulates it with integer arithmetic (nas.quant.simulate) and exports it
unchanged. The accuracy search scores and the model `hwnas export` writes are therefore
one object.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.hardware.onnx_graph import Deployment, NetworkGraph, network_graph
from nas.quant.calibrate import RangeObserver, activation_qparams, check_calibration
from nas.quant.fold import folded_params
from nas.quant.settings import QuantSettings
from nas.quant.simulate import GraphSimulator
from nas.space.layers import LayerSpec


class QuantizedNet(nn.Module):
    """A network deployed with int8 blocks: forward(float NCHW batch, normalized like the
    float model's input) -> float logits computed as onnxruntime computes them."""

    def __init__(self, layers: Sequence[LayerSpec], graph: NetworkGraph, settings: QuantSettings,
                 calib_images: int) -> None:
        super().__init__()
        self.layers = list(layers)
        self.graph = graph
        self.settings = settings
        self.calib_images = calib_images
        self._sim = GraphSimulator(graph)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._sim.run(x.detach().to("cpu", torch.float32).contiguous()).to(x.device)

    @property
    def int8_layers(self) -> list[tuple[int, str]]:
        """(index, key) of each int8 layer."""
        return [(i, s.key) for i, s in enumerate(self.layers) if s.precision == "int8"]

    def to_onnx(self) -> bytes:
        """The int8 ONNX model (batch axis dynamic, float input and logits)."""
        return self.graph.model.SerializeToString()

    def params(self) -> dict[str, np.ndarray]:
        """The quantization as plain arrays (for an npz): the activation scales and zero
        points in graph order (`act_scale`, `act_zero_point`, `act_tensor` names), and every
        initializer of the ONNX graph by name (int8 weights, their per-channel scales and zero
        points, int32 biases and their scales, float weights of float layers)."""
        from onnx import numpy_helper

        names = [name for name, _ in self.graph.quantized]
        scale_of = {n.output[0]: n.input[1:3] for n in self.graph.model.graph.node if n.op_type == "QuantizeLinear"}
        init = {t.name: numpy_helper.to_array(t) for t in self.graph.model.graph.initializer}
        out = {"act_tensor": np.array(names),
               "act_scale": np.array([init[scale_of[n][0]] for n in names], np.float32),
               "act_zero_point": np.array([init[scale_of[n][1]] for n in names], np.uint8)}
        out.update({f"init/{k}": v for k, v in init.items()})
        return out


def _batches(images: torch.Tensor, size: int = 64):
    return images.detach().to("cpu", torch.float32).split(size)


@torch.no_grad()
def quantize(model: nn.Module, layers: Sequence[LayerSpec], calib: torch.Tensor,
             settings: QuantSettings | None = None) -> QuantizedNet:
    """The QuantizedNet of `model` (`space.build(arch)` or `supernet.extract(arch)`, eval
    mode, final BN statistics) for the arch's `layers`, calibrated on the float NCHW batch
    `calib` (normalized like the model's input, at the arch's resolution)."""
    settings = settings or QuantSettings()
    check_calibration(settings, 0 if calib is None else len(calib))
    weights = folded_params(model.eval(), layers)
    reduce_range = settings.reduce_range
    float_graph = network_graph(layers, batch=None, deployment=Deployment(weights, None, reduce_range))
    observer = RangeObserver(settings)
    sim = GraphSimulator(float_graph)
    for chunk in _batches(calib):
        sim.run(chunk, observe=lambda name, values: observer.observe(name, values.numpy()))
    ranges = observer.ranges()
    qparams = [activation_qparams(*ranges[name]) for name, _ in float_graph.quantized]
    graph = network_graph(layers, batch=None, deployment=Deployment(weights, qparams, reduce_range))
    return QuantizedNet(layers, graph, settings, len(calib))


def _session(blob: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


def compare_with_onnxruntime(net: QuantizedNet, images: torch.Tensor, batch: int = 64
                             ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """onnxruntime running `net.to_onnx()` against the torch simulation on `images`: top-1
    agreement, the largest logit difference (also in output steps when the logits are int8),
    and the two top-1 arrays (simulation, onnxruntime)."""
    session = _session(net.to_onnx())
    x = images.detach().to("cpu", torch.float32).contiguous()
    ours = np.concatenate([net(c).numpy() for c in x.split(batch)])
    theirs = np.concatenate([session.run(None, {"input": c.numpy()})[0] for c in x.split(batch)])
    diff = float(np.abs(ours - theirs).max())
    found: dict[str, Any] = {"top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean()),
                             "images": len(x), "max_logit_diff": diff}
    if net.layers[-1].precision == "int8":
        found["max_logit_diff_steps"] = round(diff / float(net.params()["act_scale"][-1]), 3)
    return found, ours.argmax(1), theirs.argmax(1)
