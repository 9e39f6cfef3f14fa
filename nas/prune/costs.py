"""Costs of a LayerSpec network for pruning: a device's LUT, profiled on demand, and the counters.

Pruned widths are rarely choices of the space, so their blocks are rarely in the LUT.
`NetworkCosts` times the missing ones when first asked, with the LUT's own protocol,
backend and yardstick (nas.hardware.profiling: every chunk beside the LUT's reference
network, rescaled to its baseline), adds them to the LUT and saves it after every
batch, so a killed prune keeps what it measured and a rerun times nothing twice. A
network's latency is then the LUT's calibrated per-block sum, as LUTCost predicts an
arch's (nas.hardware.calibration).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.costs import COUNTER_UNITS
from nas.errors import ConfigError
from nas.hardware.calibration import calibrated_block_value
from nas.hardware.lut import LUT
from nas.hardware.measure import Protocol
from nas.space.base import SearchSpace
from nas.space.counters import network_counts
from nas.space.layers import LayerSpec

COUNTERS = tuple(COUNTER_UNITS)


class NetworkCosts:
    """Latency on one device from its LUT (blocks profiled on demand) and exact counts."""

    def __init__(self, space: SearchSpace, device_name: str, lut_path: Path | None = None,
                 allow_mismatch: bool = False) -> None:
        from nas.hardware.backends import make_backend
        from nas.hardware.devices import load_device
        from nas.hardware.profiling import default_lut_path, lut_yardstick

        self.space, self.device = space, load_device(device_name)
        self.lut_path = Path(lut_path) if lut_path else default_lut_path(self.device, space)
        self.lut = LUT.load(self.lut_path)
        self.lut.check(space, self.device, allow_mismatch)
        self.protocol = Protocol.recorded(self.lut.meta.get("protocol"))
        self.resolution = (self.lut.meta.get("resolutions") or [None])[0]
        self.backend = make_backend(self.device)
        self.yardstick = lut_yardstick(self.lut, space, self.backend, self.resolution)
        calibration = self.lut.meta.get("calibration")
        self.block = calibrated_block_value(calibration, self.lut.value) if calibration else self.lut.value
        self.intercept = calibration["intercept"] if calibration else 0.0
        self.profiled: list[str] = []

    @property
    def metric(self) -> str:
        return f"latency@{self.device.name}"

    def ensure(self, specs: Sequence[LayerSpec]) -> int:
        """Profile the blocks the LUT lacks (saving the LUT), return how many were timed."""
        from nas.hardware.measure import measure_models
        from nas.hardware.profiling import CHUNK

        todo = list(dict.fromkeys(s for s in self.lut.missing(specs)))
        if not todo:
            return 0
        self.device.check_precisions(todo, "the pruned network")
        factories = [lambda s=s: self.backend.runner([s]) for s in todo]
        for spec, timing in zip(todo, measure_models(factories, self.protocol, self.yardstick, CHUNK,
                                                     seed=len(self.lut.entries))):
            self.lut.entries[spec.key] = (spec, timing)
        self.lut.save(self.lut_path)
        self.profiled += [s.key for s in todo]
        return len(todo)

    def latency(self, layers: Sequence[LayerSpec]) -> float:
        self.ensure(layers)
        return float(sum(self.block(s) for s in layers) + self.intercept)

    def per_layer(self, layers: Sequence[LayerSpec]) -> list[float]:
        self.ensure(layers)
        return [float(self.block(s)) for s in layers]

    def value(self, metric: str, layers: Sequence[LayerSpec]) -> float:
        if metric == self.metric:
            return self.latency(layers)
        if metric in COUNTERS:
            return float(network_counts(layers)[metric])
        raise ConfigError(f"cannot prune to a budget on {metric!r}; pruning budgets are {self.metric} (from the LUT "
                          f"{self.lut_path}) and the counters {', '.join(COUNTERS)}")

    def unit(self, metric: str) -> str:
        return self.lut.unit if metric == self.metric else COUNTER_UNITS[metric]

    def figures(self, metrics: Sequence[str], layers: Sequence[LayerSpec]) -> dict[str, dict[str, Any]]:
        """{metric: {value, unit, source}} as nas.export.budgets.check_budgets reads them."""
        return {m: {"value": self.value(m, layers), "unit": self.unit(m),
                    "source": f"LUT {self.lut_path}" if m == self.metric else "counters"} for m in metrics}

    def measure(self, layers: Sequence[LayerSpec]) -> float:
        """End-to-end time (ms, the LUT's statistic) of the whole network with the LUT's protocol and yardstick:
        the measurement its prediction is held to, on the LUT's own scale."""
        from nas.hardware.measure import measure_models

        return measure_models([lambda: self.backend.runner(list(layers))], self.protocol, self.yardstick)[0].at(
            self.protocol.statistic)
