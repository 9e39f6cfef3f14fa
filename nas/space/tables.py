"""Per-slot tables of a per-layer metric, so whole-network metrics of many archs are
a gather and a reduction over an N x D code matrix instead of Python loops over layers.

For each slot the table holds the metric of the slot's LayerSpec for every combination
of the decisions it depends on (0 where the layer is inactive). Slots that depend on
the same decisions share one table. The same machinery serves the analytic counters
here and latency lookup tables, whose per-layer metric is a measured time.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from nas.errors import NasError
from nas.space.base import SearchSpace
from nas.space.counters import dtype_bytes, layer_macs, layer_params, layer_peak_elements
from nas.space.layers import LayerSpec

MAX_COMBINATIONS = 2_000_000  # per slot; larger tables mean a slot reads too many decisions


class SpecTable:
    """Vectorised `codes -> metric` for one space, one per-layer metric and one reduction."""

    def __init__(
        self,
        space: SearchSpace,
        metric: Callable[[LayerSpec], float],
        reduce: str = "sum",
        resolution: int | None = None,
    ) -> None:
        if reduce not in ("sum", "max"):
            raise ValueError("reduce must be 'sum' or 'max'")
        self.space = space
        self.reduce = reduce
        combine = np.add if reduce == "sum" else np.maximum
        column = {d.name: i for i, d in enumerate(space.decisions)}
        values_of_spec: dict[LayerSpec, float] = {}
        tables_of_slot: dict[int, np.ndarray] = {}
        grouped: dict[tuple[int, ...], np.ndarray] = {}
        for slot in space.slots():
            cols = tuple(sorted(column[name] for name in slot.deps))
            table = tables_of_slot.get(id(slot))
            if table is None:
                table = self._tabulate(slot, cols, metric, values_of_spec, resolution)
                tables_of_slot[id(slot)] = table
            grouped[cols] = combine(grouped[cols], table) if cols in grouped else table.copy()
        self._parts = []
        for cols, table in grouped.items():
            radices = space.radices[list(cols)]
            strides = np.ones(len(cols), dtype=np.int64)
            for i in range(len(cols) - 2, -1, -1):
                strides[i] = strides[i + 1] * radices[i + 1]
            self._parts.append((list(cols), strides, table))

    def _tabulate(self, slot, cols, metric, cache, resolution) -> np.ndarray:
        decisions = [self.space.decisions[c] for c in cols]
        n = int(np.prod([len(d.choices) for d in decisions], dtype=np.int64))
        if n > MAX_COMBINATIONS:
            raise NasError(f"space {self.space.name}: a layer depends on {n} decision combinations; split its decisions")
        table = np.zeros(n, dtype=np.float64)
        for flat, combo in enumerate(itertools.product(*(d.choices for d in decisions))):
            spec = slot.make({d.name: v for d, v in zip(decisions, combo)}, resolution)
            if spec is None:
                continue
            value = cache.get(spec)
            if value is None:
                value = cache[spec] = float(metric(spec))
            table[flat] = value
        return table

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        """The metric of each row of an N x D code matrix (or of one code vector)."""
        codes = np.asarray(codes, dtype=np.int64)
        single = codes.ndim == 1
        codes = np.atleast_2d(codes)
        out = np.zeros(len(codes), dtype=np.float64)
        for cols, strides, table in self._parts:
            if cols:
                flat = codes[:, cols[0]] * strides[0]
                for c, s in zip(cols[1:], strides[1:]):
                    flat += codes[:, c] * s
                values = table[flat]
            else:
                values = table[0]
            if self.reduce == "sum":
                out += values
            else:
                np.maximum(out, values, out=out)
        return out[0] if single else out


def counter_table(space: SearchSpace, metric: str, resolution: int | None = None, dtype: str = "float32") -> SpecTable:
    """Tables for the analytic counters: params, macs, peak_activation_bytes, weight_bytes."""
    nbytes = dtype_bytes(dtype)
    metrics: dict[str, tuple[Callable[[LayerSpec], float], str]] = {
        "params": (layer_params, "sum"),
        "macs": (layer_macs, "sum"),
        "weight_bytes": (lambda s: layer_params(s) * nbytes, "sum"),
        "peak_activation_bytes": (lambda s: layer_peak_elements(s) * nbytes, "max"),
    }
    if metric not in metrics:
        from nas.errors import closest

        raise NasError(f"unknown counter {metric!r}{closest(metric, metrics)}; known: {', '.join(metrics)}")
    fn, reduce = metrics[metric]
    return SpecTable(space, fn, reduce, resolution)
