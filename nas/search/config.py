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

Unknown keys, wrong types, unknown controllers and their unknown settings are one-line
errors naming the key; metric names and budgets are checked when the problem is built,
which also happens before the first query.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError, closest
from nas.search.objectives import (
    Constraint,
    Objective,
    parse_constraint,
    parse_objective,
)

KEYS = ("space", "objectives", "constraints", "sources", "controller", "seed", "budget", "storage", "study", "out",
        "reference")
CONTROLLER_NAMES = ("evolution", "random", "optuna-tpe", "optuna-nsga2", "differentiable")


@dataclass
class SearchConfig:
    space: str
    objectives: list[Objective]
    constraints: list[Constraint] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)
    controller: str = "evolution"
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    budget: int = 100
    storage: str | None = None
    study: str = "search"
    out: Path | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    base: Path | None = None  # folder relative paths in sources are read from

    @property
    def out_dir(self) -> Path:
        return self.out or Path("runs") / "search" / self.study

    @property
    def storage_url(self) -> str:
        """The Optuna storage: the configured URL, or an SQLite file in the output folder."""
        return self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    def identity(self) -> dict[str, Any]:
        """What a study's evaluations depend on: resuming with anything else is refused."""
        return {"space": self.space, "objectives": [str(o) for o in self.objectives],
                "constraints": [str(c) for c in self.constraints], "controller": self.controller,
                "settings": self.settings, "seed": self.seed,
                "sources": {k: v for k, v in self.sources.items() if isinstance(v, Mapping)}}


def load_search_config(path: Path | str, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Read and validate a YAML config; `overrides` (storage, study, budget, seed, out) win."""
    from nas.space.registry import read_config

    path = Path(path)
    data = read_config(path, "search config")
    data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    data.setdefault("study", path.stem)
    return config_from_dict(data, str(path), path.parent)


def config_from_dict(data: Mapping[str, Any], where: str = "config", base: Path | None = None) -> SearchConfig:
    """Validate a config mapping (the Python API's entry; the experiment runner uses it)."""
    if not isinstance(data, Mapping):
        raise NasError(f"{where} must be a mapping")
    for key in data:
        if key not in KEYS:
            raise NasError(f"{where}: unknown key {key!r}{closest(str(key), KEYS)}; known: {', '.join(KEYS)}")
    if not isinstance(data.get("space"), (str, os.PathLike)):
        raise NasError(f"{where}: 'space' must name a space (like tiny_mbconv) or a space YAML path")
    objectives = _list(data.get("objectives"), f"{where}.objectives", required=True)
    constraints = _list(data.get("constraints"), f"{where}.constraints")
    sources = data.get("sources") or {}
    if not isinstance(sources, Mapping):
        raise NasError(f"{where}.sources must map metric names to sources")
    name, settings = _controller(data.get("controller", "evolution"), f"{where}.controller")
    seed, budget = data.get("seed", 0), data.get("budget", 100)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise NasError(f"{where}.seed must be an integer, got {seed!r}")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise NasError(f"{where}.budget must be a positive integer (queries), got {budget!r}")
    for key in ("storage", "study"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise NasError(f"{where}.{key} must be a string, got {data[key]!r}")
    storage = data.get("storage")
    if storage is not None and "://" not in storage:
        raise NasError(f"{where}.storage {storage!r} must be a database URL such as sqlite:///study.db or "
                       "postgresql://user@host/db")
    out = data.get("out")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise NasError(f"{where}.out must be a folder path")
    parsed = [parse_objective(o, f"{where}.objectives[{i}]") for i, o in enumerate(objectives)]
    reference = data.get("reference") or {}
    if not isinstance(reference, Mapping) or any(k not in [o.metric for o in parsed] for k in reference):
        raise NasError(f"{where}.reference must map objective metrics to values, like {{accuracy: 0 %}}")
    return SearchConfig(
        space=str(data["space"]),
        objectives=parsed,
        constraints=[parse_constraint(c, f"{where}.constraints[{i}]") for i, c in enumerate(constraints)],
        sources=dict(sources), controller=name, settings=settings, seed=seed, budget=budget, storage=storage,
        study=str(data.get("study") or "search"), out=Path(out) if out is not None else None,
        reference=dict(reference), base=base)


def _list(value: Any, where: str, required: bool = False) -> list:
    if value is None:
        if required:
            raise NasError(f"{where} is required: list at least one, like [max accuracy]")
        return []
    if isinstance(value, (str, Mapping)):
        return [value]
    if not isinstance(value, list) or (required and not value):
        raise NasError(f"{where} must be a non-empty list" if required else f"{where} must be a list")
    return value


def _controller(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """'evolution' or {name: evolution, population: 20, ...} -> (name, settings)."""
    if isinstance(value, str):
        name, settings = value, {}
    elif isinstance(value, Mapping) and isinstance(value.get("name"), str):
        name, settings = value["name"], {k: v for k, v in value.items() if k != "name"}
    else:
        raise NasError(f"{where} must be a controller name or a mapping with 'name', got {value!r}")
    if name not in CONTROLLER_NAMES:
        raise NasError(f"{where}: unknown controller {name!r}{closest(name, CONTROLLER_NAMES)}; "
                       f"known: {', '.join(CONTROLLER_NAMES)}")
    return name, settings
