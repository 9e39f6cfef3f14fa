"""The memory model checked against ONNX graphs and against measured process memory.

The memory budgets of a search are the memory model's (nas.space.counters): deployed
weight bytes and peak activation bytes. Two checks tell how far they carry:

- the ONNX graph a runtime loads must hold exactly the weight bytes as float
  initializers (any difference is a bug in one of the two);
- where the operating system exposes a process's peak resident memory (Linux), each
  network is loaded and run by onnxruntime in a fresh process (memory_probe), and the
  growth while loading and while running is compared with weights and activations.
  The runtime keeps more than one copy of the weights and a workspace beside the
  activations, so the report gives the ratios and whether the model ranks networks
  as the measurements do, not a claim that the model equals the process's memory.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from tqdm import tqdm

from nas.errors import NasError
from nas.hardware.devices import Device
from nas.hardware.onnx_graph import weight_initializer_bytes, network_model
from nas.hardware.profiling import arch_rng, distinct_archs
from nas.space.base import SearchSpace
from nas.space.counters import network_counts

PROBE_TIMEOUT_S = 300


def measured_memory_unavailable(device: Device) -> str | None:
    """Why memory cannot be measured for this device here, or None when it can."""
    if device.backend != "onnxruntime":
        return f"measured memory needs the onnxruntime backend; device {device.name} uses {device.backend}"
    if not (Path("/proc/self/status").exists() and Path("/proc/self/clear_refs").exists()):
        return "this machine does not expose a process's peak resident memory (/proc/self/clear_refs is Linux only)"
    import onnxruntime

    if device.provider not in onnxruntime.get_available_providers():
        return f"device {device.name} needs onnxruntime's {device.provider}, which this machine lacks"
    return None


def measure_memory(model_path: Path, device: Device) -> dict[str, int]:
    """load_bytes and run_bytes of one ONNX file, measured in a fresh process."""
    reason = measured_memory_unavailable(device)
    if reason:
        raise NasError(reason)
    cmd = [sys.executable, "-m", "nas.hardware.memory_probe", str(model_path), device.provider, str(device.threads)]
    probe = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        raise NasError(f"memory probe failed on {model_path.name}: {last}")
    return json.loads(probe.stdout.strip().splitlines()[-1])


def check_memory(space: SearchSpace, device: Device, n: int = 20, seed: int = 0,
                 resolution: int | None = None) -> dict[str, Any]:
    """The memory model against ONNX initializers and measured memory on n random archs.

    Single-threaded by protocol: each probe process runs onnxruntime with the device
    profile's threads (1 for local-cpu), never the free-core count of nas/threads.py:
    the runtime's configuration, hence what it allocates, must not depend on how busy
    the machine was when the check ran."""
    reason = measured_memory_unavailable(device)
    if reason:
        raise NasError(reason)
    archs = distinct_archs(space, n, arch_rng(seed, "validation"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwnas-memory-") as folder:
        path = Path(folder) / "model.onnx"
        for arch in tqdm(archs, desc=f"memory {space.name}@{device.name}", unit="arch"):
            layers = space.layers(arch, resolution)
            counts = network_counts(layers, device.dtype)
            model = network_model(layers, device.batch, seed)
            path.write_bytes(model.SerializeToString())
            rows.append({"arch_id": arch.arch_id, "weight_bytes": counts["weight_bytes"],
                         "initializer_bytes": weight_initializer_bytes(model),
                         "peak_activation_bytes": counts["peak_activation_bytes"] * device.batch,
                         **measure_memory(path, device)})
    col = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0] if k != "arch_id"}
    modelled, measured = col["weight_bytes"] + col["peak_activation_bytes"], col["load_bytes"] + col["run_bytes"]
    return {
        "space": space.name, "device": device.name, "n": len(rows), "seed": seed, "resolution": resolution,
        "initializers_match_weights": bool(np.all(col["initializer_bytes"] == col["weight_bytes"])),
        "load_over_weights": _ratio(col["load_bytes"], col["weight_bytes"]),
        "run_over_peak_activation": _ratio(col["run_bytes"], col["peak_activation_bytes"]),
        "spearman_weights_vs_load": _spearman(col["weight_bytes"], col["load_bytes"]),
        "spearman_model_vs_measured": _spearman(modelled, measured),
        "archs": rows,
    }


def _ratio(measured: np.ndarray, modelled: np.ndarray) -> dict[str, float]:
    r = measured / modelled
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max())}


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """None where either side does not vary (a space with one arch, a probe that read nothing)."""
    return float(stats.spearmanr(a, b).statistic) if np.ptp(a) > 0 and np.ptp(b) > 0 else None
