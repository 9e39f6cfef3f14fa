"""Profiling backends: turn blocks into something runnable on a device and run it.

A backend prepares a runner (one inference per call) for a sequence of LayerSpecs, a
single block for a LUT entry or a whole network for validation, so that both are
measured the same way. onnxruntime runs the graphs of nas.hardware.onnx_graph with the
device's execution provider and thread count; torch runs the modules of the builder
in eager mode.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from nas.errors import NasError
from nas.hardware.devices import Device
from nas.hardware.measure import ort_session
from nas.space.layers import LayerSpec

Runner = Callable[[], object]


class Backend(ABC):
    def __init__(self, device: Device) -> None:
        self.device = device

    @abstractmethod
    def runner(self, layers: Sequence[LayerSpec], seed: int = 0) -> Runner:
        """A callable that runs one batch through the blocks."""


class OnnxRuntimeBackend(Backend):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device.provider not in available:
            raise NasError(f"device {device.name} needs onnxruntime's {device.provider}, which this machine lacks "
                           f"(available: {', '.join(available)}); profile it on the device with 'hwnas lut kit'")
        self._ort = ort

    def session(self, model: bytes | str):
        """An InferenceSession of ONNX bytes or a file, with the device's provider and threads."""
        return ort_session(self._ort, model, self.device.provider, self.device.threads)

    def runner(self, layers: Sequence[LayerSpec], seed: int = 0) -> Runner:
        from nas.hardware.onnx_graph import model_input, network_model

        session = self.session(network_model(layers, self.device.batch, seed).SerializeToString())
        feeds = {"input": model_input(layers[0], self.device.batch, seed)}
        return lambda: session.run(None, feeds)


class TorchBackend(Backend):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        import torch

        torch.set_num_threads(device.threads)
        self._torch = torch

    def runner(self, layers: Sequence[LayerSpec], seed: int = 0) -> Runner:
        from nas.hardware.onnx_graph import input_shape
        from nas.space.builder import build_network

        torch = self._torch
        torch.manual_seed(seed)
        model = build_network(layers).eval()
        x = torch.randn(input_shape(layers[0], self.device.batch))

        def run() -> object:
            with torch.inference_mode():
                return model(x)

        return run


def make_backend(device: Device) -> Backend:
    return {"onnxruntime": OnnxRuntimeBackend, "torch": TorchBackend}[device.backend](device)
