"""Re-measuring the final front on the device before anything is exported.

A search ranks archs by predictions: a LUT's calibrated block sum, a learned
predictor, the upper end of an interval. The arch a researcher deploys has to meet its
budget on the device, and the search's best is by construction the arch nearest the
bound, where a few percent of prediction error decide. So `verify_front` builds every
arch of the final front whole, measures it on this machine and re-checks every budget
with the measured latency in place of the predicted one (HiFi-LLP's idea of sending the
predictions that matter back to the hardware, applied to the few that are exported).

A latency predicted from a LUT is measured with the LUT's own protocol and yardstick
(every chunk timed beside the LUT's reference network and rescaled to its baseline), so
the figure is on the scale the LUT predicts, as `hwnas lut validate` reads it; any other
source is measured with the default protocol. Only the machine hwnas runs on (the device
profile marked `detect: true`) can be measured: a remote device's front needs a kit.
Metrics derived from latency (an analytic energy estimate) keep their predicted values.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.costs import CostModel
from nas.errors import ConfigError
from nas.search.problem import BoundCost, Problem

if TYPE_CHECKING:
    from nas.search.runner import SearchResult


def verified_metric(problem: Problem, device: str) -> str:
    """The latency metric of `device` that the problem predicts, checked to be measurable here."""
    from nas.export.latency import local_device

    name = f"latency@{device}"
    if name not in problem.metrics:
        named = sorted(n for n in problem.metrics if n.startswith("latency@") and " at " not in n)
        raise ConfigError(f"verify: {device!r} has no latency in this search (its latency metrics: "
                          f"{', '.join(named) or 'none'})")
    here = local_device().name
    if device != here:
        raise ConfigError(f"verify: {device!r} is not this machine ({here}); only this machine's front can be "
                          "re-measured here")
    if problem.metrics[name].queried:
        raise ConfigError(f"verify: {name} is a queried metric, already measured")
    return name


def _base_model(model: CostModel) -> CostModel:
    return model.model if isinstance(model, BoundCost) else model


def measure_front(problem: Problem, metric: str, codes: np.ndarray, progress: bool = True) -> list[Any]:
    """Timings (nas.hardware.measure.Summary) of the archs `codes`, whole, on this machine,
    on the scale `metric`'s source predicts."""
    from nas.export.latency import local_device
    from nas.hardware.backends import make_backend
    from nas.hardware.lut import LUTCost
    from nas.hardware.measure import Protocol
    from nas.hardware.profiling import lut_yardstick, measure_archs

    model = _base_model(problem.metrics[metric].model)
    device = local_device()
    backend = make_backend(device)
    archs = [problem.space.decode(c) for c in codes]
    if isinstance(model, LUTCost):
        protocol = Protocol(**model.lut.meta.get("protocol", {}))
        yardstick = lut_yardstick(model.lut, problem.space, backend, model.resolution)
        return measure_archs(backend, problem.space, archs, model.resolution, protocol,
                             desc="verify front" if progress else None, yardstick=yardstick)
    return measure_archs(backend, problem.space, archs, None, Protocol(), desc="verify front" if progress else None)


def _with_measured(problem: Problem, values: dict[str, np.ndarray], metric: str,
                   measured: np.ndarray) -> dict[str, np.ndarray]:
    """The values with `metric` (and its confidence bounds: a measurement has no interval) measured."""
    out = dict(values)
    for name in problem.metrics:
        if name == metric or name.startswith(f"{metric} at "):
            out[name] = measured
    return out


def verify_front(result: SearchResult, devices: Sequence[str], progress: bool = True) -> dict[str, Any]:
    """Measure the front's latency on each device (this machine) and re-check every budget.

    Returns summary.json's `verified`: one row per front arch (predicted and measured
    values, error, whether it meets every budget predicted and measured) and `best`, the
    first front arch in the search's own order that meets every budget when measured
    (None when none does)."""
    from nas.search.results import arch_text

    problem = result.problem
    metrics = [verified_metric(problem, d) for d in dict.fromkeys(devices)]
    front = result.front()
    codes = result.codes[front]
    values = {n: v[front] for n, v in result.values.items()}
    measured = dict(values)
    timings = {}
    for metric in metrics:
        timings[metric] = measure_front(problem, metric, codes, progress) if len(front) else []
        measured = _with_measured(problem, measured, metric, np.array([t.median for t in timings[metric]]))
    meets_predicted, meets_measured = problem.feasible(values), problem.feasible(measured)
    rows = []
    for i, c in enumerate(codes):
        arch = problem.space.decode(c)
        rows.append({"arch_id": arch.arch_id, "arch": arch_text(problem.space, c),
                     "latency": {m: {"predicted_ms": float(values[m][i]), "measured_ms": timings[m][i].median,
                                     "p10_ms": timings[m][i].p10, "p90_ms": timings[m][i].p90,
                                     "error": float(values[m][i] / timings[m][i].median - 1)} for m in metrics},
                     "meets_predicted": bool(meets_predicted[i]), "meets_measured": bool(meets_measured[i])})
    errors = np.array([abs(r["latency"][m]["error"]) for r in rows for m in metrics])
    best = next((r for r in rows if r["meets_measured"]), None)
    return {"metrics": metrics, "front": rows, "best": best,
            "within_10": float(np.mean(errors <= 0.10)) if len(errors) else None,
            "meets_measured": int(meets_measured.sum()), "note": "metrics derived from latency (an energy "
            "estimate) keep their predicted values"}


def lines(verified: dict[str, Any]) -> list[str]:
    """What `hwnas search` prints about a verified front."""
    rows = verified["front"]
    if not rows:
        return ["verify: the front is empty; nothing measured"]
    out = [f"verify: measured {len(rows)} front arch(s) on {', '.join(verified['metrics'])}: "
           f"{verified['within_10']:.0%} of predictions within 10 %, {verified['meets_measured']} of {len(rows)} "
           "meet every budget when measured"]
    best = verified["best"]
    if best is None:
        out.append("verify: no front arch meets every budget when measured; tighten the latency budget or "
                   "improve the latency source (hwnas lut validate)")
    else:
        figures = ", ".join(f"{m} {v['measured_ms']:.4g} ms measured ({v['predicted_ms']:.4g} predicted)"
                            for m, v in best["latency"].items())
        out.append(f"verify: best measured: {best['arch_id']} {figures}")
    return out
