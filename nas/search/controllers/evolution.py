"""Evolution under device budgets: single-objective (Once-for-All style) and NSGA-II fronts.

Each generation keeps the best `population` evaluated archs as parents (by objective,
feasible first, for one objective; by NSGA-II rank and crowding for several), breeds a
large pool of children by uniform crossover and mutation (plus a few random archs, so
the search never gets stuck in one basin), and rejects every child that breaks a cheap
budget, is a network already evaluated, or repeats another child. Scoring the pool is
one vectorised call per cost source, so pools of tens of thousands are cheap.

Which children are worth a query is decided by the surrogate (`surrogate: gp`, the
default): a Gaussian process over the queried metric ranks the pool by expected
improvement (one objective) or expected hypervolume improvement (a front), times the
probability of meeting budgets on queried metrics. Once-for-All's evolution uses an
accuracy predictor the same way; here it is fitted on the search's own queries.
With `surrogate: none` the generation's queries are drawn at random from the pool
(plain evolution). When every metric is cheap, the pool is ranked exactly.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from nas.search.controllers.base import AskTellController, ControllerSettings
from nas.search.pareto import crowding, front_ranks, nondominated
from nas.search.problem import Problem
from nas.threads import single_threaded
from nas.search.surrogate import (
    Features,
    GaussianProcess,
    expected_hvi,
    expected_improvement,
    probability_below,
)


class EvolutionSettings(ControllerSettings):
    name: Literal["evolution"] = "evolution"
    population: int = Field(20, ge=1)           # parents kept each generation
    init: int = Field(10, ge=1)                 # random archs queried before breeding
    batch: int = Field(2, ge=1)                 # archs queried per generation
    pool: int = Field(2048, ge=1)               # children bred and scored per generation
    mutation_prob: float | None = Field(None, ge=0, le=1)  # per decision; None: min(0.5, 1.5 / decisions)
    crossover: float = Field(0.5, ge=0, le=1)   # share of children made by uniform crossover
    random_fraction: float = Field(0.1, ge=0, le=1)  # share of the pool drawn at random
    surrogate: str = "gp"                       # gp (a GP ranks the pool) or none (plain evolution)
    features: str = "coarse"                    # the GP's arch features (nas.predictors.features)

    @field_validator("surrogate")
    @classmethod
    def _surrogate(cls, value: str) -> str:
        if value not in ("gp", "none"):
            raise ValueError(f"surrogate must be gp or none, got {value!r}")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: str) -> str:
        from nas.errors import unknown_key
        from nas.predictors.features import FEATURE_SETS

        if value not in FEATURE_SETS:
            raise ValueError(unknown_key(value, FEATURE_SETS, "feature set"))
        return value


class Evolution(AskTellController):
    name = "evolution"
    Settings = EvolutionSettings

    def start(self, problem: Problem) -> None:
        super().start(problem)
        s = self.settings
        d = len(problem.space.decisions)
        self.mutation_prob = s.mutation_prob if s.mutation_prob is not None else min(0.5, 1.5 / d)
        self.features = Features(problem.space, s.features) if s.surrogate == "gp" and problem.queried_names else None
        self._hyper: dict[str, tuple[int, tuple[float, float]]] = {}  # metric -> (queries at the last grid search, pick)

    # ------------------------------------------------------------------ ask
    def ask(self, n: int) -> np.ndarray:
        if len(self.history) < self.settings.init:
            return self.random_candidates(min(n, self.settings.init - len(self.history)))[0]
        codes, cheap = self.candidates(self.breed(self.parents()))
        if not len(codes):  # the neighbourhood is exhausted: fall back to fresh random archs
            codes, cheap = self.random_candidates(self.settings.pool)
        if not len(codes):
            return codes
        return codes[self.rank(codes, cheap)[:n]]

    def parents(self) -> np.ndarray:
        """The `population` best evaluated archs."""
        h = self.history
        objectives = np.where(np.isnan(h.objectives), np.inf, h.objectives)
        if self.problem.multi:
            ranks = front_ranks(objectives, h.violation)
            order = np.lexsort((-_crowding_by_rank(objectives, ranks), ranks))
        else:  # feasible first, by objective; then by total violation
            violation = np.clip(h.violation, 0, None).sum(axis=1) if h.violation.size else np.zeros(len(h))
            order = np.lexsort((objectives[:, 0], violation))
        return h.codes[order[: self.settings.population]]

    def breed(self, parents: np.ndarray) -> np.ndarray:
        """Children by uniform crossover (with probability `crossover`) and mutation, every
        child differing from its first parent, plus `random_fraction` random archs."""
        space, rng, pool = self.problem.space, self.rng, self.settings.pool
        n_random = round(pool * self.settings.random_fraction)
        m = pool - n_random
        a = parents[rng.integers(len(parents), size=m)]
        b = parents[rng.integers(len(parents), size=m)]
        cross = rng.random(m) < self.settings.crossover
        children = np.where(cross[:, None], space.crossover_codes(a, b, rng), a)
        children = space.mutate_codes(children, rng, self.mutation_prob)
        same = np.all(children == a, axis=1)
        if same.any():  # force one mutation where none happened
            rows = np.flatnonzero(same)
            cols = rng.integers(children.shape[1], size=len(rows))
            children[rows, cols] = (children[rows, cols] + rng.integers(1, space.radices[cols])) % space.radices[cols]
        return np.vstack([children, space.sample_codes(rng, n_random)])

    # ------------------------------------------------------------------ ranking the pool
    def rank(self, codes: np.ndarray, cheap: dict[str, np.ndarray]) -> np.ndarray:
        """Order of the candidates, most promising first."""
        tiebreak = self.rng.permutation(len(codes))
        queried = self.problem.queried_names
        if queried and (self.features is None or len(self.history) < 2):
            return tiebreak
        mean, std = dict(cheap), {n: np.zeros(len(codes)) for n in cheap}
        if queried:
            with single_threaded(torch_too=False):  # a GP of a few hundred points: a BLAS pool costs more than it saves
                X_hist, X_cand = self.features(self.history.codes), self.features(codes)
                for name in queried:
                    y = self.history.values[name]
                    ok = np.isfinite(y)
                    if ok.sum() < 2:
                        return tiebreak
                    mean[name], std[name] = self._surrogate(name, X_hist[ok], y[ok]).predict(X_cand)
        score, fallback = self._multi(mean, std) if self.problem.multi else self._single(mean, std)
        score = score * self._feasibility(mean, std)
        key = score if np.nanmax(score) > 0 else fallback
        return np.lexsort((tiebreak, -key))

    def _surrogate(self, name: str, X: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """The metric's GP on the queries so far; its hyperparameters are searched again
        whenever the queries have grown by a quarter since the last search."""
        last = self._hyper.get(name)
        if last is None or len(y) >= 1.25 * last[0]:
            gp = GaussianProcess().fit(X, y)
            self._hyper[name] = (len(y), gp.hyper)
            return gp
        return GaussianProcess().fit(X, y, last[1])

    def _single(self, mean: dict[str, np.ndarray], std: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Expected improvement over the best feasible arch so far (minimisation form)."""
        o = self.problem.objectives[0]
        m, s = o.sign * mean[o.metric], std[o.metric]
        done = self.history.objectives[:, 0]
        finite = np.isfinite(done)
        feasible = self.history.feasible & finite
        if not finite.any():
            return np.zeros(len(m)), -m
        best = done[feasible].min() if feasible.any() else done[finite].min()
        return expected_improvement(m, s, best), -m

    def _multi(self, mean: dict[str, np.ndarray], std: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Expected hypervolume improvement of the feasible front so far."""
        objs = self.problem.objectives
        m = np.stack([o.sign * mean[o.metric] for o in objs], axis=1)
        s = np.stack([std[o.metric] for o in objs], axis=1)
        h = self.history
        done = h.objectives
        finite = np.all(np.isfinite(done), axis=1)
        points = done[h.feasible & finite]
        front = points[nondominated(points)] if len(points) else points.reshape(0, len(objs))
        everything = np.vstack([m, done[finite]])
        span = np.ptp(everything, axis=0)
        ref = everything.max(axis=0) + 0.1 * np.where(span > 0, span, 1.0)
        uncertain = [j for j, o in enumerate(objs) if self.problem.metrics[o.metric].queried]
        if len(uncertain) <= 1:
            u = uncertain[0] if uncertain else 0
            order = [u] + [j for j in range(len(objs)) if j != u]
            ehvi = expected_hvi(m[:, u], s[:, u], m[:, order[1:]], front[:, order], ref[order])
            if ehvi is not None and ehvi.max() > 0:
                return ehvi, ehvi
        # several uncertain objectives, or no improvement expected: NSGA-II order of the predicted means
        ranks = front_ranks(m)
        return np.zeros(len(m)), -ranks + 1e-3 * np.tanh(_crowding_by_rank(m, ranks))

    def _feasibility(self, mean: dict[str, np.ndarray], std: dict[str, np.ndarray]) -> np.ndarray:
        """Probability of meeting the budgets on queried metrics (cheap ones are already met)."""
        p = np.ones(len(next(iter(mean.values()))))
        for c in self.problem.constraints:
            if self.problem.metrics[c.metric].queried:
                below = probability_below(mean[c.metric], std[c.metric], c.bound)
                p *= below if c.upper else 1.0 - below
        return p


def _crowding_by_rank(points: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Crowding distance of each row within its own front (non-finite objectives count as 0)."""
    points = np.nan_to_num(points, nan=0.0, posinf=0.0, neginf=0.0)
    out = np.zeros(len(points))
    for r in np.unique(ranks):
        members = ranks == r
        out[members] = crowding(points[members])
    return out
