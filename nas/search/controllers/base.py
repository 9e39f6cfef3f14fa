"""The one controller protocol, and the ask/tell base the query controllers share.

Every controller (evolution, random, Optuna's samplers, the differentiable search, and
any a user registers) is a `Controller`: a class with a name, a pydantic settings model
and `search(problem, ledger, budget, progress, out) -> SearchOutcome`. `run_search`
knows nothing else about it, so adding a controller is one class and one `register`
call (nas.search.controllers).

Ask/tell controllers (`AskTellController`) only propose archs (`ask`) and learn from
their metrics (`tell`); the base runs the loop: it evaluates the proposals, or finds
them in the study's storage on a resumed run. Keeping the loop outside the controller
is what makes resumption exact: replaying the same seeded controller against stored
results walks the same path without spending a query.

Candidates are always code matrices: projected onto one code per network, scored for
every cheap metric in one vectorised call, and filtered on the cheap budgets before
the controller chooses among them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from tqdm import tqdm

from nas.config import Section
from nas.search.codes import packed_rows
from nas.search.problem import Problem

if TYPE_CHECKING:
    from nas.search.config import SearchConfig
    from nas.search.ledger import Ledger
    from nas.search.runner import SearchOutcome, SearchResult
    from nas.space.base import SearchSpace


class ControllerSettings(Section):
    """A controller's settings; `name` (the controller's registered name) selects the model."""

    key_word: ClassVar[str] = "setting"
    name: str


class History:
    """Every arch evaluated so far: codes, all metric values, feasibility."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.codes = np.zeros((0, len(problem.space.decisions)), dtype=np.int64)
        self.values: dict[str, np.ndarray] = {n: np.zeros(0) for n in problem.metrics}
        self._seen: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.codes)

    def add(self, codes: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        self.codes = np.vstack([self.codes, codes])
        for n in self.values:
            self.values[n] = np.concatenate([self.values[n], np.asarray(values[n], dtype=np.float64)])
        self._seen.update(packed_rows(codes, self.problem.space.radices))

    def new_rows(self, codes: np.ndarray) -> np.ndarray:
        """Indices of the first occurrence of each distinct row not evaluated yet."""
        first: dict[bytes, int] = {}
        for i, key in enumerate(packed_rows(codes, self.problem.space.radices)):
            if key not in self._seen and key not in first:
                first[key] = i
        return np.fromiter(first.values(), dtype=np.int64, count=len(first))

    @property
    def objectives(self) -> np.ndarray:
        return self.problem.objective_matrix(self.values)

    @property
    def violation(self) -> np.ndarray:
        v = self.problem.violation(self.values)
        return np.where(np.isnan(v), np.inf, v)

    @property
    def feasible(self) -> np.ndarray:
        return self.problem.feasible(self.values)


class Controller(ABC):
    """A search strategy: spends a query budget on a problem and returns what it found."""

    name: ClassVar[str]
    Settings: ClassVar[type[ControllerSettings]]
    records_queries: ClassVar[bool] = True  # its queries live in an Optuna study (the ledger)
    shares_study: ClassVar[bool] = False  # several worker processes may join one study

    def __init__(self, settings: ControllerSettings | None = None, seed: int = 0) -> None:
        self.settings = settings if settings is not None else self.Settings(name=self.name)
        self.seed = seed

    def problem(self, space: SearchSpace, config: SearchConfig) -> Problem:
        """The problem this controller solves for a search config (the config's objectives and budgets)."""
        return Problem.build(space, config.objectives, config.constraints, config.sources, config.base)

    @abstractmethod
    def search(self, problem: Problem, ledger: Ledger | None, budget: int, progress: bool = True,
               out: Path | None = None) -> SearchOutcome:
        """Spend `budget` queries; the ledger (None when `records_queries` is False) records
        every evaluation and supplies them again on resume; `out` may hold checkpoints."""


class AskTellController(Controller):
    """Proposes archs to evaluate (`ask`), learns from their metrics (`tell`); the base runs the loop."""

    def start(self, problem: Problem) -> None:
        """Fresh state for one search of `problem` (the seeded generator, an empty history)."""
        self.problem = problem
        self.rng = np.random.default_rng(self.seed)
        self.history = History(problem)

    @property
    def batch(self) -> int:
        """Archs asked per round: the settings' `batch`, else 10."""
        return getattr(self.settings, "batch", 10)

    @abstractmethod
    def ask(self, n: int) -> np.ndarray:
        """Up to n new archs (codes) to evaluate next; an empty matrix when none is left."""

    def tell(self, codes: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        self.history.add(codes, values)

    def search(self, problem: Problem, ledger: Ledger | None, budget: int, progress: bool = True,
               out: Path | None = None) -> SearchResult:
        from nas.search.runner import collect

        self.start(problem)
        bar = tqdm(total=budget, desc=f"search {self.name}", unit="query", disable=not progress, leave=False)
        try:
            with ledger.lease():
                stats = self._loop(ledger, budget, bar)
        finally:
            bar.close()
        return collect(problem, ledger, stats)

    def _loop(self, ledger: Ledger, budget: int, bar: tqdm) -> dict[str, int]:
        problem = self.problem
        known = ledger.known()
        stats = {"queries": 0, "replayed": 0}
        told = 0
        while told < budget:
            codes = self.ask(min(self.batch, budget - told))
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
            self.tell(codes, values)
            told += len(codes)
        return stats

    # ------------------------------------------------------------------ candidates
    def candidates(self, codes: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Distinct, unevaluated, cheap-feasible networks among `codes`, with their cheap metrics."""
        codes = self.problem.identical(codes)
        codes = codes[self.history.new_rows(codes)]
        if not len(codes):
            return codes, {n: np.zeros(0) for n in self.problem.cheap_names}
        cheap = self.problem.cheap(codes)
        ok = self.problem.cheap_ok(cheap, codes)
        return codes[ok], {n: v[ok] for n, v in cheap.items()}

    def random_candidates(self, n: int, rounds: int = 20) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """About n random feasible unevaluated networks (fewer when the feasible set is small),
        in random order."""
        found, cheap = [], []
        total, draw = 0, max(4 * n, 256)
        for _ in range(rounds):
            codes, values = self.candidates(self.problem.space.sample_codes(self.rng, draw))
            found.append(codes)
            cheap.append(values)
            total += len(codes)
            if total >= n:
                break
            draw = min(draw * 4, 1 << 18)
        codes = np.vstack(found)
        values = {k: np.concatenate([c[k] for c in cheap]) for k in self.problem.cheap_names}
        first = self.history.new_rows(codes)  # rounds may have drawn the same arch twice
        order = first[self.rng.permutation(len(first))[:n]]
        return codes[order], {k: v[order] for k, v in values.items()}
