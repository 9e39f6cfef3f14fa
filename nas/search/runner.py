"""The search loop: a controller, a problem, a budget of queries and the ledger that records them.

Query-based controllers run ask -> evaluate -> tell. An arch already in the ledger (a
resumed run) is answered from it instead of evaluated; because controllers are seeded
and deterministic given their answers, a resumed run replays the killed one's path
without spending a query and carries on where it stopped. Optuna's samplers drive their
own trials on the same ledger (nas.search.controllers.optuna_backed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from nas.errors import NasError, closest
from nas.search.controllers.base import Controller
from nas.search.controllers.evolution import Evolution
from nas.search.controllers.optuna_backed import SAMPLER_SETTINGS, optuna_search
from nas.search.controllers.random import RandomSearch
from nas.search.ledger import Ledger
from nas.search.pareto import hypervolume, nondominated
from nas.search.problem import Problem

QUERY_CONTROLLERS: dict[str, type[Controller]] = {"evolution": Evolution, "random": RandomSearch}
CONTROLLERS = (*QUERY_CONTROLLERS, *SAMPLER_SETTINGS, "differentiable")


@dataclass
class SearchResult:
    """Every queried arch of a search with all its metrics, in query order."""

    problem: Problem
    codes: np.ndarray
    values: dict[str, np.ndarray]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> np.ndarray:
        return self.problem.feasible(self.values)

    def best(self) -> int | None:
        """Row of the best feasible arch by the first objective (None if none is feasible)."""
        rows = np.flatnonzero(self.feasible)
        if not len(rows):
            return None
        objective = self.problem.objective_matrix(self.values)[rows, 0]
        return int(rows[np.argmin(objective)])

    def front(self) -> np.ndarray:
        """Rows of the feasible Pareto front, ordered by the first objective."""
        rows = np.flatnonzero(self.feasible)
        points = self.problem.objective_matrix(self.values)[rows]
        rows = rows[nondominated(points)] if len(rows) else rows
        return rows[np.argsort(self.problem.objective_matrix(self.values)[rows, 0], kind="stable")]

    def hypervolume(self, reference: np.ndarray) -> float:
        """Hypervolume of the feasible front, `reference` given in the objectives' own units
        (for a maximised objective: the lowest value that still counts)."""
        signs = np.array([o.sign for o in self.problem.objectives])
        points = self.problem.objective_matrix(self.values)[self.front()]
        return hypervolume(points, signs * np.asarray(reference, dtype=np.float64))


def make_controller(name: str, problem: Problem, seed: int, settings: dict[str, Any]) -> Controller:
    if name not in QUERY_CONTROLLERS:
        raise NasError(f"unknown controller {name!r}{closest(name, CONTROLLERS)}; known: {', '.join(CONTROLLERS)}")
    return QUERY_CONTROLLERS[name](problem, seed, **settings)


def search(problem: Problem, controller: str | Controller, settings: dict[str, Any], seed: int, budget: int,
           ledger: Ledger, progress: bool = True) -> SearchResult:
    """Spend `budget` queries with the controller (a name, or one made by make_controller);
    the ledger records (and on resume supplies) every evaluation."""
    name = controller if isinstance(controller, str) else controller.name
    bar = tqdm(total=budget, desc=f"search {name}", unit="query", disable=not progress, leave=False)
    try:
        if name in SAMPLER_SETTINGS:
            stats = optuna_search(problem, ledger, name, settings, seed, budget, bar)
        else:
            if isinstance(controller, str):
                controller = make_controller(controller, problem, seed, settings)
            with ledger.lease():
                stats = _query_loop(problem, controller, ledger, budget, bar)
    finally:
        bar.close()
    return collect(problem, ledger, stats)


def _query_loop(problem: Problem, controller: Controller, ledger: Ledger, budget: int, bar: tqdm) -> dict[str, int]:
    known = ledger.known()
    stats = {"queries": 0, "replayed": 0}
    told = 0
    while told < budget:
        codes = controller.ask(min(controller.batch, budget - told))
        if not len(codes):
            stats["exhausted"] = 1  # no feasible arch is left unevaluated
            break
        cheap = problem.cheap(codes)
        values = {**cheap, **{n: np.full(len(codes), np.nan) for n in problem.queried_names}}
        for i, row in enumerate(codes):
            key = ledger.key(row)
            if key in known:
                found = known[key]
                stats["replayed"] += 1
            else:
                found = {**{k: float(v[i]) for k, v in cheap.items()},
                         **{k: float(v[0]) for k, v in problem.query(row[None, :]).items()}}
                ledger.record(row, found)
                known[key] = found
                stats["queries"] += 1
            for name in problem.queried_names:
                values[name][i] = found[name]
            bar.update(1)
        controller.tell(codes, values)
        told += len(codes)
    return stats


def collect(problem: Problem, ledger: Ledger, stats: dict[str, Any]) -> SearchResult:
    """The ledger's queried archs as a result (all workers' queries, in trial order)."""
    trials = ledger.queries()
    d = len(problem.space.decisions)
    codes = np.array([ledger.codes_of(t) for t in trials], dtype=np.int64).reshape(len(trials), d)
    codes = problem.identical(codes) if len(codes) else codes
    values = {n: np.array([_value(t.user_attrs["metrics"].get(n)) for t in trials], dtype=np.float64)
              for n in problem.metrics}
    return SearchResult(problem, codes, values, {**stats, "nan": problem.nan_counts})


def _value(v: Any) -> float:
    return float("nan") if v is None else float(v)
