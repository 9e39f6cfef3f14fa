"""Energy per inference: an analytic estimate, measured counters, imported measurements.

The estimate (always labelled as one, with its coefficients) follows the device
profile's power model:

    E [mJ] = idle_w x latency [ms] + (pJ/MAC x MACs + pJ/byte x bytes moved) x 1e-9

where bytes moved = deployed weights + every block's input and output activations
(nas.space.counters.layer_io_elements), each at its block's precision. Measured energy reads Linux powercap/RAPL or
NVML where the machine exposes them; measurements from remote devices are imported
into energy LUTs (per block) or arch tables (per whole model, for predictors).
"""
from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.atomic import write_atomic
from nas.costs import CostModel, as_codes
from nas.errors import NasError
from nas.hardware.devices import POWER_KEYS, Device
from nas.hardware.lut import LUT, lut_blocks, new_meta
from nas.hardware.measure import Summary
from nas.space.arch import Arch
from nas.space.base import SearchSpace
from nas.space.counters import dtype_bytes, layer_io_elements, layer_macs, layer_weight_bytes
from nas.space.layers import LayerSpec
from nas.space.tables import SpecTable


class AnalyticEnergy(CostModel):
    """The device profile's power model applied to MACs, bytes moved and a latency source."""

    metric, unit = "energy", "mJ"

    def __init__(self, space: SearchSpace, device: Device, latency: CostModel, resolution: int | None = None) -> None:
        missing = [k for k in POWER_KEYS if k not in device.power]
        if missing:
            raise NasError(f"device {device.name} has no power model for an energy estimate: add "
                           f"power: {{{', '.join(missing)}}} to its device.yaml")
        if latency.unit != "ms":
            raise NasError(f"the energy estimate needs a latency in ms, got {latency.metric} in {latency.unit}")
        self.space, self.device, self.latency = space, device, latency
        nbytes = dtype_bytes(device.dtype)
        self.macs = SpecTable(space, layer_macs, "sum", resolution)
        def moved(s: LayerSpec) -> int:  # at each block's stored width (1 byte per int8 activation)
            return layer_weight_bytes(s, device.dtype) + layer_io_elements(s) * (1 if s.precision == "int8" else nbytes)

        self.bytes_moved = SpecTable(space, moved, "sum", resolution)

    def _combine(self, latency_ms, macs, moved):
        p = self.device.power
        return p["idle_w"] * latency_ms + (p["energy_per_mac_pj"] * macs + p["energy_per_byte_pj"] * moved) * 1e-9

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        codes = as_codes(self.space, archs)
        return self._combine(self.latency.predict(codes), self.macs(codes), self.bytes_moved(codes))

    def expected(self, probs):
        return self._combine(self.latency.expected(probs), self.macs.expected(probs), self.bytes_moved.expected(probs))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "estimate": True, "device": self.device.name,
                "coefficients": dict(self.device.power), "latency_source": self.latency.describe(),
                "formula": "idle_w*latency_ms + (energy_per_mac_pj*MACs + energy_per_byte_pj*bytes_moved)*1e-9"}


# ----------------------------------------------------------------------------- measured energy
class EnergyCounter:
    """A cumulative energy counter in millijoules."""

    def __init__(self, name: str, read_mj: Callable[[], float], wrap_mj: float = math.inf) -> None:
        self.name, self.read_mj, self.wrap_mj = name, read_mj, wrap_mj

    def delta(self, before: float, after: float) -> float:
        return after - before if after >= before else after + self.wrap_mj - before


def find_energy_counter() -> EnergyCounter:
    """RAPL package energy (Linux powercap) or NVML GPU energy; an error naming both otherwise."""
    for domain in sorted(Path("/sys/class/powercap").glob("*rapl:*")):
        energy, wrap = domain / "energy_uj", domain / "max_energy_range_uj"
        try:
            int(energy.read_text())
            wrap_mj = int(wrap.read_text()) / 1000 if wrap.exists() else math.inf
        except (OSError, ValueError):
            continue
        return EnergyCounter(f"powercap {domain.name}", lambda e=energy: int(e.read_text()) / 1000, wrap_mj)
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return EnergyCounter("nvml gpu0", lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)))
    except Exception:  # pynvml missing, no NVIDIA driver, or a GPU without the counter
        pass
    raise NasError("this machine has no energy counter hwnas can read (no readable /sys/class/powercap/*rapl*/energy_uj, "
                   "no NVML): use the analytic estimate, or measure on the device and 'hwnas energy import'")


def measure_energy(run: Callable[[], object], counter: EnergyCounter, seconds: float = 2.0) -> dict[str, Any]:
    """Energy per inference while running `run` back to back for about `seconds`.

    The counter covers the whole package (or GPU), so this includes idle power: the
    figure comparable to a device's battery drain per inference.
    """
    for _ in range(5):
        run()
    runs, start_mj, start = 0, counter.read_mj(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        runs += 1
    used = counter.delta(start_mj, counter.read_mj())
    return {"energy_mj": used / runs, "runs": runs, "counter": counter.name, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- imported measurements
def _read_rows(path: Path, value_column: str, key_column: str) -> list[tuple[int, str, float]]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise NasError(f"{path}: cannot read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    for needed in (key_column, value_column):
        if needed not in (reader.fieldnames or []):
            raise NasError(f"{path}: needs columns '{key_column}' and '{value_column}', has {reader.fieldnames}")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            value = float(row[value_column])
        except (TypeError, ValueError):
            raise NasError(f"{path}:{line}: {value_column} = {row[value_column]!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise NasError(f"{path}:{line}: {value_column} = {row[value_column]} is not a positive finite energy")
        rows.append((line, row[key_column], value))
    if not rows:
        raise NasError(f"{path}: no rows")
    return rows


def import_layer_energy(path: Path, space: SearchSpace, device: Device, out: Path,
                        resolutions: Sequence[int | None] = (None,)) -> LUT:
    """An energy LUT from a CSV with columns key (a block key, as in LUTs and kits) and energy_mj."""
    specs = {s.key: s for s in lut_blocks(space, resolutions)}
    entries = {}
    for line, key, value in _read_rows(path, "energy_mj", "key"):
        if key not in specs:
            raise NasError(f"{path}:{line}: block {key!r} is not a block of space {space.name}")
        if key in entries:
            raise NasError(f"{path}:{line}: duplicated block {key!r}")
        entries[key] = (specs[key], Summary(value, value, value, value, 0.0, 1, 0))
    missing = [k for k in specs if k not in entries]
    if missing:
        raise NasError(f"{path}: {len(missing)} block(s) of the space lack energy, e.g. {missing[0]!r}")
    meta = new_meta(space, device, list(resolutions), metric="energy", unit="mJ", source=f"imported {Path(path).name}")
    meta["complete"] = True
    lut = LUT(meta, {k: entries[k] for k in specs})
    lut.save(out)
    return lut


def import_arch_energy(path: Path, space: SearchSpace, out: Path) -> int:
    """A per-arch table (arch_id, arch, energy_mj) from a CSV with columns arch and energy_mj,
    where arch is canonical arch JSON or, for NB201, the arch string; returns the row count."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arch_id", "arch", "energy_mj"])
    seen: set[str] = set()
    for line, text, value in _read_rows(path, "energy_mj", "arch"):
        try:
            arch = space.parse_arch(text)
        except NasError as exc:
            raise NasError(f"{path}:{line}: {exc}") from None
        if arch.arch_id in seen:
            raise NasError(f"{path}:{line}: arch {arch.arch_id} appears twice")
        seen.add(arch.arch_id)
        writer.writerow([arch.arch_id, arch.to_json(), repr(value)])
    write_atomic(Path(out), buf.getvalue())
    return len(seen)
