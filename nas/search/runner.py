"""What a search returns, and `search()`: one controller by name on one problem.

Every controller returns a `SearchOutcome`, which writes its own summary, files and
CLI lines, so `run_search` and `hwnas search` never ask which controller ran. Query
controllers return a `SearchResult`: every queried arch with all its metrics, read
back from the ledger (the Optuna study) in trial order (`collect`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.search.pareto import hypervolume, nondominated
from nas.search.problem import Problem

if TYPE_CHECKING:
    from nas.search.config import SearchConfig
    from nas.search.ledger import Ledger


class SearchOutcome(ABC):
    """What any controller's search returns."""

    @abstractmethod
    def summary(self, config: SearchConfig) -> dict[str, Any]:
        """The summary.json mapping of this search."""

    @abstractmethod
    def write(self, out: Path, summary: dict[str, Any]) -> list[Path]:
        """Write the result files into `out` (atomically); returns their paths."""

    @abstractmethod
    def lines(self, summary: dict[str, Any]) -> list[str]:
        """What `hwnas search` prints about it."""


@dataclass
class SearchResult(SearchOutcome):
    """Every queried arch of a search with all its metrics, in query order."""

    problem: Problem
    codes: np.ndarray
    values: dict[str, np.ndarray]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> np.ndarray:
        return self.problem.feasible(self.values)

    def best(self) -> int | None:
        """Row of the best feasible arch by the first objective, ties broken by the others (the
        first row of the front: of two archs equally accurate, the slower one is dominated and
        never exported); None if none is feasible."""
        front = self.front()
        return int(front[0]) if len(front) else None

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

    def summary(self, config: SearchConfig) -> dict[str, Any]:
        from nas.search.results import summarize

        return summarize(self, config.controller.name, config.seed, config.budget, config.reference_point(self.problem))

    def write(self, out: Path, summary: dict[str, Any]) -> list[Path]:
        from nas.search.results import write_results

        return write_results(self, out, summary)

    def lines(self, summary: dict[str, Any]) -> list[str]:
        s = summary
        lines = [f"{s['queries']} queried archs ({s['feasible']} feasible), {len(s['front'])} on the front"]
        if s["best"] is not None:
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in s["best"]["metrics"].items() if v is not None)
            lines.append(f"best: {s['best']['arch_id']} {metrics}")
        if "hypervolume" in s:
            lines.append(f"hypervolume {s['hypervolume']['value']:.6g} (reference {s['hypervolume']['reference']})")
        return lines


def search(problem: Problem, controller: str, settings: dict[str, Any], seed: int, budget: int,
           ledger: Ledger, progress: bool = True) -> SearchOutcome:
    """Spend `budget` queries on `problem` with the controller registered as `controller`
    (settings as a mapping, checked by its model); the ledger records every evaluation."""
    from nas.config import validate
    from nas.search.controllers import controller_class

    cls = controller_class(controller)
    config = validate(cls.Settings, {"name": controller, **settings}, f"controller {controller}")
    return cls(config, seed).search(problem, ledger, budget, progress)


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
