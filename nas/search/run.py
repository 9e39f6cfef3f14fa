"""`run_search(config)`: the one call behind `hwnas search` (and the experiment runner).

Everything that can be wrong with a config is found before the first query: the YAML,
the metric and device names, the units, the budgets (against the best any arch of the
space achieves) and the controller's settings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import ConfigError
from nas.redact import redact
from nas.search.config import SearchConfig, config_from_dict, load_search_config
from nas.search.runner import SearchOutcome
from nas.hardware.kit import KitPending
from nas.search.verify import verified_metric, verify_front
from nas.space import load_space
from nas.space.base import SearchSpace


@dataclass
class SearchRun:
    """What a search produced: the result object, its summary and the files written."""

    config: SearchConfig
    result: SearchOutcome
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def run_search(config: SearchConfig | Mapping[str, Any] | str | Path, *, progress: bool = True,
               write: bool = True) -> SearchRun:
    """Run (or resume) the search a config describes; results land in its `out` folder."""
    from nas.search.controllers import controller_class
    from nas.search.ledger import Ledger

    if isinstance(config, (str, Path)):
        config = load_search_config(config)
    elif isinstance(config, Mapping):
        config = config_from_dict(config)
    controller = controller_class(config.controller.name)(config.controller, config.seed)
    problem = controller.problem(_space(config), config)
    problem.check_budgets()
    if config.verify:
        if not controller.records_queries:
            raise ConfigError(f"verify: controller {config.controller.name} returns no front of measured archs to "
                              "re-measure")
        for device in config.verify:
            verified_metric(problem, device)
    ledger = None
    if controller.records_queries:
        if config.storage is None:
            config.out_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(problem, config.storage_url, config.study, config.identity())
    result = controller.search(problem, ledger, config.budget, progress, config.out_dir if write else None)
    summary = result.summary(config)
    pending = None
    if config.verify:
        try:
            summary["verified"] = verify_front(result, config.verify, config.out_dir if write else None, progress)
        except KitPending as exc:  # the results are written first: a rerun resumes a finished study
            pending = exc
    if ledger is not None:
        summary["storage"], summary["study"] = redact(config.storage_url), config.study
    files = result.write(config.out_dir, summary) if write else []
    if pending is not None:
        raise pending
    return SearchRun(config, result, summary, files)


def _space(config: SearchConfig) -> SearchSpace:
    """The config's space; a relative YAML path is read from the config's folder."""
    text = config.space
    if text.endswith((".yaml", ".yml")) and config.base is not None and not Path(text).is_absolute() \
            and not Path(text).exists():
        text = str(config.base / text)
    return load_space(text)
