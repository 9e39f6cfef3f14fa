"""Latency of the exported ONNX model on this machine, measured as LUTs are.

The session uses the local device profile's settings (execution provider, threads,
batch; latency_luts/local-cpu/device.yaml) and the project's measurement protocol
(warm-up, interleaved rounds, outlier rejection, its statistic: p10 unless a protocol
says otherwise), so the figure is comparable with the LUT prediction on the card.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.hardware.measure import Protocol, measure_models


def local_device():
    """The profile of the machine hwnas runs on (the one marked `detect: true`)."""
    from nas.hardware.devices import Device, device_names, load_device

    for name in device_names():
        device = load_device(name)
        if device.detect:
            return device
    return Device(name="local", backend="onnxruntime", detect=True)


def measured_ms(measured: dict[str, Any]) -> float:
    """The measured latency of a `measure_onnx` record; one written before records named their
    statistic holds the median."""
    return measured["latency_ms"] if "latency_ms" in measured else measured["median_ms"]


def measure_onnx(path: Path, input_shape: tuple[int, ...], protocol: Protocol) -> dict[str, Any]:
    """Latency (ms, the protocol's statistic as `latency_ms`, with median, p10 and p90) of one
    inference of the ONNX file with the local profile's settings."""
    from nas.hardware.backends import OnnxRuntimeBackend
    from nas.hardware.devices import host_facts

    device = local_device()
    backend = OnnxRuntimeBackend(device)  # checks the provider is there; its session options are the LUT's
    x = np.random.default_rng(0).standard_normal((device.batch, *input_shape[1:]), dtype=np.float32)
    feeds = {"input": x}

    def make_runner():
        session = backend.session(str(path))
        return lambda: session.run(None, feeds)

    summary = measure_models([make_runner], protocol)[0]
    return {"device": device.name, "latency_ms": summary.at(protocol.statistic), "statistic": protocol.statistic,
            "median_ms": summary.median, "p10_ms": summary.p10, "p90_ms": summary.p90,
            "samples": summary.n, "rejected": summary.rejected, "protocol": protocol.to_dict(),
            "runtime": device.runtime(), "cpu": host_facts().get("cpu")}
