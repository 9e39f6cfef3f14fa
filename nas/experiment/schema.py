"""The experiment YAML, validated completely before any step starts.

    name: quickstart                       # default: the file's name; runs are runs/<name>-<date>-<hex>/
    seed: 0                                # seeds profiling, training and search
    threads: 2                             # torch threads (default: the free cores; see nas.threads)
    space: tiny_mbconv                     # shipped space name or a space YAML path
    dataset: {source: digits}              # digits or a path, plus nas.data settings (noise, val_fraction, ...)
    devices:
      local-cpu: {latency: profile}        # profile a LUT on this machine
      pi4-ort:
        latency: {like: local-cpu}         # stand-in: another device's LUT
        energy: analytic                   # the device's power model over that latency
    objectives: [max accuracy]
    budgets: [latency@local-cpu <= 0.5 ms, energy@pi4-ort <= 3 mJ, peak_memory <= 256 KiB]
    accuracy: {supernet: {split: val}}     # or {table: FILE, column: NAME, unit: "%"} / {predictor: FILE}
    train: {epochs: 3, batch_size: 64}     # nas.supernet.config.TrainSettings (space, data, seed come from above)
    search: {controller: {name: evolution, population: 16}, budget: 40}   # a nas.search controller's settings
    export: {arch: best, onnx: true}       # or false

Device and accuracy sources are the cost-source union of nas.sources (one model per
kind), the same models a search config's `sources:` uses. Every mistake is one line
naming the key: unknown keys with the closest valid one,
wrong types, files that do not exist, unknown devices and spaces, budgets without a
unit or in a unit of the wrong kind. The training, dataset and controller sections are
the models of the packages that run them (nas.supernet.config, nas.search.config), so
the two can never disagree about what is valid.
Relative paths are read from the working folder, else from the config file's folder.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nas.config import Section, expand_path, first_error, locate_path, validate
from nas.errors import NasError, closest, unknown_key
from nas.search.config import ControllerSpec, default_controller
from nas.sources import (
    AccuracySource,
    EnergySource,
    LatencySource,
    SupernetSettings,
    TrainedSupernetSource,
)
from nas.supernet.config import DataConfig, TrainSettings

STEPS = ("profile", "train", "search", "export", "compress")
COUNTER_METRICS = ("params", "macs", "weight_bytes", "peak_memory", "peak_activation_bytes")
# metric (before any @device) -> the unit dimension its budget must be written in (None: a count, unit optional)
METRIC_DIMENSIONS = {"latency": "time", "energy": "energy", "weight_bytes": "bytes", "peak_memory": "bytes",
                     "peak_activation_bytes": "bytes", "accuracy": "fraction", "params": None, "macs": None}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Device(Section):
    latency: LatencySource | None = None
    energy: EnergySource | None = None


class Search(Section):
    """The search step's settings; the controller and its settings are nas.search's own models."""

    controller: ControllerSpec = Field(default_factory=default_controller)
    # budget: queries of the expensive metric (supernet or table accuracy)
    budget: PositiveInt = 100
    storage: str | None = None          # default: runs/<id>/search/study.db (SQLite)
    study: str | None = None            # default: the run id
    workers: int = Field(1, ge=1)       # local worker processes sharing the study
    reference: dict[str, str | float] | None = None
    verify: list[str] = []              # devices (this machine) whose latency on the front is re-measured;
                                        # export then takes the best arch meeting every budget measured

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        """Kept as written ($VARIABLES unexpanded, so no password lands in run files); checked here."""
        if value is not None:
            expand_path(value)
        return value

    @model_validator(mode="after")
    def _workers(self) -> Search:
        from nas.search.controllers import controller_class, controller_names

        if self.workers > 1 and not controller_class(self.controller.name).shares_study:
            shared = [n for n in controller_names() if controller_class(n).shares_study]
            raise ValueError(f"workers > 1 shares one study between processes, which the {self.controller.name} "
                             f"controller does not do; use one of {', '.join(shared)}")
        return self


class Export(Section):
    """The exported model always comes with a verified ONNX graph and a model card."""

    arch: str = "best"                  # best (of the search), or an arch (JSON / NB201 string)
    measure_latency: bool = True        # time the ONNX model on this machine for the card


class Compress(Section):
    """The exported model pruned to tighter budgets (nas.prune; `hwnas prune`'s settings)."""

    budgets: list[str]                  # e.g. ["latency@local-cpu <= 0.2 ms"]
    method: str = "netadapt"            # or uniform (every width scaled by one factor)
    criterion: str = "l1"               # or order (a supernet's own channel sorting)
    select: str = "proxy"               # or finetune (score proposals after select_steps), or magnitude (no data)
    score: str = "kl"                   # what proxy / finetune rank proposals by: kl (from the export), ce, accuracy
    select_steps: int = 10
    round_steps: int = 20
    step: float = 0.05                  # cost removed per round, a fraction of the export's
    multiple: int = 4
    candidates: int = 4
    lr: float = 0.01
    batch_size: int = 32
    calib_images: int = 256
    max_rounds: int = 200
    epochs: int = 2                     # fine-tune with distillation from the export

    @model_validator(mode="after")
    def _settings(self) -> "Compress":
        from nas.export.budgets import parse_budgets
        from nas.prune.rounds import PruneSettings

        if not self.budgets:
            raise ValueError("budgets: give at least one, like ['latency@local-cpu <= 0.2 ms']")
        try:
            parse_budgets(self.budgets)
            PruneSettings(budgets=tuple(self.budgets), data="", **self.model_dump(exclude={"budgets"})).check()
        except NasError as exc:
            raise ValueError(str(exc)) from None
        return self


class Experiment(Section):
    name: str
    seed: int = 0
    threads: int | None = None          # torch threads (default: nas.threads' choice); not part of the results
    space: str
    dataset: dict[str, Any] = {"source": "digits"}
    devices: dict[str, Device] = {}
    objectives: list[str | dict[str, str]] = ["max accuracy"]
    budgets: list[str] = []
    accuracy: AccuracySource = TrainedSupernetSource(supernet=SupernetSettings())
    train: TrainSettings | None = None
    search: Search = Field(default_factory=Search)
    export: Export | None = Export()
    compress: Compress | None = None    # optional: prune the export to tighter budgets

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '-', '_' or '.' (it names run folders)")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        source = value.get("source", "digits")
        if not isinstance(source, str):
            raise ValueError(f"source must be 'digits' or a dataset path, got {source!r}")  # noqa: TRY004 - pydantic reports ValueErrors
        if source != "digits":
            from nas.data import LAYOUTS
            from nas.data.sources import check_source

            path = locate_path(source, info)
            if not path.exists():
                raise ValueError(f"source: {source} does not exist; a dataset is {LAYOUTS}")
            try:
                check_source(str(path))
            except NasError as exc:
                raise ValueError(f"source: {exc}") from None
            source = str(path)
        value = {**value, "source": source}
        try:
            DataConfig.model_validate(value)  # the supernet trainer's own data settings
        except ValidationError as exc:
            raise ValueError(first_error(exc)) from None
        return value

    @field_validator("export", mode="before")
    @classmethod
    def _export_off(cls, value: Any) -> Any:
        return None if value is False else value

    @property
    def uses_supernet(self) -> bool:
        return self.accuracy.kind == "supernet"

    @field_validator("threads")
    @classmethod
    def _threads(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    def digest(self) -> str:
        """Hash of the validated settings (comments and key order do not matter; `threads`
        and `train: {workers}` change how fast a run goes, not what it computes, so a run
        resumes with others)."""
        text = json.dumps(self.model_dump(mode="json", exclude={"threads": True, "train": {"workers"}}), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML; every problem is a one-line NasError."""
    from nas.space.registry import read_config

    path = Path(path)
    data = read_config(path, "experiment config")
    data.setdefault("name", path.stem)
    return experiment_from_dict(data, str(path), path.parent)


def experiment_from_dict(data: dict[str, Any], where: str = "experiment", base: Path | None = None) -> Experiment:
    """Validate a config mapping: the schema, then names, budgets and the delegated sections."""
    exp = validate(Experiment, data, where, {"base": base})
    _check_space(exp, where, base)
    _check_devices(exp, where)
    _check_metrics(exp, where)
    _check_delegated(exp, where)
    return exp


def _check_space(exp: Experiment, where: str, base: Path | None) -> None:
    from nas.space import load_space

    text = exp.space
    if text.endswith((".yaml", ".yml")) and base is not None and not Path(text).exists():
        text = str(base / text)
    try:
        load_space(text)
    except NasError as exc:
        raise NasError(f"{where}: space: {exc}") from None


def resolved_space(exp: Experiment, base: Path | None) -> str:
    """The space name, or its YAML path as found (the same rule as other paths)."""
    text = exp.space
    if text.endswith((".yaml", ".yml")) and base is not None and not Path(text).exists():
        return str((base / text).resolve())
    return text


LUT_KINDS = ("profile", "lut", "kit", "like")  # latency sources that are a per-block LUT


def _check_devices(exp: Experiment, where: str) -> None:
    from nas.hardware.devices import device_names

    profiles = device_names()
    for name, dev in exp.devices.items():
        at = f"{where}: devices.{name}"
        lat, energy = dev.latency, dev.energy
        if lat is None and energy is None:
            raise NasError(f"{at}: give a latency and/or an energy source")
        needs_profile = (lat is not None and lat.kind in LUT_KINDS) or (energy is not None and energy.kind == "analytic")
        if needs_profile and name not in profiles:
            raise NasError(f"{at}: no device profile {name!r}{closest(name, profiles)} for a LUT or an energy model; "
                           f"known: {', '.join(profiles)} (latency_luts/<device>/device.yaml)")
        if lat is not None and lat.kind == "like":
            other = exp.devices.get(lat.like)
            if other is None or other.latency is None or other.latency.kind not in LUT_KINDS[:3]:
                lut_devices = [n for n, d in exp.devices.items() if d.latency is not None and d.latency.kind in LUT_KINDS[:3]]
                raise NasError(f"{at}.latency.like: {lat.like!r} is not a device of this experiment with its "
                               f"own LUT{closest(lat.like, lut_devices)}; those are: {', '.join(lut_devices) or 'none'}")
        if energy is not None and energy.kind == "analytic":
            _check_analytic(name, dev, at)
        if lat is not None and lat.kind == "profile" and not _is_local(name):
            raise NasError(f"{at}.latency: only this machine's profile (detect: true, like local-cpu) can be "
                           "profiled here; profile a remote device with 'kit: {results: FILE}'")
        for metric, spec in (("latency", lat), ("energy", energy)):
            _check_file_source(spec, f"{at}.{metric}")
    _check_file_source(exp.accuracy, f"{where}: accuracy")


def _check_file_source(spec: Any, at: str) -> None:
    """A table names its unit here (budgets are written in units); a predictor is a file,
    or a shipped one by name (checked against the space by the search)."""
    from nas.sources import shipped_predictor

    if spec is None:
        return
    if spec.kind == "table" and "unit" not in spec.model_fields_set:
        raise NasError(f"{at}: a table source needs table, column and unit; unit missing")
    if spec.kind == "predictor" and not Path(spec.predictor).is_file() and shipped_predictor(spec.predictor) is None:
        raise NasError(f"{at}.predictor: {spec.predictor} does not exist, as a path or as a shipped predictor "
                       "(predictors/DEVICE/NAME)")


def _check_analytic(name: str, dev: Device, at: str) -> None:
    """The analytic estimate needs the device's latency LUT and its power model."""
    from nas.hardware.devices import POWER_KEYS, load_device

    if dev.latency is None or dev.latency.kind not in LUT_KINDS:
        raise NasError(f"{at}.energy: the analytic estimate needs a latency LUT of the device "
                       "(latency: profile, lut, kit or like)")
    missing = [k for k in POWER_KEYS if k not in load_device(name).power]
    if missing:
        raise NasError(f"{at}.energy: device {name} has no power model ({', '.join(missing)} missing in its device.yaml)")


def _is_local(device: str) -> bool:
    from nas.hardware.devices import load_device

    return load_device(device).detect


def metric_names(exp: Experiment) -> list[str]:
    """Metrics the experiment can name: counters, accuracy and each device's latency/energy."""
    names = [*COUNTER_METRICS, "accuracy"]
    for dev, spec in exp.devices.items():
        names += [f"{m}@{dev}" for m in ("latency", "energy") if getattr(spec, m) is not None]
    return names


def _check_metrics(exp: Experiment, where: str) -> None:
    from nas.search.objectives import parse_constraint, parse_objective

    known = metric_names(exp)
    for i, item in enumerate(exp.objectives):
        objective = parse_objective(item, f"{where}: objectives[{i}]")
        _known_metric(objective.metric, known, f"{where}: objectives[{i}]")
    for i, item in enumerate(exp.budgets):
        at = f"{where}: budgets[{i}]"
        constraint = parse_constraint(item, at)
        _known_metric(constraint.metric, known, at)
        _check_unit(constraint.metric, constraint.text, at)


def _known_metric(metric: str, known: list[str], where: str) -> None:
    if metric not in known:
        hint = ""
        if "@" in metric and metric.split("@", 1)[0] in ("latency", "energy"):
            hint = f" (declare device {metric.split('@', 1)[1]!r} with a {metric.split('@')[0]} source under devices:)"
        raise NasError(f"{where}: {unknown_key(metric, known, 'metric')}{hint}")


def _check_unit(metric: str, text: str, where: str) -> None:
    """Budgets on physical quantities must say their unit, in a unit of the right kind."""
    from nas.search.units import UNITS

    dimension = METRIC_DIMENSIONS.get(metric.split("@", 1)[0])
    match = re.match(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*(.*?)\s*$", text)
    unit = match.group(1) if match else ""
    if dimension is None:
        return
    units = [u for u in UNITS[dimension] if u]
    if not unit:
        raise NasError(f"{where}: budget '{metric} ... {text}' has no unit; write it with one of {', '.join(units)} "
                       f"(like '{text} {units[1] if len(units) > 1 else units[0]}')")
    if unit not in UNITS[dimension]:
        raise NasError(f"{where}: unit {unit!r} does not measure {dimension} for {metric}; use one of {', '.join(units)}")


def _check_delegated(exp: Experiment, where: str) -> None:
    """Training and accuracy must agree; the search config the experiment makes must be valid."""
    from nas.experiment.steps import search as search_step

    if exp.uses_supernet and exp.train is None:
        raise NasError(f"{where}: accuracy from the supernet needs a 'train:' section (or use accuracy: {{table: ...}})")
    if exp.train is not None and not exp.uses_supernet:
        raise NasError(f"{where}: train: is set but accuracy does not come from the supernet; remove it")
    search_step.check(exp, where)
