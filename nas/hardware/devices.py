"""Device profiles: latency_luts/<device>/device.yaml, in any LUT layer of the catalogue
($HWNAS_LUTS, ./latency_luts, the shipped profiles; see nas.catalog).

A profile says how a device runs models (runtime backend, execution provider, threads,
batch, dtype), which block precisions its runtime runs (`precisions`, fp32 unless the
profile says more; `reduce_range: true` for x86 CPUs without VNNI, whose int8 kernels
need 7-bit weights) and, optionally, hardware facts and a power model for the analytic
energy estimate. `detect: true` marks the profile of the machine hwnas runs on: its
CPU model, cores and library versions are read when it is loaded.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from nas import catalog
from nas.config import Section, Tuple, first_error, validate
from nas.errors import CompatibilityError, NasError, closest, unknown_key
from nas.provenance import library_versions
from nas.space.layers import PRECISIONS, LayerSpec


class Power(Section):
    """The analytic energy model's coefficients (nas.hardware.energy needs all three)."""

    key_word = "power key"
    idle_w: float | None = None
    energy_per_mac_pj: float | None = None
    energy_per_byte_pj: float | None = None


class Hardware(Section):
    """Facts about a remote device for its description (a detected device reads its own)."""

    key_word = "hardware key"
    cpu: str | None = None
    peak_gflops: float | None = None
    memory_bandwidth_gbs: float | None = None
    memory_bytes: int | None = None


POWER_KEYS = tuple(Power.model_fields)


class Device(Section):
    """A device profile (latency_luts/<device>/device.yaml)."""

    name: str
    backend: Literal["onnxruntime", "torch"]
    provider: str = "CPUExecutionProvider"
    threads: int = Field(1, ge=1)
    batch: int = Field(1, ge=1)
    dtype: str = "float32"
    description: str = ""
    detect: bool = False                    # this machine: CPU model, cores and versions are read at load
    hardware: dict[str, Any] = {}
    power: dict[str, float] = {}
    versions: dict[str, str] = {}           # pinned runtime versions of a remote device
    precisions: Tuple[tuple[str, ...]] = ("fp32",)  # block precisions the runtime runs (nas.space.layers.PRECISIONS)
    reduce_range: bool = False              # int8 weights in [-64, 64]: x86 without VNNI (saturating int16 sums)

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for p in value:
            if p not in PRECISIONS:
                raise ValueError(unknown_key(p, PRECISIONS, "precision"))
        if not value or len(set(value)) != len(value):
            raise ValueError(f"precisions must list distinct precisions, got {list(value)}")
        if "int8" in value and info.data.get("backend") == "torch":
            raise ValueError("the torch backend runs the float modules; int8 needs backend onnxruntime")
        return value

    def check_precisions(self, specs: Iterable[LayerSpec], what: str) -> None:
        """Refuse blocks of a precision this device's runtime does not run (before any
        profiling or costing starts)."""
        lacking = sorted({s.precision for s in specs} - set(self.precisions))
        if lacking:
            raise CompatibilityError(f"{what} has {', '.join(lacking)} blocks, but device {self.name} runs only "
                                     f"{', '.join(self.precisions)} (precisions in its device.yaml)")

    @field_validator("power", "hardware", mode="before")
    @classmethod
    def _known(cls, value: Any, info: ValidationInfo) -> Any:
        """Checked by their own models, kept as plain dicts of the keys given."""
        model = Power if info.field_name == "power" else Hardware
        try:
            return model.model_validate(value or {}).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise ValueError(first_error(exc)) from None

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value != "float32":
            raise ValueError(f"only float32 profiling is supported, got dtype {value!r}")
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return value.strip()

    @field_validator("versions", mode="before")
    @classmethod
    def _versions(cls, value: Any) -> Any:
        """YAML reads 1.17 as a number; a version is text."""
        return {k: str(v) for k, v in value.items()} if isinstance(value, dict) else value

    @property
    def folder(self) -> Path:
        """Where this device's new LUTs are written: its folder in the first user LUT layer
        (nas.catalog.write_dir), never the installed package."""
        return catalog.write_dir(catalog.LUTS) / self.name

    def runtime(self) -> dict[str, Any]:
        """What a measurement depends on: backend, provider, threads, batch, dtype, versions."""
        runtime_library = "onnxruntime" if self.backend == "onnxruntime" else "torch"
        versions = self.versions or (library_versions(["python", "numpy", runtime_library]) if self.detect else {})
        return {"backend": self.backend, "provider": self.provider if self.backend == "onnxruntime" else None,
                "threads": self.threads, "batch": self.batch, "dtype": self.dtype, "versions": versions}

    def describe(self) -> dict[str, Any]:
        info = {"name": self.name, "description": self.description, **self.runtime(),
                "hardware": dict(self.hardware), "power": dict(self.power)}
        if self.detect:
            info["hardware"] = {**host_facts(), **info["hardware"]}
        return info


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
    """A validated profile; without a `name` it is the profile's folder name."""
    if not isinstance(data, dict):
        raise NasError(f"{source}: a device profile must be a mapping")
    return validate(Device, {"name": data.get("name") or Path(source).parent.name, **data}, source)
