"""A search problem: a space, objectives and budgets over named metrics, checked up front.

Controllers see only this: `cheap(codes)` scores any number of candidates at once (a
gather and a sum per cost source), `query(codes)` spends the expensive evaluations,
and `violation` / `objective_matrix` turn metric values into the numbers they rank by.
Budgets no arch can meet are refused before any work, naming the smallest achievable
value; candidates whose cheap metrics are NaN are counted so the run can report them.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nas.costs import CostModel
from nas.errors import NasError
from nas.search.codes import packed_rows
from nas.search.objectives import Constraint, Objective
from nas.sources import Metric, resolve_metrics
from nas.search.units import format_quantity, parse_quantity
from nas.space.base import SearchSpace

ENUMERATE_LIMIT = 1_000_000  # spaces up to this size are scanned exhaustively for budget checks
CHUNK = 200_000


class BoundCost(CostModel):
    """The upper (or lower) end of another cost model's interval at a confidence level."""

    def __init__(self, model: CostModel, level: float, upper: bool) -> None:
        self.model, self.level, self.upper = model, level, upper
        self.space, self.metric, self.unit = model.space, model.metric, model.unit

    def predict(self, archs) -> np.ndarray:
        lower, upper = self.model.interval(archs, self.level)
        return np.asarray(upper if self.upper else lower, dtype=np.float64)

    def interval(self, archs, level: float = 0.9):
        return self.model.interval(archs, level)

    def describe(self) -> dict:
        return {**self.model.describe(), "bound": f"{'upper' if self.upper else 'lower'} end of the "
                                                  f"{self.level * 100:g} % interval"}


@dataclass
class Problem:
    space: SearchSpace
    objectives: list[Objective]
    constraints: list[Constraint]
    metrics: dict[str, Metric]
    nan_archs: dict[str, set[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.objectives:
            raise NasError("a search needs at least one objective")
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise NasError(f"objectives name a metric twice: {', '.join(names)}")
        bound = []
        for c in self.constraints:
            unit = self.metrics[c.metric].unit
            c = replace(c, bound=parse_quantity(c.text, unit, f"constraint '{c}'"))
            if c.confidence is not None:
                c = self._at_confidence(c)
            bound.append(c)
        self.constraints = bound

    def _at_confidence(self, c: Constraint) -> Constraint:
        """A budget at a confidence compares the bound of the metric's interval: the
        constraint moves to a derived metric, 'METRIC at L %', whose value is the upper
        (<=) or lower (>=) end of the L interval, so every controller, ledger and report
        handles it as one more cheap metric."""
        base = self.metrics[c.metric]
        if base.queried:
            raise NasError(f"constraint '{c}': a confidence needs a cost source with intervals (a predictor); "
                           f"{c.metric} is queried")
        model = BoundCost(base.model, c.confidence, c.upper)
        model.interval(self.space.sample_codes(0, 2), c.confidence)  # refuse a source without intervals now
        name = f"{c.metric} at {c.confidence * 100:g} %"
        self.metrics[name] = Metric(name, model, queried=False)
        return replace(c, metric=name)

    @classmethod
    def build(cls, space: SearchSpace, objectives: Sequence[Objective], constraints: Sequence[Constraint],
              declared: Mapping[str, Any] | None = None, base: Path | None = None) -> Problem:
        """Resolve every metric the objectives and constraints name (see nas.sources)."""
        names = [o.metric for o in objectives] + [c.metric for c in constraints]
        return cls(space, list(objectives), list(constraints), resolve_metrics(space, names, declared or {}, base))

    # ------------------------------------------------------------------ metric groups
    @property
    def cheap_names(self) -> list[str]:
        return [n for n, m in self.metrics.items() if not m.queried]

    @property
    def queried_names(self) -> list[str]:
        return [n for n, m in self.metrics.items() if m.queried]

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def cheap(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Every cheap metric of N archs, vectorised (one call per cost source)."""
        return {n: np.asarray(self.metrics[n].model.predict(codes), dtype=np.float64) for n in self.cheap_names}

    def query(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """The expensive metrics of N archs (what the budget counts)."""
        return {n: np.asarray(self.metrics[n].model.predict(codes), dtype=np.float64) for n in self.queried_names}

    def identical(self, codes: np.ndarray) -> np.ndarray:
        """Codes with decisions that do not shape the network reset: one code per network."""
        return self.space.canonical_codes(codes)

    # ------------------------------------------------------------------ ranking numbers
    def objective_matrix(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """N x K objective values, each turned into a value to minimise."""
        return np.stack([o.sign * np.asarray(values[o.metric], dtype=np.float64) for o in self.objectives], axis=1)

    def violation(self, values: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        """N x C relative violation of each constraint (> 0: violated by that share of the
        bound; <= 0: met), for the constraints on `names` (all by default)."""
        cols = []
        for c in self.constraints:
            if names is not None and c.metric not in names:
                continue
            v = np.asarray(values[c.metric], dtype=np.float64)
            scale = abs(c.bound) if c.bound else 1.0
            cols.append(((v - c.bound) if c.upper else (c.bound - v)) / scale)
        n = len(next(iter(values.values()))) if values else 0
        return np.stack(cols, axis=1) if cols else np.zeros((n, 0))

    def cheap_ok(self, cheap: Mapping[str, np.ndarray], codes: np.ndarray, remember: bool = True) -> np.ndarray:
        """Which of the archs (`codes`) have all cheap metrics known and meet the cheap
        budgets (all of them, when there are no cheap metrics); archs whose cheap metrics
        are NaN are remembered for the run's report unless `remember` is False."""
        known = np.ones(len(codes), dtype=bool)
        if not cheap:
            return known
        for name, v in cheap.items():
            missing = np.isnan(v)
            if missing.any() and remember:
                self.nan_archs.setdefault(name, set()).update(packed_rows(codes[missing], self.space.radices))
            known &= ~missing
        with np.errstate(invalid="ignore"):
            return known & np.all(self.violation(cheap, self.cheap_names) <= 0, axis=1)

    def feasible(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluated archs that meet every budget (NaN metrics count as not meeting them)."""
        v = self.violation(values)
        with np.errstate(invalid="ignore"):
            ok = np.all(v <= 0, axis=1)
        for o in self.objectives:
            ok &= ~np.isnan(np.asarray(values[o.metric], dtype=np.float64))
        return ok

    # ------------------------------------------------------------------ checks
    def check_budgets(self) -> None:
        """Refuse a cheap budget that no arch of the space meets, naming the best achievable value."""
        for c in self.constraints:
            metric = self.metrics[c.metric]
            if metric.queried:
                continue
            value, codes = best_value(self.space, metric, minimize=c.upper)
            if np.isnan(value):
                raise NasError(f"{c.metric} has no value (NaN) for any arch of space {self.space.name}")
            met = value <= c.bound if c.upper else value >= c.bound
            if not met:
                word = "smallest" if c.upper else "largest"
                arch = self.space.decode(codes)
                raise NasError(f"no arch of space {self.space.name} meets {c}: the {word} achievable "
                               f"{c.metric} is {format_quantity(value, metric.unit)} (arch {arch.arch_id}); "
                               f"relax the budget to at least that")
        cheap = [str(c) for c in self.constraints if not self.metrics[c.metric].queried]
        if len(cheap) > 1 and self.space.size <= ENUMERATE_LIMIT and \
                not any(self.cheap_ok(self.cheap(chunk), chunk, remember=False).any()
                        for chunk in enumerate_codes(self.space)):
            raise NasError(f"no arch of space {self.space.name} meets all of {'; '.join(cheap)} at once, "
                           "though each alone can be met")

    @property
    def nan_counts(self) -> dict[str, int]:
        """Distinct archs seen whose cheap metric was NaN, per metric."""
        return {name: len(keys) for name, keys in self.nan_archs.items()}

    def describe(self) -> dict[str, Any]:
        return {"space": self.space.name, "objectives": [str(o) for o in self.objectives],
                "constraints": [str(c) for c in self.constraints],
                "metrics": {n: m.describe() for n, m in self.metrics.items()}}


def enumerate_codes(space: SearchSpace) -> Iterator[np.ndarray]:
    """Every code of a small space, in chunks of N x D matrices (mixed-radix order)."""
    radices = space.radices
    for start in range(0, space.size, CHUNK):
        rank = np.arange(start, min(space.size, start + CHUNK), dtype=np.int64)
        codes = np.empty((len(rank), len(radices)), dtype=np.int64)
        for d in range(len(radices) - 1, -1, -1):
            rank, codes[:, d] = np.divmod(rank, radices[d])
        yield codes


def best_value(space: SearchSpace, metric: Metric, minimize: bool = True, starts: int = 8,
               samples: int = 20_000, seed: int = 0) -> tuple[float, np.ndarray]:
    """(smallest or largest value of a cheap metric, the arch's codes).

    Exact for spaces small enough to scan; otherwise the best of a coordinate descent
    (one decision at a time, all its choices at once) from the space's smallest arch and
    from the best of many random samples, which is exact for costs that add up per layer.
    """
    sign = 1.0 if minimize else -1.0

    def score(codes: np.ndarray) -> np.ndarray:
        v = sign * metric.model.predict(codes)
        return np.where(np.isnan(v), np.inf, v)

    if space.size <= ENUMERATE_LIMIT:
        best_v, best_c = np.inf, None
        for codes in enumerate_codes(space):
            s = score(codes)
            i = int(np.argmin(s))
            if s[i] < best_v:
                best_v, best_c = s[i], codes[i]
        return (sign * best_v if np.isfinite(best_v) else float("nan")), best_c
    pool = np.vstack([space.encode(space.extreme(largest=not minimize))[None, :],
                      space.sample_codes(np.random.default_rng(seed), samples)])
    s = score(pool)
    best_v, best_c = np.inf, pool[0]
    for start in pool[np.argsort(s)[:starts]]:
        codes, current = space.descend(start, score, rounds=10)
        if current < best_v:
            best_v, best_c = current, codes
    return (sign * best_v if np.isfinite(best_v) else float("nan")), best_c
