"""Re-measuring the final front on the device before anything is exported.

A search ranks archs by predictions: a LUT's calibrated block sum, a learned
predictor, the upper end of an interval. The arch a researcher deploys has to meet its
budget on the device, and the search's best is by construction the arch nearest the
bound, where a few percent of prediction error decide. So `verify_front` builds every
arch of the final front whole, measures it on the device and re-checks every budget
with the measured latency in place of the predicted one (HiFi-LLP's idea of sending the
predictions that matter back to the hardware, applied to the few that are exported).

A latency predicted from the device's own LUT is measured with the LUT's protocol and
on its scale (beside the LUT's reference network, rescaled to its baseline), as `hwnas
lut validate` reads it; any other source is compared with the plain measurement. This
machine (the device profile marked `detect: true`, or a device whose own LUT was
measured on this host) is measured at once. Another device
gets one kit round, like a LUT's: the front's whole networks are written as a kit
(nas.hardware.kit) into OUT/verify/, the search stops saying what to run on the device,
and rerunning it (no new queries: the study is finished) reads the results back.
Metrics derived from latency (an analytic energy estimate) keep their predicted values.
"""
from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import ConfigError
from nas.hardware.measure import Summary
from nas.search.problem import BoundCost, Problem

if TYPE_CHECKING:
    from nas.search.runner import SearchResult


def verified_metric(problem: Problem, device: str) -> str:
    """The latency metric of `device` that the problem predicts (checked before any query)."""
    from nas.hardware.devices import load_device

    name = f"latency@{device}"
    if name not in problem.metrics:
        named = sorted(n for n in problem.metrics if n.startswith("latency@") and " at " not in n)
        raise ConfigError(f"verify: {device!r} has no latency in this search (its latency metrics: "
                          f"{', '.join(named) or 'none'})")
    if problem.metrics[name].queried:
        raise ConfigError(f"verify: {name} is a queried metric, already measured")
    load_device(device)  # a profile: its provider, threads and batch are what the kit round is held to
    return name


def _own_lut(problem: Problem, metric: str, device: str) -> Any:
    """The metric's LUT when it is the device's own (a stand-in's scale is another machine's)."""
    from nas.hardware.lut import LUTCost

    model = problem.metrics[metric].model
    model = model.model if isinstance(model, BoundCost) else model
    return model if isinstance(model, LUTCost) and model.lut.meta.get("device") == device else None


def _here(device: str, lut_cost: Any) -> bool:
    """Whether the device is this machine: its detected profile, or a device whose own LUT was
    measured here (hwnas running on the Jetson it searches for)."""
    from nas.export.latency import local_device
    from nas.hardware.devices import host_facts

    host = (lut_cost.lut.meta.get("host") or {}) if lut_cost else {}
    return device == local_device().name or (host.get("node") == platform.node() and
                                              host.get("cpu") == host_facts()["cpu"])


def measure_front(problem: Problem, metric: str, codes: np.ndarray, out_dir: Path | None,
                  progress: bool = True) -> tuple[list[Summary], str]:
    """Timings of the archs `codes` whole on the metric's device, on the scale its source
    predicts, and which statistic of them is the measurement (the LUT's, else the protocol's)."""
    from nas.hardware.backends import make_backend
    from nas.hardware.devices import load_device
    from nas.hardware.measure import Protocol
    from nas.hardware.profiling import lut_yardstick, measure_archs

    device = metric.partition("@")[2]
    lut_cost = _own_lut(problem, metric, device)
    resolution = lut_cost.resolution if lut_cost else None
    archs = [problem.space.decode(c) for c in codes]
    if not _here(device, lut_cost):
        return _kit_round(problem, device, archs, resolution, lut_cost, out_dir)
    backend = make_backend(load_device(device))
    desc = "verify front" if progress else None
    if lut_cost is None:
        return measure_archs(backend, problem.space, archs, None, Protocol(), desc), Protocol.statistic
    protocol = Protocol.recorded(lut_cost.lut.meta.get("protocol"))
    return measure_archs(backend, problem.space, archs, resolution, protocol, desc,
                         lut_yardstick(lut_cost.lut, problem.space, backend, resolution)), protocol.statistic


def _kit_round(problem: Problem, device: str, archs: list, resolution: int | None, lut_cost: Any,
               out_dir: Path | None) -> tuple[list[Summary], str]:
    """The front measured on a remote device through one kit: its results when they are
    back (checked against this very front and the device profile), else the kit written
    and KitPending raised with what to do."""
    from nas.hardware.devices import load_device
    from nas.hardware.kit import KitPending, read_models_results, write_models_kit

    if out_dir is None:
        raise ConfigError(f"verify: {device!r} is not this machine; its kit round needs the search's output folder")
    space, profile = problem.space, load_device(device)
    ids = [a.arch_id for a in archs]
    kit_id = hashlib.sha256(json.dumps([space.fingerprint(), resolution, sorted(ids)]).encode()).hexdigest()[:16]
    zip_path, results = Path(out_dir) / "verify" / f"{device}_front.zip", Path(out_dir) / "verify" / f"{device}_front.csv"
    if not results.is_file():
        write_models_kit(space, zip_path, [(a.arch_id, space.layers(a, resolution)) for a in archs], kit_id,
                         [resolution], profile.batch, f"hwnas kit: the {len(archs)} front archs of a {space.name} search")
        raise KitPending(f"verify: the front's latency on {device} needs one kit round: copy {zip_path} to the device, "
                         f"run 'unzip {zip_path.name} -d kit && python3 kit/runner.py --threads {profile.threads} --out "
                         f"results.csv' there, bring results.csv back to {results}, then rerun (no new queries)")
    timings, theirs, statistic = read_models_results(results, kit_id, ids, profile)
    ours = (lut_cost.lut.meta.get("reference") or {}).get("ms") if lut_cost else None
    factor = ours / theirs if ours and theirs else 1.0  # the kit's reference read on the LUT's baseline
    return [replace(timings[i], median=timings[i].median * factor, p10=timings[i].p10 * factor,
                    p90=timings[i].p90 * factor, mean=timings[i].mean * factor, std=timings[i].std * factor)
            for i in ids], statistic


def _with_measured(problem: Problem, values: dict[str, np.ndarray], metric: str,
                   measured: np.ndarray) -> dict[str, np.ndarray]:
    """The values with `metric` (and its confidence bounds: a measurement has no interval) measured."""
    out = dict(values)
    for name in problem.metrics:
        if name == metric or name.startswith(f"{metric} at "):
            out[name] = measured
    return out


def verify_front(result: SearchResult, devices: Sequence[str], out_dir: Path | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Measure the front's latency on each device and re-check every budget.

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
    timings, times, statistics = {}, {}, {}
    for metric in metrics:
        if len(front):
            timings[metric], statistics[metric] = measure_front(problem, metric, codes, out_dir, progress)
        else:
            timings[metric], statistics[metric] = [], ""
        times[metric] = np.array([t.at(statistics[metric]) for t in timings[metric]])
        measured = _with_measured(problem, measured, metric, times[metric])
    meets_predicted, meets_measured = problem.feasible(values), problem.feasible(measured)
    rows = []
    for i, c in enumerate(codes):
        arch = problem.space.decode(c)
        rows.append({"arch_id": arch.arch_id, "arch": arch_text(problem.space, c),
                     "latency": {m: {"predicted_ms": float(values[m][i]), "measured_ms": float(times[m][i]),
                                     "statistic": statistics[m], "median_ms": timings[m][i].median,
                                     "p10_ms": timings[m][i].p10, "p90_ms": timings[m][i].p90,
                                     "error": float(values[m][i] / times[m][i] - 1)} for m in metrics},
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
