"""Device profiles: latency_luts/<device>/device.yaml, in any LUT layer of the catalogue
($HWNAS_LUTS, ./latency_luts, the shipped profiles; see nas.catalog).

A profile says how a device runs models (runtime backend, execution provider, threads,
batch, dtype) and, optionally, hardware facts and a power model for the analytic
energy estimate. `detect: true` marks the profile of the machine hwnas runs on: its
CPU model, cores and library versions are read when it is loaded.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas import catalog
from nas.errors import NasError, closest

BACKENDS = ("onnxruntime", "torch")
KEYS = ("name", "description", "backend", "provider", "threads", "batch", "dtype", "detect", "hardware", "power", "versions")
POWER_KEYS = ("idle_w", "energy_per_mac_pj", "energy_per_byte_pj")
HARDWARE_KEYS = ("cpu", "peak_gflops", "memory_bandwidth_gbs", "memory_bytes")


@dataclass(frozen=True)
class Device:
    name: str
    backend: str
    provider: str = "CPUExecutionProvider"
    threads: int = 1
    batch: int = 1
    dtype: str = "float32"
    description: str = ""
    detect: bool = False
    hardware: dict[str, Any] = field(default_factory=dict)
    power: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # pinned runtime versions of a remote device

    @property
    def folder(self) -> Path:
        """Where this device's new LUTs are written: its folder in the first user LUT layer
        (nas.catalog.write_dir), never the installed package."""
        return catalog.write_dir(catalog.LUTS) / self.name

    def runtime(self) -> dict[str, Any]:
        """What a measurement depends on: backend, provider, threads, batch, dtype, versions."""
        versions = self.versions or (local_versions(self.backend) if self.detect else {})
        return {"backend": self.backend, "provider": self.provider if self.backend == "onnxruntime" else None,
                "threads": self.threads, "batch": self.batch, "dtype": self.dtype, "versions": versions}

    def describe(self) -> dict[str, Any]:
        info = {"name": self.name, "description": self.description, **self.runtime(),
                "hardware": dict(self.hardware), "power": dict(self.power)}
        if self.detect:
            info["hardware"] = {**host_facts(), **info["hardware"]}
        return info


def local_versions(backend: str) -> dict[str, str]:
    import numpy

    versions = {"python": platform.python_version(), "numpy": numpy.__version__}
    if backend == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    else:
        import torch

        versions["torch"] = torch.__version__
    return versions


def host_facts() -> dict[str, Any]:
    """CPU model, logical cores and memory of this machine."""
    facts: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "machine": platform.machine(), "system": platform.system()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory_bytes"] = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return facts


def device_names() -> list[str]:
    """Every device with a profile in some LUT layer."""
    return sorted({name.split("/")[0] for name in catalog.glob(catalog.LUTS, "*/device.yaml")})


def load_device(name: str) -> Device:
    """The profile <name>/device.yaml of the first LUT layer that has one."""
    path = catalog.find(catalog.LUTS, f"{name}/device.yaml") if name and "/" not in name else None
    if path is None:
        known = device_names()
        raise NasError(f"unknown device {name!r}{closest(name, known)}; known devices: {', '.join(known) or 'none'}")
    from nas.space.registry import read_yaml

    return device_from_dict(read_yaml(path), str(path))


def device_from_dict(data: Any, source: str = "<dict>") -> Device:
    if not isinstance(data, dict):
        raise NasError(f"{source}: a device profile must be a mapping")
    for key in data:
        if key not in KEYS:
            raise NasError(f"{source}: unknown key {key!r}{closest(key, KEYS)}")
    for section, allowed in (("power", POWER_KEYS), ("hardware", HARDWARE_KEYS)):
        for key in data.get(section) or {}:
            if key not in allowed:
                raise NasError(f"{source}: unknown {section} key {key!r}{closest(key, allowed)}; known: {', '.join(allowed)}")
    if data.get("backend") not in BACKENDS:
        raise NasError(f"{source}: backend must be one of {', '.join(BACKENDS)}, got {data.get('backend')!r}")
    for key in ("threads", "batch"):
        value = data.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise NasError(f"{source}: {key} must be a positive integer, got {value!r}")
    if data.get("dtype", "float32") != "float32":
        raise NasError(f"{source}: only float32 profiling is supported, got dtype {data.get('dtype')!r}")
    return Device(
        name=str(data.get("name") or Path(source).parent.name), backend=data["backend"],
        provider=str(data.get("provider", "CPUExecutionProvider")), threads=data.get("threads", 1),
        batch=data.get("batch", 1), dtype="float32", description=str(data.get("description", "")).strip(),
        detect=bool(data.get("detect", False)), hardware=dict(data.get("hardware") or {}),
        power={k: float(v) for k, v in (data.get("power") or {}).items()},
        versions={k: str(v) for k, v in (data.get("versions") or {}).items()},
    )
