"""Cost sources: one typed union of every way hwnas gets a metric, and one resolver.

A cost source is a small mapping whose one *kind* key says where a metric comes from.
The same models serve a search config's `sources:`, an experiment's `devices:` and
`accuracy:` sections, the profile step's `sources.json` and the sources a search ran
under (which the model card re-checks its budgets with):

    {counter: params}                          an exact counter of the space, under another name
    {lut: FILE, allow_mismatch: false}         a latency LUT (for energy@DEVICE: the analytic model over it)
    {table: FILE, column: NAME, unit: ms}      a per-arch table column (public benchmark, own measurements)
    {predictor: FILE | edgegpu/nb201_energy}   a `hwnas predictor fit` file, or a shipped one by name
    {supernet: DIR, split: val, calib_images, quant}  inherited-weight accuracy of a trained supernet
                                               (quant: nas.quant.QuantSettings for int8 archs)
    {analytic: true}                           energy@DEVICE: the device's power model over latency@DEVICE
    {like: OTHER_DEVICE}                       a stand-in: OTHER_DEVICE's source for the same metric
  experiment only (the profile and train steps turn them into the kinds above):
    {profile: {warmup, repeats, ...}} | profile      build a LUT on this machine
    {kit: {results: FILE, ...}, allow_mismatch}      import `hwnas lut kit` results
    {supernet: {split, calib_images, quant}}         the supernet the run's train step trains

Any source also takes `queried: true|false`. A metric is *queried* when it is expensive
(a supernet evaluation, or a table standing in for training): the search budget counts
those evaluations, and candidates are filtered on the cheap metrics before any is spent.
Counters, LUTs, energy and learned predictors are cheap, supernets queried, tables
queried when they hold an accuracy.

Names resolve without any declaration where the project knows the source:

    params, macs, weight_bytes, peak_memory     exact counters of the space
    latency@DEVICE                              the device's LUT (latency_luts/DEVICE/SPACE.csv), else
                                                a shipped predictor (predictors/DEVICE/SPACE_latency.npz)
    energy@DEVICE                               the analytic energy model over latency@DEVICE, else a
                                                shipped predictor (predictors/DEVICE/SPACE_energy.npz)

`Resolver(space, declared, base).metric(name)` is the one way from a name to a cost
model: the search builds its problem with it, the export's model card checks budgets
with it, the experiment steps hand it their sources.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    NonNegativeInt,
    PositiveInt,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)

from nas import catalog
from nas.config import Section, existing_path, locate_path, validate
from nas.costs import CostModel, CounterCost
from nas.errors import ConfigError, NasError, closest, unknown_key
from nas.hardware.measure import STATISTICS, Protocol
from nas.quant.settings import QuantSettings

if TYPE_CHECKING:
    from nas.hardware.lut import LUTCost
    from nas.space.base import SearchSpace

COUNTERS = {"params": "params", "macs": "macs", "weight_bytes": "weight_bytes",
            "peak_memory": "peak_activation_bytes", "peak_activation_bytes": "peak_activation_bytes"}
DEVICE_METRICS = ("latency", "energy")


def device_metric(name: str) -> tuple[str, str] | None:
    """('latency', 'pi4-ort') for 'latency@pi4-ort'; None for a name without a device."""
    metric, at, device = name.partition("@")
    return (metric, device) if at and metric in DEVICE_METRICS and device else None


def shipped_predictor(name: str) -> Path | None:
    """The predictor file a name like `edgegpu/nb201_latency` stands for, in any predictor
    layer of the catalogue (importing nas.predictors pulls in scikit-learn: this does not)."""
    return catalog.find_predictor(name)


def shipped_predictors(space: SearchSpace) -> dict[str, Path]:
    """Name (`edgegpu/nb201_latency`) -> file of every predictor of the space in the
    catalogue's layers, without another space whose name extends this one's."""
    return {name: path for name, path in catalog.predictor_files(space.name).items()
            if "_" not in path.stem[len(space.name) + 1:]}


# ---------------------------------------------------------------------- the union
class Source(Section):
    """A cost source: its kind is the one key naming it (see the module doc)."""

    kind: ClassVar[str]
    queried: bool | None = None

    def default_queried(self, name: str) -> bool:
        return False

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        raise NasError(f"sources.{name}: a {self.kind} source is made by an experiment step, not read by a search; "
                       "give a lut, table, predictor or supernet source")

    def label(self, name: str, resolver: Resolver) -> str:
        """Where the figure comes from, in a few words (for the model card)."""
        return f"{self.kind} {getattr(self, self.kind)}"

    def file(self, name: str, resolver: Resolver) -> str | None:
        """The file the figures are read from, if one."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """The serialized form: what a config would say (defaults left out), read back by the same union."""
        return self.model_dump(mode="json", exclude_defaults=True)


class CounterSource(Source):
    kind: ClassVar[str] = "counter"
    counter: str

    @field_validator("counter")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in COUNTERS:
            raise ValueError(unknown_key(value, COUNTERS, "counter"))
        return value

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        return CounterCost(resolver.space, COUNTERS[self.counter])

    def label(self, name: str, resolver: Resolver) -> str:
        return "exact counter"


class LutSource(Source):
    kind: ClassVar[str] = "lut"
    lut: str
    allow_mismatch: bool = False        # use a LUT measured with other settings (warns instead of refusing)

    _file = field_validator("lut")(existing_path)

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        from nas.hardware.devices import load_device
        from nas.hardware.energy import AnalyticEnergy

        metric, device = _on_device(name, self.kind)
        device = load_device(device)
        latency = lut_cost(Path(self.lut), resolver.space, device, self.allow_mismatch)
        return latency if metric == "latency" else AnalyticEnergy(resolver.space, device, latency)

    def file(self, name: str, resolver: Resolver) -> str | None:
        return self.lut

    def label(self, name: str, resolver: Resolver) -> str:
        over = f"LUT {self.lut}"
        return over if name.startswith("latency@") else f"analytic estimate over {over}"


class TableSource(Source):
    """A column of a per-arch table (a public benchmark or your own measurements)."""

    kind: ClassVar[str] = "table"
    table: str
    column: str
    unit: str = ""                      # the column's unit ("": a plain number); an experiment requires one

    _file = field_validator("table")(existing_path)

    @model_validator(mode="before")
    @classmethod
    def _complete(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and all(k in cls.model_fields for k in data):  # else: the unknown key is news
            missing = [k for k in ("table", "column") if k not in data]
            if missing:
                raise ValueError(f"a table source needs table and column; {', '.join(missing)} missing")
        return data

    def default_queried(self, name: str) -> bool:
        return name.split("@")[0].lower().startswith("acc")

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        from nas.predictors.energy import ColumnCost

        return ColumnCost.read(resolver.space, self.table, self.column, name, self.unit)

    def file(self, name: str, resolver: Resolver) -> str | None:
        return self.table

    def label(self, name: str, resolver: Resolver) -> str:
        return f"table {self.table}, column {self.column}"


class PredictorSource(Source):
    """A predictor file: a path, or a shipped one named like `edgegpu/nb201_latency`."""

    kind: ClassVar[str] = "predictor"
    predictor: str

    @field_validator("predictor")
    @classmethod
    def _file(cls, value: str, info: ValidationInfo) -> str:
        path = locate_path(value, info)
        return str(path) if path.exists() else value  # else a shipped name, checked against the space

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        from nas.predictors.predictor import Predictor

        return Predictor.load(self.file(name, resolver), resolver.space)

    def file(self, name: str, resolver: Resolver) -> str:
        path = Path(self.predictor) if Path(self.predictor).exists() else shipped_predictor(self.predictor)
        if path is None:
            known = list(shipped_predictors(resolver.space))
            raise NasError(f"sources.{name}: predictor {self.predictor} does not exist, as a path or as a shipped "
                           f"predictor; shipped for {resolver.space.name}: {', '.join(known) or 'none'}")
        return str(path)


class SupernetSource(Source):
    """Inherited-weight accuracy of a `hwnas supernet train` folder."""

    kind: ClassVar[str] = "supernet"
    supernet: str
    split: Literal["val", "test"] = "val"
    calib_images: PositiveInt | None = None
    quant: QuantSettings | None = None  # None: the training run's `quant:` settings

    _dir = field_validator("supernet")(existing_path)

    def default_queried(self, name: str) -> bool:
        return True

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        from nas.supernet import SupernetAccuracy

        model = SupernetAccuracy(Path(self.supernet), self.split, self.calib_images, quant=self.quant)
        if model.space.name != resolver.space.name:
            raise NasError(f"sources.{name}: the supernet was trained on space {model.space.name}, the search is "
                           f"over {resolver.space.name}")
        return model

    def label(self, name: str, resolver: Resolver) -> str:
        return f"supernet {self.supernet}, {self.split} split"


class AnalyticSource(Source):
    """energy@DEVICE: the device profile's power model over latency@DEVICE (however that resolves)."""

    kind: ClassVar[str] = "analytic"
    analytic: Literal[True]

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        from nas.hardware.devices import load_device
        from nas.hardware.energy import AnalyticEnergy

        metric, device = _on_device(name, self.kind)
        if metric != "energy":
            raise NasError(f"sources.{name}: an analytic source serves energy@DEVICE, not {name!r}")
        return AnalyticEnergy(resolver.space, load_device(device), resolver.model(f"latency@{device}"))

    def label(self, name: str, resolver: Resolver) -> str:
        device = name.split("@", 1)[1]
        return f"analytic estimate over latency@{device} ({resolver.label(f'latency@{device}')})"


class LikeSource(Source):
    """A stand-in: another device's source for the same metric (its LUT, checked as its own)."""

    kind: ClassVar[str] = "like"
    like: str

    def cost(self, name: str, resolver: Resolver) -> CostModel:
        metric, _ = _on_device(name, self.kind)
        return resolver.model(f"{metric}@{self.like}")

    def file(self, name: str, resolver: Resolver) -> str | None:
        return resolver.file(f"{name.split('@')[0]}@{self.like}")

    def label(self, name: str, resolver: Resolver) -> str:
        other = f"{name.split('@')[0]}@{self.like}"
        return f"stand-in: {other} ({resolver.label(other)})"


class ProfileSettings(Section):
    """Profile a LUT on this machine (nas.hardware.profiling.build_lut)."""

    warmup: NonNegativeInt = Protocol.warmup  # the measurement protocol's fields and defaults
    repeats: PositiveInt = Protocol.repeats
    rounds: PositiveInt = Protocol.rounds
    passes: PositiveInt = Protocol.passes
    statistic: Literal[STATISTICS] = Protocol.statistic
    calibrate: NonNegativeInt = 30
    resolution: list[int] | None = None


class ProfileSource(Source):
    kind: ClassVar[str] = "profile"
    profile: ProfileSettings


class KitSettings(Section):
    """A device profiled through `hwnas lut kit`: the run writes the kit and waits for its results file."""

    results: str
    resolution: list[int] | None = None
    batch: int = 1

    @field_validator("results")
    @classmethod
    def _results(cls, value: str, info: ValidationInfo) -> str:
        """Where the results will be (they may not exist yet: the run writes the kit first)."""
        return str(locate_path(value, info))


class KitSource(Source):
    kind: ClassVar[str] = "kit"
    kit: KitSettings
    allow_mismatch: bool = False        # import results measured with other settings


class SupernetSettings(Section):
    split: Literal["val", "test"] = "val"
    calib_images: PositiveInt | None = None
    quant: QuantSettings | None = None


class TrainedSupernetSource(Source):
    """The supernet an experiment's train step trains (a SupernetSource once it exists)."""

    kind: ClassVar[str] = "supernet"
    supernet: SupernetSettings

    def trained(self, folder: Path) -> SupernetSource:
        return SupernetSource.model_construct(supernet=str(folder), split=self.supernet.split,
                                              calib_images=self.supernet.calib_images, quant=self.supernet.quant,
                                              queried=self.queried)


def _on_device(name: str, kind: str) -> tuple[str, str]:
    found = device_metric(name)
    if found is None:
        raise NasError(f"sources.{name}: a {kind} source serves latency@DEVICE or energy@DEVICE, not {name!r}")
    return found


class _Pick:
    """Validates a union of sources by the one kind key a mapping holds, so errors point
    into the chosen member (no union-branch names in the key path)."""

    def __init__(self, what: str, members: Sequence[type[Source]], shorthands: Mapping[str, Any] | None) -> None:
        self.what, self.members = what, tuple(members)
        self.by_kind = {m.kind: m for m in members}
        self.shorthands = dict(shorthands or {})

    def member(self, data: Any) -> tuple[type[Source], Any]:
        """(the member class, the data with shorthands expanded)."""
        data = self.shorthands.get(data, data) if isinstance(data, str) else data
        return _member(data, self.by_kind, self.what), data

    def __call__(self, data: Any, handler: Any, info: ValidationInfo) -> Source:
        if isinstance(data, self.members):
            return data
        member, data = self.member(data)
        return member.model_validate(data, context=info.context)


def _union(what: str, members: Sequence[type[Source]], shorthands: Mapping[str, Any] | None = None) -> Any:
    return Annotated[Union[tuple(members)], WrapValidator(_Pick(what, members, shorthands))]


def _member(data: Any, by_kind: Mapping[str, type[Source]], what: str) -> type[Source]:
    if not isinstance(data, Mapping):
        example = "{table: FILE, column: NAME, unit: ms}"
        raise ValueError(f"expected a mapping with one of {', '.join(by_kind)} (like {example}), got {data!r}")  # noqa: TRY004
    kinds = [k for k in by_kind if k in data]
    if len(kinds) == 1:
        return by_kind[kinds[0]]
    if not kinds:
        fields = {f for m in by_kind.values() for f in m.model_fields}
        for key in data:
            if key not in fields:
                raise ValueError(unknown_key(key, list(by_kind)))
    raise ValueError(f"give exactly one {what} of {', '.join(by_kind)}; got {', '.join(kinds or map(str, data)) or 'none'}")


SearchSource = _union("source kind", [CounterSource, LutSource, TableSource, PredictorSource, SupernetSource,
                                      AnalyticSource, LikeSource])
LatencySource = _union("latency source", [ProfileSource, LutSource, KitSource, LikeSource, PredictorSource,
                                          TableSource], {"profile": {"profile": {}}})
EnergySource = _union("energy source", [AnalyticSource, PredictorSource, TableSource], {"analytic": {"analytic": True}})
AccuracySource = _union("accuracy source", [TrainedSupernetSource, TableSource, PredictorSource])


def read_source(data: Any, where: str, base: Path | None = None, union: Any = SearchSource,
                relative_to: Path | None = None) -> Source:
    """One source of `union` from its mapping (a config's, or a serialized one read back),
    paths read from the working folder else `base` (or from `relative_to` only: the folder
    of the step that wrote it); a ConfigError 'where: ...' otherwise."""
    pick = next(m.func for m in union.__metadata__ if isinstance(m, WrapValidator))
    if isinstance(data, pick.members):
        return data
    try:
        member, data = pick.member(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return validate(member, data, where, {"base": base, "relative_to": relative_to})


# ---------------------------------------------------------------------- the resolver
@dataclass(frozen=True)
class Metric:
    """A named metric of a search: its cost source and whether evaluating it is a query."""

    name: str
    model: CostModel
    queried: bool

    @property
    def unit(self) -> str:
        return self.model.unit

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "queried": self.queried, **self.model.describe()}


class Resolver:
    """Metric names -> Metrics over one space: declared sources first, then the names
    hwnas knows (see the module doc). Each name is resolved once; a stand-in or an
    analytic estimate reuses the cost model of the metric it builds on.

    `declared` maps a name to a source (a mapping, a Source) or to a ready CostModel /
    Metric (the Python API's way to plug in predictors). Relative paths are read from
    the working folder, else from `base` (the config file's folder).
    """

    def __init__(self, space: SearchSpace, declared: Mapping[str, Any] | None = None, base: Path | None = None) -> None:
        self.space = space
        self.declared = {name: spec if isinstance(spec, (Metric, CostModel)) else read_source(spec, f"sources.{name}", base)
                         for name, spec in (declared or {}).items()}
        self._done: dict[str, Metric] = {}
        self._open: list[str] = []

    def metric(self, name: str) -> Metric:
        if name not in self._done:
            if name in self._open:
                loop = [*self._open[self._open.index(name):], name]
                raise NasError(f"sources: {' -> '.join(loop)} stand in for each other; one of them needs its own source")
            self._open.append(name)
            try:
                self._done[name] = self._resolve(name)
            finally:
                self._open.pop()
        return self._done[name]

    def model(self, name: str) -> CostModel:
        return self.metric(name).model

    def source(self, name: str) -> Source | None:
        """The source a name resolves through (None for a ready cost model)."""
        spec = self.declared.get(name)
        if isinstance(spec, (Metric, CostModel)):
            return None
        return spec if spec is not None else self._by_name(name)

    def label(self, name: str) -> str:
        """Where the metric's figures come from, in a few words."""
        source = self.source(name)
        return source.label(name, self) if source is not None else type(self.model(name)).__name__

    def file(self, name: str) -> str | None:
        """The file the metric's figures are read from, if one."""
        source = self.source(name)
        return source.file(name, self) if source is not None else None

    def serialized(self) -> dict[str, dict[str, Any]]:
        """The declared sources in their serialized form (ready cost models left out)."""
        return {name: spec.to_dict() for name, spec in self.declared.items() if isinstance(spec, Source)}

    def _resolve(self, name: str) -> Metric:
        spec = self.declared.get(name)
        if isinstance(spec, Metric):
            return spec
        if isinstance(spec, CostModel):
            from nas.search.objectives import default_direction

            return Metric(name, spec, queried=default_direction(name) == "maximize")
        source = self.source(name)
        queried = source.default_queried(name) if source.queried is None else source.queried
        return Metric(name, source.cost(name, self), queried)

    def _by_name(self, name: str) -> Source:
        """The source a name stands for without a declaration."""
        from nas.hardware.devices import device_names, load_device
        from nas.hardware.profiling import default_lut_path

        if name in COUNTERS:
            return CounterSource(counter=name)
        found = device_metric(name)
        if found is None:
            known = [*COUNTERS, "latency@DEVICE", "energy@DEVICE", *self.declared]
            raise NasError(f"unknown metric {name!r}{closest(name, [*COUNTERS, *self.declared])}; known: "
                           f"{', '.join(known)} (declare others under 'sources:')")
        metric, device = found
        if device not in device_names():
            shipped = shipped_predictor(f"{device}/{self.space.name}_{metric}")
            if shipped is not None:
                return PredictorSource(predictor=str(shipped))
            with_predictor = [n.split("/")[0] for n in shipped_predictors(self.space) if n.endswith(f"_{metric}")]
            known = sorted({*device_names(), *with_predictor})
            raise NasError(f"unknown device {device!r} in {name!r}{closest(device, known)}; known devices: "
                           f"{', '.join(known) or 'none'} (profiles in latency_luts/, and shipped {metric} predictors "
                           f"of {self.space.name})")
        if metric == "energy":
            return AnalyticSource(analytic=True)
        path = default_lut_path(load_device(device), self.space)
        if not path.is_file():
            raise NasError(f"{name}: no LUT of {self.space.name} for device {device} at {path}; build it with "
                           f"'hwnas lut build --space {self.space.name} --device {device}' or name one under "
                           f"sources: {{{name}: {{lut: FILE}}}}")
        return LutSource(lut=str(path))


def resolve_metrics(space: SearchSpace, names: Sequence[str], declared: Mapping[str, Any] | None = None,
                    base: Path | None = None) -> dict[str, Metric]:
    """A Metric for each name (see Resolver)."""
    resolver = Resolver(space, declared, base)
    return {name: resolver.metric(name) for name in dict.fromkeys(names)}


def lut_cost(path: Path, space: SearchSpace, device: Any, allow_mismatch: bool = False,
             resolution: int | None = None) -> LUTCost:
    """The cost model of a LUT file for the space on `device` (checked against it)."""
    from nas.hardware.lut import LUT, LUTCost

    return LUTCost(LUT.load(path), space, resolution=resolution, device=device, allow_mismatch=allow_mismatch)
