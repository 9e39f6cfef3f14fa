"""Predicted latency and energy of one arch on every known device, with their sources.

Sources, in the order the card lists them:
- latency LUTs latency_luts/<device>/<space>.csv that pass the LUT's own compatibility
  check (space, device, runtime, CPU, library versions) and cover the arch's resolution;
- learned predictor files predictors/<device>/<space>_<metric>.npz (their metadata:
  model, training table hash, creation date, library versions);
- the analytic energy model of each device profile with a power model, over that
  device's LUT latency (or, on this machine, the latency measured at export), always
  labelled as an estimate.
A source that does not apply is listed under `skipped` with the reason, so a missing
figure on the card is explained rather than silently absent.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.costs import CostModel
from nas.errors import NasError
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


def default_predictors_dir() -> Path:
    """predictors/ of the checkout (found by path: importing nas.predictors pulls in
    scikit-learn and scipy, seconds that an arch without predictor files need not pay)."""
    return Path(__file__).resolve().parents[2] / "predictors"


def _lut_cost(space: SearchSpace, arch: Arch, device: Any, path: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """The device's LUT cost model for this arch (from `path`, else the device's folder), or (None, why not)."""
    from nas.hardware.lut import LUT, LUTCost

    path = Path(path) if path else device.folder / f"{space.name}.csv"
    if not path.is_file():
        return None, {"device": device.name, "source": str(path), "reason": "no LUT"}
    try:
        lut = LUT.load(path)
        resolutions = lut.meta.get("resolutions") or [None]
        own = space.resolution(arch)
        if None not in resolutions and own not in resolutions:
            raise NasError(f"the LUT covers input sizes {resolutions}, the arch runs at {own}")
        cost = LUTCost(lut, space, resolution=None if None in resolutions else own, device=device)
    except NasError as exc:
        return None, {"device": device.name, "source": str(path), "reason": str(exc)}
    meta = {k: lut.meta[k] for k in LUT_META_KEYS if k in lut.meta}
    if lut.meta.get("calibration"):
        cal = lut.meta["calibration"]
        meta["calibration"] = {"n": cal.get("n"), "residual_rmspe": cal.get("residual_rmspe")}
    return cost, {"kind": "lut", "file": str(path), "calibrated": cost.calibration is not None, "metadata": meta}


def _predictor_files(space: SearchSpace, root: Path) -> list[Path]:
    """predictors/*/<space>_<metric>.npz, without another space whose name extends this one's."""
    found = []
    for path in sorted(Path(root).glob(f"*/{space.name}_*.npz")):
        rest = path.stem[len(space.name) + 1:]
        if "_" not in rest:
            found.append(path)
    return found


def predict_all(space: SearchSpace, arch: Arch, measured_ms: float | None = None,
                predictors_dir: Path | None = None, luts: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """{"predictions": [...], "skipped": [...]} for this arch over every device profile,
    LUT and predictor file the checkout holds; `luts` names LUT files by device that
    take the place of latency_luts/<device>/ (an experiment's own profiled LUTs)."""
    from nas.hardware.devices import device_names, load_device
    from nas.hardware.energy import AnalyticEnergy

    predictions: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for name in device_names():
        try:
            device = load_device(name)
        except NasError as exc:
            skipped.append({"device": name, "reason": str(exc)})
            continue
        latency, source = _lut_cost(space, arch, device, (luts or {}).get(name))
        if latency is not None:
            predictions.append({"device": name, "metric": "latency", "unit": "ms", "estimate": False,
                                "value": float(latency.predict([arch])[0]), "source": source})
        else:
            skipped.append({**source, "metric": "latency"})
            if device.detect and measured_ms is not None:
                latency = MeasuredLatency(space, arch, measured_ms)
        if not device.power:
            skipped.append({"device": name, "metric": "energy", "reason": "device profile has no power model"})
        elif latency is None:
            skipped.append({"device": name, "metric": "energy", "reason": "no latency source for the estimate"})
        else:
            energy = AnalyticEnergy(space, device, latency)
            predictions.append({"device": name, "metric": "energy", "unit": "mJ", "estimate": True,
                                "value": float(energy.predict([arch])[0]),
                                "source": {"kind": "analytic estimate", **energy.describe()}})
    predictions += _from_predictors(space, arch, predictors_dir or default_predictors_dir(), skipped)
    return {"predictions": predictions, "skipped": skipped}


def _from_predictors(space: SearchSpace, arch: Arch, root: Path, skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for path in _predictor_files(space, root):
        from nas.predictors.predictor import Predictor

        try:
            predictor = Predictor.load(path, space)
        except NasError as exc:
            skipped.append({"source": str(path), "reason": str(exc)})
            continue
        meta = predictor.meta
        training = meta.get("training") or {}
        out.append({"device": meta.get("device"), "metric": predictor.metric,
                    "unit": predictor.unit, "estimate": False, "value": float(predictor.predict([arch])[0]),
                    "source": {"kind": "predictor", "file": str(path), "model": meta.get("model"),
                               "target": meta.get("target"), "feature_set": meta.get("feature_set"),
                               "created": meta.get("created"), "table_hash": meta.get("table_hash"),
                               "n_train": training.get("n_train"), "versions": meta.get("versions")}})
    return out
