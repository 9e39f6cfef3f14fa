"""Per-slot tables of a per-layer metric, so whole-network metrics of many archs are
a gather and a reduction over an N x D code matrix instead of Python loops over layers.

For each slot the table holds the metric of the slot's LayerSpec for every combination
of the decisions it depends on (0 where the layer is inactive). Slots that depend on
the same decisions share one table. The same machinery serves the analytic counters
here and latency lookup tables, whose per-layer metric is a measured time.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from nas.errors import NasError
from nas.space.base import SearchSpace
from nas.space.counters import dtype_bytes, layer_macs, layer_params, layer_peak_bytes, layer_weight_bytes
from nas.space.layers import LayerSpec

if TYPE_CHECKING:
    import torch

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
        table = np.zeros(int(np.prod(self.space.radices[list(cols)])), dtype=np.float64)
        for flat, spec in slot_variants(self.space, slot, cols, resolution):
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

    def expected(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected value of a sum metric when decision i takes choice j with probability
        probs[i][j], independently: differentiable in the probabilities (for gradient-based
        search). Each slot's table is contracted with the probabilities of its decisions."""
        import torch

        if self.reduce != "sum":
            raise NasError("expected() is defined for additive metrics only")
        if len(probs) != len(self.space.decisions):
            raise NasError(f"expected() needs one probability vector per decision ({len(self.space.decisions)})")
        total = torch.zeros((), dtype=probs[0].dtype if len(probs) else torch.float64)
        for cols, _, table in self._parts:
            t = torch.as_tensor(table, dtype=total.dtype).reshape([int(self.space.radices[c]) for c in cols] or [1])
            for c in reversed(cols):
                t = t @ probs[c]
            total = total + t.reshape(())
        return total


@functools.lru_cache(maxsize=1024)
def slot_variants(space: SearchSpace, slot, cols: tuple[int, ...], resolution: int | None) -> tuple[tuple[int, LayerSpec], ...]:
    """(flat table index, LayerSpec) of every active variant of a slot over its decisions.

    Cached: every metric table of a space (params, MACs, LUT latency, ...) walks the
    same variants, and building LayerSpecs dominates the cost of a table.
    """
    decisions = [space.decisions[c] for c in cols]
    n = int(np.prod([len(d.choices) for d in decisions], dtype=np.int64))
    if n > MAX_COMBINATIONS:
        raise NasError(f"space {space.name}: a layer depends on {n} decision combinations; split its decisions")
    made = ((flat, slot.make({d.name: v for d, v in zip(decisions, combo)}, resolution))
            for flat, combo in enumerate(itertools.product(*(d.choices for d in decisions))))
    return tuple((flat, spec) for flat, spec in made if spec is not None)


def unique_layers(space: SearchSpace, resolution: int | None = None) -> list[LayerSpec]:
    """Every distinct LayerSpec the space can produce, in network order (what a LUT must hold)."""
    column = {d.name: i for i, d in enumerate(space.decisions)}
    seen: dict[LayerSpec, None] = {}
    done: set[int] = set()
    for slot in space.slots():
        if id(slot) in done:
            continue
        done.add(id(slot))
        cols = tuple(sorted(column[name] for name in slot.deps))
        for _, spec in slot_variants(space, slot, cols, resolution):
            seen.setdefault(spec, None)
    return list(seen)


def counter_table(space: SearchSpace, metric: str, resolution: int | None = None, dtype: str = "float32") -> SpecTable:
    """Tables for the analytic counters: params, macs, peak_activation_bytes, weight_bytes."""
    dtype_bytes(dtype)  # an unknown dtype is refused before any table is built
    metrics: dict[str, tuple[Callable[[LayerSpec], float], str]] = {
        "params": (layer_params, "sum"),
        "macs": (layer_macs, "sum"),
        "weight_bytes": (lambda s: layer_weight_bytes(s, dtype), "sum"),
        "peak_activation_bytes": (lambda s: layer_peak_bytes(s, dtype), "max"),
    }
    if metric not in metrics:
        from nas.errors import closest

        raise NasError(f"unknown counter {metric!r}{closest(metric, metrics)}; known: {', '.join(metrics)}")
    fn, reduce = metrics[metric]
    return SpecTable(space, fn, reduce, resolution)
