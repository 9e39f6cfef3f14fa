"""Budgets met on measurement: the pruning loop closed with end-to-end timings.

A LUT predicts a network as the sum of its blocks, calibrated on archs of its space.
Pruned widths lie outside those archs, so the prediction of a pruned network can be
off by more than the calibration's error, and a network that meets its latency budget
on the LUT can miss it when run. NetAdapt measures each proposal; here the rounds
stay on the LUT (cheap, exact for the blocks it holds) and the loop is closed at the
end: once the rounds meet the budget, the whole network is timed with the LUT's own
protocol and yardstick (NetworkCosts.measure, the scale its predictions are held to).
When the measurement misses, the LUT's predictions are corrected by the measured /
predicted ratio of that network (the nearest network to the ones still to come) and
the rounds go on to the corrected target. Every correction follows a miss and asks
for at least one more round, so the loop ends: when a measurement meets the budget,
or when pruning can go no further (the network stops changing), which the card and
the command then say plainly.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from nas.export.bundle import layers_hash
from nas.prune.costs import NetworkCosts
from nas.space.layers import LayerSpec

Rows = list[dict[str, Any]]
Check = Callable[[list[LayerSpec]], Rows]
# a pruning method run to the budgets that `check` reports: the network, its weights, the rounds
Method = Callable[[Check], tuple[list[LayerSpec], nn.Module, list[dict[str, Any]]]]


def measured_figures(costs: NetworkCosts, figures: dict[str, dict[str, Any]],
                     measured: float | None) -> dict[str, dict[str, Any]]:
    """The LUT latency figure replaced by a measurement of the whole network."""
    if measured is not None and costs.metric in figures:
        figures[costs.metric] = figures[costs.metric] | {
            "value": measured, "source": "measured end to end with the LUT's protocol and yardstick"}
    return figures


def corrected_row(row: dict[str, Any], upper: bool, correction: float) -> dict[str, Any]:
    """A latency budget row on the LUT's scale: the bound divided by the correction (the
    measured / predicted ratio of the last network timed), so the rounds and their
    proposals keep comparing LUT predictions with one target."""
    if correction == 1.0 or row.get("value") is None:
        return row
    bound = row["bound"] / correction
    return row | {"bound": bound, "correction": correction,
                  "met": bool(row["value"] <= bound if upper else row["value"] >= bound)}


def meet_measured(method: Method, costs: NetworkCosts,
                  check: Callable[..., Rows], checks: list[dict[str, Any]],
                  save: Callable[[list[dict[str, Any]]], None]) -> tuple[list[LayerSpec], nn.Module,
                                                                         list[dict[str, Any]], bool]:
    """Run `method` to the budgets, time the result, correct the LUT and go on until the
    measurement meets every latency budget; returns the network, weights, rounds, and
    whether the measurement met them. `check(layers, correction=, measured=)` gives the
    budget rows (corrected_row's LUT targets, or the measured figures); `checks` (resumed from the work folder) grows by one entry per timing
    and is handed to `save` after each."""
    correction = 1.0 if not checks else checks[-1]["correction"] if checks[-1]["met"] else checks[-1]["ratio"]
    while True:
        layers, model, history = method(lambda ls: check(ls, correction=correction))
        predicted = costs.latency(layers)
        measured = costs.measure(layers)
        rows = [r for r in check(layers, measured=measured) if r["metric"] == costs.metric]
        met = all(r["met"] for r in rows)
        network = layers_hash(layers)
        checks.append({"check": len(checks) + 1, "after_round": len(history), "layers_hash": network,
                       "predicted_ms": predicted, "correction": correction, "target_ms": _lut_target(rows, correction),
                       "measured_ms": measured, "ratio": measured / predicted,
                       "bound_ms": min(r["bound"] for r in rows), "met": met})
        save(checks)
        stuck = len(checks) > 1 and checks[-2]["layers_hash"] == network
        if met or stuck:
            return layers, model, history, met
        correction = measured / predicted


def _lut_target(rows: Sequence[dict[str, Any]], correction: float) -> float:
    """The LUT latency the rounds were pruning to: the bound over the correction."""
    return min(r["bound"] for r in rows) / correction
