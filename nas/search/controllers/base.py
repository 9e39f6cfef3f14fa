"""What every query-based controller shares: an ask/tell interface and its history.

A controller proposes a batch of archs (`ask`), the runner evaluates them (or finds them
in the study's storage, on a resumed run) and hands the metrics back (`tell`). Keeping
the loop outside the controller is what makes resumption exact: replaying the same
seeded controller against stored results walks the same path without spending a query.

Candidates are always code matrices: projected onto one code per network, scored for
every cheap metric in one vectorised call, and filtered on the cheap budgets before
the controller chooses among them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from nas.errors import NasError
from nas.search.codes import packed_rows
from nas.search.problem import Problem


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
    """Proposes archs to evaluate; learns from their metrics."""

    name = "controller"
    settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, problem: Problem, seed: int = 0, **settings: Any) -> None:
        unknown = [k for k in settings if k not in self.settings]
        if unknown:
            from nas.errors import closest

            raise NasError(f"controller {self.name}: unknown setting {unknown[0]!r}{closest(unknown[0], self.settings)}; "
                           f"known: {', '.join(self.settings) or 'none'}")
        self.config = {**self.settings, **settings}
        self.batch = self.config.get("batch", 10)  # archs asked per round (validated by controllers that take it)
        self.problem = problem
        self.rng = np.random.default_rng(seed)
        self.history = History(problem)

    @abstractmethod
    def ask(self, n: int) -> np.ndarray:
        """Up to n new archs (codes) to evaluate next; an empty matrix when none is left."""

    def tell(self, codes: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        self.history.add(codes, values)

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
