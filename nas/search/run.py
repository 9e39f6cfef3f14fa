"""`run_search(config)`: the one call behind `hwnas search` (and the experiment runner).

Everything that can be wrong with a config is found before the first query: the YAML,
the metric and device names, the units, the budgets (against the best any arch of the
space achieves) and the controller's settings.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.atomic import write_atomic
from nas.errors import NasError
from nas.search.config import SearchConfig, config_from_dict, load_search_config
from nas.search.objectives import Objective
from nas.search.problem import Problem
from nas.search.units import parse_quantity
from nas.space import load_space
from nas.space.base import SearchSpace


@dataclass
class SearchRun:
    """What a search produced: the result object, its summary and the files written."""

    config: SearchConfig
    result: Any  # SearchResult, or DifferentiableResult for the differentiable controller
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def run_search(config: SearchConfig | Mapping[str, Any] | str | Path, *, progress: bool = True,
               write: bool = True) -> SearchRun:
    """Run (or resume) the search a config describes; results land in its `out` folder."""
    if isinstance(config, (str, Path)):
        config = load_search_config(config)
    elif isinstance(config, Mapping):
        config = config_from_dict(config)
    space = _space(config)
    if config.controller == "differentiable":
        return _differentiable(config, space, progress, write)
    problem = Problem.build(space, config.objectives, config.constraints, config.sources, config.base)
    problem.check_budgets()
    from nas.search.controllers.optuna_backed import SAMPLER_SETTINGS, make_sampler
    from nas.search.ledger import Ledger
    from nas.search.results import summarize, write_results
    from nas.search.runner import make_controller, search

    if config.controller in SAMPLER_SETTINGS:  # settings are checked before the study is touched
        make_sampler(config.controller, config.settings, config.seed)
        controller: Any = config.controller
    else:
        controller = make_controller(config.controller, problem, config.seed, config.settings)
    if config.storage is None:
        config.out_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(problem, config.storage_url, config.study, config.identity())
    result = search(problem, controller, config.settings, config.seed, config.budget, ledger, progress)
    summary = summarize(result, config.controller, config.seed, config.budget, _reference(config, problem))
    summary["storage"], summary["study"] = _redacted(config.storage_url), config.study
    files = write_results(result, config.out_dir, summary) if write else []
    return SearchRun(config, result, summary, files)


def _reference(config: SearchConfig, problem: Problem) -> np.ndarray | None:
    """The configured hypervolume reference point in the metrics' units (None: the default)."""
    if not config.reference:
        return None
    ref = []
    for o in problem.objectives:
        if o.metric not in config.reference:
            raise NasError(f"reference: give a value for every objective; {o.metric} has none")
        ref.append(parse_quantity(config.reference[o.metric], problem.metrics[o.metric].unit, f"reference.{o.metric}"))
    return np.array(ref)


def _space(config: SearchConfig) -> SearchSpace:
    """The config's space; a relative YAML path is read from the config's folder."""
    text = config.space
    if text.endswith((".yaml", ".yml")) and config.base is not None and not Path(text).is_absolute() \
            and not Path(text).exists():
        text = str(config.base / text)
    return load_space(text)


def _differentiable(config: SearchConfig, space: SearchSpace, progress: bool, write: bool) -> SearchRun:
    from nas.search.controllers.differentiable import (
        check_settings,
        differentiable_search,
    )

    settings = check_settings(config.settings)
    if [(o.metric, o.direction) for o in config.objectives] != [("accuracy", "maximize")]:
        raise NasError("the differentiable controller maximises the accuracy of the supernet it trains: objectives "
                       "must be [max accuracy], with the cost target under constraints")
    if not config.constraints:
        raise NasError("the differentiable controller needs a cost target under constraints, like "
                       "'latency@local-cpu <= 0.4 ms'")
    target = config.constraints[0].metric
    problem = Problem.build(space, [Objective(target, "minimize")], config.constraints, config.sources, config.base)
    problem.check_budgets()
    result = differentiable_search(problem, settings, config.seed, progress,
                                   checkpoint=config.out_dir / "differentiable.pt" if write else None)
    summary = {"schema": "hwnas.search/1", "controller": "differentiable", "space": space.name,
               "constraints": [str(c) for c in problem.constraints], "settings": settings, "seed": config.seed,
               **result.to_dict(settings["tolerance"])}
    files = []
    if write:
        files = [config.out_dir / "summary.json", config.out_dir / "arch.json"]
        write_atomic(files[0], json.dumps(summary, indent=2) + "\n")
        write_atomic(files[1], result.arch.to_json() + "\n")
    return SearchRun(config, result, summary, files)


def _redacted(url: str) -> str:
    """A storage URL without its password, for files that may be shared."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else url
    return url
