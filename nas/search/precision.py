"""What each precision choice costs on a search's front: flip it, re-score, compare.

A front mixes many decisions, so grouping its archs by one precision decision confounds
that decision with everything else that differs between them. Here every front arch
(up to `max_archs`, spread along the front) is re-scored with one precision decision
flipped and everything else kept, with the problem's own cost models: the supernet
oracle (quantized accuracy for int8 layers), the precision-aware LUT latency and
energy, the counters. The effect of a decision is then the median, over the front
archs where it shapes the network, of (its int8 value - its fp32 value) for every
metric: a paired difference, the cost or gain of that one choice in the networks the
search chose. It costs one query per (arch, decision), so it runs on the front only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nas.search.runner import SearchResult
from nas.space.arch import Arch
from nas.space.base import SearchSpace

SCHEMA = "hwnas.precision-effects/1"


def precision_decisions(space: SearchSpace) -> list[str]:
    """Decisions that choose between float32 and int8 for some layers."""
    return [d.name for d in space.decisions if set(d.choices) >= {"fp32", "int8"}]


def describe_precisions(space: SearchSpace, arch: Arch) -> dict[str, Any]:
    """Which layers of `arch` are int8: each precision decision's value, and the count of
    int8 layers among the active ones (network order)."""
    layers = space.layers(arch)
    return {"decisions": {name: arch[name] for name in precision_decisions(space)},
            "int8_layers": [i for i, s in enumerate(layers) if s.precision == "int8"], "layers": len(layers)}


def _flip(space: SearchSpace, arch: Arch, decision: str) -> Arch | None:
    """`arch` with `decision` at the other precision, or None where it does not shape the network."""
    other = "fp32" if arch[decision] == "int8" else "int8"
    flipped = space.arch({**dict(arch), decision: other})
    return None if space.layers(flipped) == space.layers(arch) else flipped


def _spread(rows: np.ndarray, k: int) -> np.ndarray:
    """At most k rows, evenly spaced along the front (its ends included)."""
    if len(rows) <= k:
        return rows
    return rows[np.unique(np.round(np.linspace(0, len(rows) - 1, k)).astype(int))]


def precision_effects(result: SearchResult, max_archs: int = 6) -> dict[str, Any] | None:
    """Flip each precision decision of each front arch and re-score it (None for a space
    without precision decisions or a search without a feasible arch)."""
    problem, space = result.problem, result.problem.space
    decisions = precision_decisions(space)
    front = _spread(result.front(), max_archs)
    if not decisions or not len(front):
        return None
    names = list(problem.metrics)
    archs = [space.decode(result.codes[i]) for i in front]
    pairs: list[tuple[int, str, Arch]] = [(k, d, flipped) for k, arch in enumerate(archs) for d in decisions
                                          if (flipped := _flip(space, arch, d)) is not None]
    flipped_values: dict[str, np.ndarray] = {}
    if pairs:
        codes = np.stack([space.encode(a) for _, _, a in pairs])
        flipped_values = {**problem.cheap(codes), **problem.query(codes)}
    rows = []
    for d in decisions:
        deltas: dict[str, list[float]] = {n: [] for n in names}
        for j, (k, name, flipped) in enumerate(pairs):
            if name != d:
                continue
            sign = 1.0 if flipped[d] == "int8" else -1.0  # always int8 minus fp32
            for n in names:
                deltas[n].append(sign * (float(flipped_values[n][j]) - float(result.values[n][front[k]])))
        n_pairs = len(deltas[names[0]]) if names else 0
        rows.append({"decision": d, "archs": n_pairs,
                     "int8_on_front": sum(a[d] == "int8" for a in archs),
                     "int8_minus_fp32": {n: (float(np.nanmedian(v)) if v and not np.all(np.isnan(v)) else None)
                                         for n, v in deltas.items()}})
    best = result.best()
    return {"schema": SCHEMA, "metrics": {n: problem.metrics[n].unit for n in names},
            "best": None if best is None else {"arch_id": space.decode(result.codes[best]).arch_id,
                                               **describe_precisions(space, space.decode(result.codes[best]))},
            "front": [{"arch_id": a.arch_id, **describe_precisions(space, a),
                       "metrics": {n: float(result.values[n][i]) for n in names}} for a, i in zip(archs, front)],
            "effects": rows, "queries": len(pairs)}
