"""Metric names -> cost sources, so a search config can say `latency@pi4-ort` or `accuracy`.

Names resolve without any declaration where the project knows the source:

    params, macs, weight_bytes, peak_memory     exact counters of the space
    latency@DEVICE                              the device's LUT (latency_luts/DEVICE/SPACE.csv), else
                                                a shipped predictor (predictors/DEVICE/SPACE_latency.npz)
    energy@DEVICE                               the analytic energy model over that LUT, else a shipped
                                                predictor (predictors/DEVICE/SPACE_energy.npz)

Anything else is declared under `sources:` in the config, one kind per metric:

    accuracy:          {supernet: runs/supernet}                     # inherited-weight accuracy
    accuracy:          {table: nb201/cifar10_val_acc.csv, column: cifar10_val_acc, unit: "%"}
    latency@raspi4:    {table: hwnasbench_cifar10.csv, column: raspi4_latency, unit: ms}
    latency@local-cpu: {lut: path/to/other.csv}
    size:              {counter: params}                              # a counter under another name
    energy@tx2:        {predictor: edgegpu/nb201_energy}              # shipped: predictors/edgegpu/nb201_energy.npz
    accuracy:          {predictor: my_acc.npz}                        # any `hwnas predictor fit` file

A metric is *queried* when it is expensive (a supernet evaluation, or a table standing in
for training): the search budget counts those evaluations, and candidates are filtered
on the cheap metrics before any is spent. Counters, LUTs, energy and learned predictors
are cheap, supernets queried, tables queried when they hold an accuracy; `queried: true|false` on any source
says otherwise (a slow remote source, or a cheap stand-in for an expensive one).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.costs import CostModel, CounterCost
from nas.errors import NasError, closest
from nas.search.objectives import default_direction
from nas.space.base import SearchSpace

COUNTERS = {"params": "params", "macs": "macs", "weight_bytes": "weight_bytes",
            "peak_memory": "peak_activation_bytes", "peak_activation_bytes": "peak_activation_bytes"}
DEVICE_METRICS = ("latency", "energy")
SOURCE_KINDS = {
    "table": ("table", "column", "unit", "queried"),
    "supernet": ("supernet", "split", "calib_images", "queried"),
    "lut": ("lut", "allow_mismatch", "queried"),
    "counter": ("counter", "queried"),
    "predictor": ("predictor", "queried"),
}


@dataclass(frozen=True)
class Metric:
    """A named metric of the search: its cost source and whether evaluating it is a query."""

    name: str
    model: CostModel
    queried: bool

    @property
    def unit(self) -> str:
        return self.model.unit

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "queried": self.queried, **self.model.describe()}


def resolve_metrics(space: SearchSpace, names: Sequence[str], declared: Mapping[str, Any],
                    base: Path | None = None) -> dict[str, Metric]:
    """A Metric for each name: declared sources first, then counters and device metrics.

    `declared` maps a metric name to a source spec (a mapping, see the module doc) or to
    a ready CostModel / Metric (the Python API's way to plug in predictors). Relative
    paths in specs are read from `base` (the config file's folder).
    """
    out: dict[str, Metric] = {}
    for name in dict.fromkeys(names):
        if name in declared:
            out[name] = _declared(space, name, declared[name], base)
        elif name in COUNTERS:
            out[name] = Metric(name, CounterCost(space, COUNTERS[name]), queried=False)
        elif "@" in name and name.split("@", 1)[0] in DEVICE_METRICS:
            out[name] = Metric(name, _device_metric(space, name, {}, base), queried=False)
        else:
            known = [*COUNTERS, "latency@DEVICE", "energy@DEVICE", *declared]
            raise NasError(f"unknown metric {name!r}{closest(name, [*COUNTERS, *declared])}; known: "
                           f"{', '.join(known)} (declare others under 'sources:')")
    return out


def _declared(space: SearchSpace, name: str, spec: Any, base: Path | None) -> Metric:
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, CostModel):
        return Metric(name, spec, queried=default_direction(name) == "maximize")
    where = f"sources.{name}"
    if not isinstance(spec, Mapping):
        raise NasError(f"{where}: a source must be a mapping like {{table: FILE, column: NAME}}, got {spec!r}")
    kinds = [k for k in SOURCE_KINDS if k in spec]
    if len(kinds) != 1:
        raise NasError(f"{where}: name exactly one source kind of {', '.join(SOURCE_KINDS)}, got {sorted(spec)}")
    kind = kinds[0]
    unknown = [k for k in spec if k not in SOURCE_KINDS[kind]]
    if unknown:
        raise NasError(f"{where}: unknown key {unknown[0]!r}{closest(unknown[0], SOURCE_KINDS[kind])} for a {kind} "
                       f"source; known: {', '.join(SOURCE_KINDS[kind])}")
    queried = spec.get("queried")
    if queried is not None and not isinstance(queried, bool):
        raise NasError(f"{where}.queried must be true or false")
    if kind == "table":
        from nas.predictors.energy import ColumnCost

        if "column" not in spec:
            raise NasError(f"{where}: a table source needs 'column'")
        model: CostModel = ColumnCost.read(space, _path(spec["table"], base, where), str(spec["column"]), name,
                                           str(spec.get("unit", "")))
        default = name.split("@")[0].lower().startswith("acc")
    elif kind == "supernet":
        from nas.supernet import SupernetAccuracy

        model = SupernetAccuracy(_path(spec["supernet"], base, where), str(spec.get("split", "val")),
                                 spec.get("calib_images"))
        if model.space.name != space.name:
            raise NasError(f"{where}: the supernet was trained on space {model.space.name}, the search is over {space.name}")
        default = True
    elif kind == "predictor":
        model, default = _predictor(space, spec["predictor"], base, where), False
    elif kind == "counter":
        if spec["counter"] not in COUNTERS:
            raise NasError(f"{where}: unknown counter {spec['counter']!r}{closest(str(spec['counter']), COUNTERS)}; "
                           f"known: {', '.join(COUNTERS)}")
        model, default = CounterCost(space, COUNTERS[spec["counter"]]), False
    else:
        if "@" not in name or name.split("@", 1)[0] not in DEVICE_METRICS:
            raise NasError(f"{where}: a lut source serves latency@DEVICE or energy@DEVICE, not {name!r}")
        model, default = _device_metric(space, name, spec, base), False
    return Metric(name, model, default if queried is None else queried)


def _device_metric(space: SearchSpace, name: str, spec: Mapping[str, Any], base: Path | None) -> CostModel:
    """latency@DEVICE from the device's LUT; energy@DEVICE from its power model over that LUT.
    A device without a profile in latency_luts/ but with a shipped predictor for this space
    and metric (the public tables' devices: edgegpu, raspi4, ...) is served by the predictor."""
    from nas.hardware.devices import device_names, load_device
    from nas.hardware.energy import AnalyticEnergy
    from nas.hardware.lut import LUT, LUTCost
    from nas.hardware.profiling import default_lut_path

    metric, device_name = name.split("@", 1)
    if device_name not in device_names() and "lut" not in spec:
        shipped = predictors_dir() / device_name / f"{space.name}_{metric}.npz"
        if shipped.is_file():
            return _predictor(space, shipped, None, name)
        known = sorted({*device_names(), *shipped_predictor_devices(space, metric)})
        raise NasError(f"unknown device {device_name!r} in {name!r}{closest(device_name, known)}; known devices: "
                       f"{', '.join(known) or 'none'} (profiles in latency_luts/, and shipped {metric} predictors "
                       f"of {space.name})")
    device = load_device(device_name)
    path = _path(spec["lut"], base, f"sources.{name}") if "lut" in spec else default_lut_path(device, space)
    if not path.is_file():
        raise NasError(f"{name}: no LUT of {space.name} for device {device_name} at {path}; build it with "
                       f"'hwnas lut build --space {space.name} --device {device_name}' or name one under "
                       f"sources: {{{name}: {{lut: FILE}}}}")
    latency = LUTCost(LUT.load(path), space, device=device, allow_mismatch=bool(spec.get("allow_mismatch", False)))
    return latency if metric == "latency" else AnalyticEnergy(space, device, latency)


def predictors_dir() -> Path:
    """predictors/ of the checkout, where shipped predictor files live."""
    return Path(__file__).resolve().parents[2] / "predictors"


def shipped_predictor_devices(space: SearchSpace, metric: str) -> list[str]:
    """Devices with a shipped predictor of `metric` for the space."""
    return sorted(p.parent.name for p in predictors_dir().glob(f"*/{space.name}_{metric}.npz"))


def _predictor(space: SearchSpace, text: Any, base: Path | None, where: str) -> CostModel:
    """A predictor file: a path, or a shipped one named like `edgegpu/nb201_latency`."""
    from nas.predictors.predictor import Predictor

    if isinstance(text, str) and not Path(text).expanduser().exists() and \
            not (base is not None and (base / text).exists()):
        shipped = predictors_dir() / (text if text.endswith(".npz") else f"{text}.npz")
        if shipped.is_file():
            return Predictor.load(shipped, space)
        known = sorted(str(p.relative_to(predictors_dir()).with_suffix(""))
                       for p in predictors_dir().glob(f"*/{space.name}_*.npz"))
        raise NasError(f"{where}: predictor {text} does not exist, as a path or as a shipped predictor; shipped for "
                       f"{space.name}: {', '.join(known) or 'none'}")
    return Predictor.load(_path(text, base, where), space)


def _path(text: Any, base: Path | None, where: str) -> Path:
    if not isinstance(text, (str, Path)):
        raise NasError(f"{where}: expected a file path, got {text!r}")
    path = Path(text).expanduser()
    if not path.is_absolute() and base is not None and not path.exists():
        path = base / path
    if not path.exists():
        raise NasError(f"{where}: {text} does not exist")
    return path
