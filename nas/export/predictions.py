"""Predicted latency and energy of one arch on every known device, with their sources.

Sources, in the order the card lists them:
- the cost sources the arch was searched under (an experiment's LUTs, stand-ins,
  estimates, tables and predictors; nas.sources), one entry per device metric;
- latency LUTs latency_luts/<device>/<space>.csv of the other devices that pass the
  LUT's own compatibility check (space, device, runtime, CPU, library versions) and
  cover the arch's resolution;
- learned predictor files predictors/<device>/<space>_<metric>.npz (their metadata:
  model, training table hash, creation date, library versions);
- the analytic energy model of each device profile with a power model, over that
  device's LUT latency (or, on this machine, the latency measured at export), always
  labelled as an estimate.
A source that does not apply is listed under `skipped` with the reason, so a missing
figure on the card is explained rather than silently absent.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.costs import CostModel
from nas.errors import NasError
from nas.sources import LikeSource, Resolver, device_metric, lut_cost, shipped_predictors
from nas.space.arch import Arch
from nas.space.base import SearchSpace

LUT_META_KEYS = ("schema", "created", "resolutions", "runtime", "host", "protocol", "complete", "space_fingerprint")


class MeasuredLatency(CostModel):
    """A latency measured for one arch, as a cost source for the energy estimate."""

    metric, unit = "latency", "ms"

    def __init__(self, space: SearchSpace, arch: Arch, value_ms: float) -> None:
        self.space, self.arch, self.value_ms = space, arch, value_ms

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        return np.full(len(archs), self.value_ms, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": "measured at export (onnxruntime, this machine)"}


def source_info(model: CostModel, file: str | None) -> dict[str, Any]:
    """What the card says about a cost model read from `file`: its kind, file and metadata."""
    from nas.hardware.energy import AnalyticEnergy
    from nas.hardware.lut import LUTCost

    if isinstance(model, AnalyticEnergy):
        return {"kind": "analytic estimate", **model.describe()}
    if isinstance(model, LUTCost):
        meta = {k: model.lut.meta[k] for k in LUT_META_KEYS if k in model.lut.meta}
        if model.lut.meta.get("calibration"):
            cal = model.lut.meta["calibration"]
            meta["calibration"] = {"n": cal.get("n"), "residual_rmspe": cal.get("residual_rmspe")}
        return {"kind": "lut", "file": file, "calibrated": model.calibration is not None, "metadata": meta}
    meta = getattr(model, "meta", None)
    if meta is not None:  # a learned predictor
        training = meta.get("training") or {}
        return {"kind": "predictor", "file": file, "model": meta.get("model"), "target": meta.get("target"),
                "feature_set": meta.get("feature_set"), "created": meta.get("created"),
                "table_hash": meta.get("table_hash"), "n_train": training.get("n_train"),
                "versions": meta.get("versions")}
    described = model.describe()
    return {"kind": "table" if "table" in described else described["source"], "file": file, **described}


def _entry(device: str, model: CostModel, arch: Arch, file: str | None) -> dict[str, Any]:
    from nas.hardware.energy import AnalyticEnergy

    return {"device": device, "metric": model.metric.split("@")[0], "unit": model.unit,
            "estimate": isinstance(model, AnalyticEnergy), "value": float(model.predict([arch])[0]),
            "source": source_info(model, file)}


def predict_all(space: SearchSpace, arch: Arch, measured_ms: float | None = None,
                resolver: Resolver | None = None) -> dict[str, Any]:
    """{"predictions": [...], "skipped": [...]} for this arch: first every device metric
    the resolver's sources declare (the search's own), then every device profile, LUT and
    predictor file the checkout holds for what they leave out."""
    from nas.hardware.devices import device_names, load_device
    from nas.hardware.energy import AnalyticEnergy

    resolver = resolver or Resolver(space)
    predictions: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    declared = {}
    for name, spec in resolver.declared.items():
        found = device_metric(name)
        if found is None:
            continue
        declared[found] = name
        try:
            entry = _entry(found[1], resolver.model(name), arch, resolver.file(name))
        except NasError as exc:
            skipped.append({"device": found[1], "metric": found[0], "reason": str(exc)})
            continue
        if isinstance(spec, LikeSource):
            entry["source"] = {**entry["source"], "stand_in_for": found[1], "from_device": spec.like}
        entry["source"]["searched"] = True  # the source the search scored this metric with
        predictions.append(entry)
    for name in device_names():
        if ("latency", name) in declared and ("energy", name) in declared:
            continue
        try:
            device = load_device(name)
        except NasError as exc:
            skipped.append({"device": name, "reason": str(exc)})
            continue
        latency = None
        if ("latency", name) in declared:
            try:
                latency = resolver.model(declared["latency", name])
            except NasError:
                pass  # already listed as skipped
        else:
            latency, why = _device_lut(space, arch, device)
            if latency is not None:
                predictions.append(_entry(name, latency, arch, why["source"]))
            else:
                skipped.append({**why, "metric": "latency"})
                if device.detect and measured_ms is not None:
                    latency = MeasuredLatency(space, arch, measured_ms)
        if ("energy", name) in declared:
            continue
        if not device.power:
            skipped.append({"device": name, "metric": "energy", "reason": "device profile has no power model"})
        elif latency is None:
            skipped.append({"device": name, "metric": "energy", "reason": "no latency source for the estimate"})
        else:
            predictions.append(_entry(name, AnalyticEnergy(space, device, latency), arch, None))
    predictions += _from_predictors(space, arch, skipped)
    return {"predictions": predictions, "skipped": skipped}


def _device_lut(space: SearchSpace, arch: Arch, device: Any) -> tuple[CostModel | None, dict[str, Any]]:
    """The device's own LUT for this arch (latency_luts/<device>/), or (None, why not)."""
    from nas.hardware.profiling import default_lut_path

    path = default_lut_path(device, space)
    why = {"device": device.name, "source": str(path)}
    if not path.is_file():
        return None, {**why, "reason": "no LUT"}
    try:
        from nas.hardware.lut import LUT

        resolutions = LUT.load(path).meta.get("resolutions") or [None]
        own = space.resolution(arch)
        if None not in resolutions and own not in resolutions:
            raise NasError(f"the LUT covers input sizes {resolutions}, the arch runs at {own}")
        return lut_cost(path, space, device, resolution=None if None in resolutions else own), why
    except NasError as exc:
        return None, {**why, "reason": str(exc)}


def _from_predictors(space: SearchSpace, arch: Arch, skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from nas.predictors.predictor import Predictor

    out = []
    for path in shipped_predictors(space).values():
        try:
            predictor = Predictor.load(path, space)
        except NasError as exc:
            skipped.append({"source": str(path), "reason": str(exc)})
            continue
        out.append({**_entry(predictor.meta.get("device"), predictor, arch, str(path)), "metric": predictor.metric})
    return out

