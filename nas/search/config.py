"""A search config (YAML), validated completely before any work starts.

    space: tiny_mbconv                     # shipped space name or YAML path
    objectives: [max accuracy, min latency@local-cpu]
    constraints:                           # budgets, several devices at once
      - latency@local-cpu <= 0.4 ms
      - peak_memory <= 256 KiB
      - params <= 2M
    sources:                               # metrics hwnas cannot find by name (see nas.sources)
      accuracy: {supernet: runs/supernet}
    controller: evolution                  # or {name: evolution, population: 20, batch: 5, ...}
    seed: 0
    budget: 300                            # queries of the expensive metrics
    storage: sqlite:///runs/search/study.db   # default: sqlite:///OUT/study.db; any Optuna RDB URL
    study: my-search                       # default: the config file's name
    out: runs/search/my-search             # default: runs/search/STUDY
    reference: {accuracy: 0 %, latency@local-cpu: 0.4 ms}   # hypervolume reference point
                                           # (default: a budget's bound, else the worst value seen)
    verify: [local-cpu]                    # re-measure the front's latency on this machine and
                                           # re-check the budgets (nas.search.verify)

`SearchConfig` is a `nas.config.Section`: unknown keys, wrong types, unknown controllers
and their unknown settings are one-line errors naming the key. `controller` is a union
of the registered controllers' settings models, keyed on `name` (nas.search.controllers);
metric names and budgets are checked when the problem is built, which also happens
before the first query.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nas.config import Section, validate
from nas.errors import ConfigError, NasError
from nas.redact import redact
from nas.search.controllers.base import ControllerSettings
from nas.search.objectives import Constraint, Objective, parse_constraint, parse_objective
from nas.search.problem import Problem


def controller_settings(value: Any) -> ControllerSettings:
    """'evolution' or {name: evolution, population: 20, ...} -> the registered controller's settings model."""
    from nas.search.controllers import controller_class

    if isinstance(value, ControllerSettings):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ValueError(f"controller must be a controller name or a mapping with 'name', got {value!r}")
    try:
        cls = controller_class(value["name"])
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return cls.Settings.model_validate(dict(value))


# The controller union: the settings model of the controller `name` picks (validated via the registry).
ControllerSpec = Annotated[SerializeAsAny[ControllerSettings], BeforeValidator(controller_settings)]


def default_controller() -> ControllerSettings:
    return controller_settings("evolution")


def _parsed(parse: Callable[[Any, str], Any]) -> Callable[[Any], Any]:
    """A list item parsed by nas.search.objectives (its NasError as the item's ValueError)."""
    def check(value: Any) -> Any:
        try:
            return parse(value, "")
        except NasError as exc:
            raise ValueError(str(exc).removeprefix(": ")) from None
    return check


def _as_list(value: Any) -> Any:
    """One objective or constraint may be written without the list."""
    return [value] if isinstance(value, (str, Mapping)) else value


class SearchConfig(Section):
    """A validated search config (see the module doc); `base` is the folder relative source paths are read from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    space: str
    objectives: Annotated[list[Annotated[Objective, BeforeValidator(_parsed(parse_objective))]],
                          BeforeValidator(_as_list), Field(min_length=1)]
    constraints: Annotated[list[Annotated[Constraint, BeforeValidator(_parsed(parse_constraint))]],
                           BeforeValidator(_as_list)] = []
    sources: dict[str, Any] = {}
    controller: ControllerSpec = Field(default_factory=default_controller)
    seed: int = 0
    budget: int = 100
    storage: str | None = None
    study: str = "search"
    out: Path | None = None
    reference: dict[str, Any] = {}
    verify: list[str] = []
    _base: Path | None = PrivateAttr(None)

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, value: Any) -> Any:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError("space must name a space (like tiny_mbconv) or a space YAML path")
        return str(value)

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, value: Any) -> Any:
        if value is None or value == []:
            raise ValueError("objectives is required: list at least one, like [max accuracy]")
        return value

    @field_validator("sources", "reference", mode="before")
    @classmethod
    def _mapping(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("sources must map metric names to sources" if info.field_name == "sources" else
                             "reference must map objective metrics to values, like {accuracy: 0 %}")
        return dict(value)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"seed must be an integer, got {value!r}")
        return value

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"budget must be a positive integer (queries), got {value!r}")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        """Kept as written: $VARIABLES stay unexpanded until the study is opened, so a
        password held in the environment never lands in a file this config is saved to."""
        if value is None:
            return value
        try:
            url = expand_storage(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if "://" not in url:
            raise ValueError(f"storage {redact(value)!r} must be a database URL such as sqlite:///study.db or "
                             "postgresql://user@host/db")
        return value

    @field_validator("study", mode="before")
    @classmethod
    def _study(cls, value: Any) -> Any:
        return value or "search"

    @field_validator("out", mode="before")
    @classmethod
    def _out(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ValueError("out must be a folder path")
        return None if value is None else Path(value)

    @model_validator(mode="after")
    def _reference(self) -> SearchConfig:
        if any(k not in [o.metric for o in self.objectives] for k in self.reference):
            raise ValueError("reference must map objective metrics to values, like {accuracy: 0 %}")
        return self

    @property
    def base(self) -> Path | None:
        return self._base

    @property
    def out_dir(self) -> Path:
        return self.out or Path("runs") / "search" / self.study

    @property
    def storage_url(self) -> str:
        """The Optuna storage: the configured URL, or an SQLite file in the output folder."""
        return expand_storage(self.storage) if self.storage else f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    def identity(self) -> dict[str, Any]:
        """What a study's evaluations depend on: resuming with anything else is refused."""
        return {"space": self.space, "objectives": [str(o) for o in self.objectives],
                "constraints": [str(c) for c in self.constraints], "controller": self.controller.name,
                "settings": self.controller.model_dump(mode="json", exclude={"name"}), "seed": self.seed,
                "sources": {k: v for k, v in self.sources.items() if isinstance(v, Mapping)}}

    def reference_point(self, problem: Problem) -> np.ndarray | None:
        """The configured hypervolume reference point in the metrics' units (None: the default)."""
        from nas.search.units import parse_quantity

        if not self.reference:
            return None
        ref = []
        for o in problem.objectives:
            if o.metric not in self.reference:
                raise NasError(f"reference: give a value for every objective; {o.metric} has none")
            ref.append(parse_quantity(self.reference[o.metric], problem.metrics[o.metric].unit, f"reference.{o.metric}"))
        return np.array(ref)


def expand_storage(text: str) -> str:
    """A storage URL with its $VARIABLES expanded; an unset variable is an error, not a literal '$'."""
    url = os.path.expandvars(text)
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", url)
    if unset:
        raise ConfigError(f"environment variable {unset[0]} in the storage URL is not set")
    return url


def load_search_config(path: Path | str, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Read and validate a YAML config; `overrides` (storage, study, budget, seed, out, verify) win."""
    from nas.space.registry import read_config

    path = Path(path)
    data = read_config(path, "search config")
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    data.setdefault("study", path.stem)
    return config_from_dict(data, str(path), path.parent)


def config_from_dict(data: Mapping[str, Any], where: str = "config", base: Path | None = None) -> SearchConfig:
    """Validate a config mapping (the Python API's entry; the experiment runner uses it)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    config = validate(SearchConfig, dict(data), where)
    config._base = base
    return config
