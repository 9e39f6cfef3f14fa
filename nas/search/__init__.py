"""Search controllers against device budgets.

    run_search(config)            one call behind `hwnas search CONFIG` (nas.search.run)
    Problem                       space + objectives + budgets over named cost sources
    search(problem, controller)   one registered controller on one problem, over an Optuna-study ledger
    register(cls)                 add a controller (nas.search.controllers: the registry)
    bench_search(...)             controllers on public device tables (`hwnas bench search`)

Controllers, each a `Controller` (nas.search.controllers.base) that returns a
`SearchOutcome`: evolution (constrained single-objective and NSGA-II fronts, with a GP
surrogate choosing which children to query), random search, Optuna's TPE and NSGA-II
samplers (shared studies across workers), and a differentiable FBNet/ProxylessNAS-style
controller that trains architecture logits jointly with a supernet. Names load on first
use, so `hwnas` commands that never search do not import Optuna or torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_search": "nas.search.run", "SearchRun": "nas.search.run",
    "SearchConfig": "nas.search.config", "load_search_config": "nas.search.config",
    "config_from_dict": "nas.search.config", "Problem": "nas.search.problem", "Metric": "nas.sources",
    "search": "nas.search.runner", "SearchResult": "nas.search.runner", "SearchOutcome": "nas.search.runner",
    "register": "nas.search.controllers",
    "Ledger": "nas.search.ledger", "bench_search": "nas.search.bench",
    "differentiable_search": "nas.search.controllers.differentiable",
}
__all__ = ["Ledger", "Metric", "Problem", "SearchConfig", "SearchOutcome", "SearchResult", "SearchRun", "bench_search",
           "config_from_dict", "differentiable_search", "load_search_config", "register", "run_search", "search"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
