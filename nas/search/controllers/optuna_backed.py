"""Optuna's TPE and NSGA-II samplers as controllers, on any Optuna storage.

Each trial suggests one choice per decision. Cheap metrics come first: a trial that
breaks a cheap budget is closed at once with its constraint violations (Optuna's
constrained samplers read them through `Trial.set_constraint`, which replaces the
`constraints_func` argument deprecated in Optuna 5) and spends no query; a trial whose
network was already queried is closed with the stored metrics, and a feasible network
nobody has queried, a few random changes away from it, is enqueued as the next trial.
Without that, a sampler that has converged (TPE on a two-objective front) proposes
known networks over and over: every repeat is a trial the sampler must refit on, and
a 300-query search grew to thousands of trials and minutes per query. Only then is the
arch claimed (see nas.search.ledger) and evaluated. Workers started on several machines
with the same storage URL and study name share the study and the budget.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import optuna
from tqdm import tqdm

from nas.errors import NasError
from nas.search.controllers.base import Controller, ControllerSettings
from nas.search.ledger import Ledger
from nas.search.problem import Problem
from nas.search.runner import SearchResult, collect

MAX_TRIALS_PER_QUERY = 50  # a sampler that keeps proposing infeasible or known archs is stopped
POLL_S = 1.0


class TPESettings(ControllerSettings):
    """Optuna's TPESampler arguments; null (the default) leaves one to the installed Optuna."""

    name: Literal["optuna-tpe"] = "optuna-tpe"
    n_startup_trials: int | None = None
    n_ei_candidates: int | None = None
    multivariate: bool | None = None
    group: bool | None = None
    constant_liar: bool | None = None


class NSGA2Settings(ControllerSettings):
    """Optuna's NSGAIISampler arguments; null (the default) leaves one to the installed Optuna."""

    name: Literal["optuna-nsga2"] = "optuna-nsga2"
    population_size: int | None = None
    mutation_prob: float | None = None
    crossover_prob: float | None = None
    swapping_prob: float | None = None


class OptunaController(Controller):
    """One of Optuna's samplers driving trials on the study (several workers may share it)."""

    shares_study = True
    sampler_class: ClassVar[type[optuna.samplers.BaseSampler]]

    def __init__(self, settings: ControllerSettings | None = None, seed: int = 0) -> None:
        super().__init__(settings, seed)
        self.sampler(seed)  # Optuna's own checks of the arguments, before any study is touched

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler with Optuna's defaults, overridden by the settings given."""
        try:
            return self.sampler_class(seed=seed, **self.settings.model_dump(exclude_none=True, exclude={"name"}))
        except (TypeError, ValueError) as exc:
            raise NasError(f"controller {self.name}: {exc}") from None

    def search(self, problem: Problem, ledger: Ledger | None, budget: int, progress: bool = True,
               out: Path | None = None) -> SearchResult:
        bar = tqdm(total=budget, desc=f"search {self.name}", unit="query", disable=not progress, leave=False)
        try:
            stats = optuna_search(problem, ledger, self, budget, bar)
        finally:
            bar.close()
        return collect(problem, ledger, stats)


class TPE(OptunaController):
    name = "optuna-tpe"
    Settings = TPESettings
    sampler_class = optuna.samplers.TPESampler


class NSGA2(OptunaController):
    name = "optuna-nsga2"
    Settings = NSGA2Settings
    sampler_class = optuna.samplers.NSGAIISampler


def worker_seed(seed: int, first: bool) -> int:
    """The configured seed for the worker that created the study; a distinct one for each
    worker that joins it (identical samplers would propose identical archs)."""
    return seed if first else int(np.random.SeedSequence([seed, os.getpid(), time.time_ns()]).generate_state(1)[0])


def optuna_search(problem: Problem, ledger: Ledger, controller: OptunaController, budget: int,
                  bar: tqdm | None = None) -> dict[str, int]:
    """Run trials until the study holds `budget` queries; returns counts of this worker's trials."""
    name = controller.name
    own_seed = worker_seed(controller.seed, ledger.created)
    ledger.study.sampler = controller.sampler(own_seed)
    decisions = problem.space.decisions
    stats = {"trials": 0, "queries": 0, "infeasible": 0, "known": 0, "yielded": 0, "neighbours": 0}
    rng = np.random.default_rng([own_seed, 1])  # for neighbours of known networks
    while True:
        ledger.fail_stale()
        done, running = ledger.progress()
        if bar is not None:
            bar.n = min(done, budget)
            bar.refresh()
        if done >= budget:
            break
        if stats["trials"] >= MAX_TRIALS_PER_QUERY * budget:
            raise NasError(f"{name} proposed {stats['trials']} archs but only {done} new feasible ones; the "
                           "feasible part of the space may be smaller than the budget")
        if running + done >= budget:  # the rest of the budget is being evaluated elsewhere
            time.sleep(POLL_S)
            continue
        trial = ledger.ask()
        stats["trials"] += 1
        choices = [trial.suggest_categorical(d.name, list(d.choices)) for d in decisions]
        codes = problem.identical(np.array([[d.choices.index(c) for d, c in zip(decisions, choices)]]))
        cheap = problem.cheap(codes)
        if not problem.cheap_ok(cheap, codes)[0]:
            _close(ledger, trial, {k: float(v[0]) for k, v in cheap.items()}, "infeasible")
            stats["infeasible"] += 1
            continue
        key = ledger.key(codes[0])
        known = ledger.known()
        if key in known:
            _close(ledger, trial, known[key], "known")
            stats["known"] += 1
            neighbour = _fresh_neighbour(problem, ledger, codes[0], known, rng)
            if neighbour is not None:
                ledger.study.enqueue_trial(ledger.params(neighbour))
                stats["neighbours"] += 1
            continue
        if not ledger.claim(trial, key, budget):
            stats["yielded"] += 1
            continue
        with ledger.heartbeat(trial):
            queried = problem.query(codes)
        values = {**{k: float(v[0]) for k, v in cheap.items()}, **{k: float(v[0]) for k, v in queried.items()}}
        user, constraints, objectives = ledger.attrs(values)
        for k, v in user.items():
            trial.set_user_attr(k, v)
        for k, v in constraints.items():
            trial.set_constraint(k, v)
        if objectives is None:
            ledger.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            ledger.study.tell(trial, objectives)
        stats["queries"] += 1
    _close_waiting(ledger)
    return stats


def _close_waiting(ledger: Ledger) -> None:
    """Close the enqueued neighbours no worker took before the budget was spent, so a
    finished study holds no trial still waiting (they yield, like a lost claim)."""
    waiting = (optuna.trial.TrialState.WAITING,)
    while ledger.study.get_trials(deepcopy=False, states=waiting):
        trial = ledger.ask()
        trial.set_user_attr("yielded", True)
        ledger.study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _fresh_neighbour(problem: Problem, ledger: Ledger, codes: np.ndarray, known: dict[bytes, Any],
                     rng: np.random.Generator, tries: int = 64) -> np.ndarray | None:
    """A feasible network nobody has queried, one random change away from `codes` (more
    changes after every 16 failed tries), or None when none turns up."""
    radices = np.asarray(problem.space.radices)
    for attempt in range(tries):
        candidate = codes.copy()
        changed = rng.choice(len(radices), size=min(len(radices), 1 + attempt // 16), replace=False)
        candidate[changed] = rng.integers(radices[changed])
        candidate = problem.identical(candidate[None])
        if ledger.key(candidate[0]) in known:
            continue
        if problem.cheap_ok(problem.cheap(candidate), candidate, remember=False)[0]:
            return candidate[0]
    return None


def _close(ledger: Ledger, trial: optuna.Trial, values: dict[str, float], why: str) -> None:
    """Finish a trial that spends no query: a cheap budget is broken, or the arch is known.
    Objectives not known here are reported as their worst value."""
    problem = ledger.problem
    arrays = {k: np.array([v]) for k, v in values.items()}
    violation = problem.violation(arrays, [n for n in values])[0]
    for c, v in zip([c for c in problem.constraints if c.metric in values], violation):
        trial.set_constraint(str(c), float(v) if np.isfinite(v) else 1e9)
    objectives = []
    for o in problem.objectives:
        v = values.get(o.metric, float("nan"))
        objectives.append(v if np.isfinite(v) else (-np.inf if o.direction == "maximize" else np.inf))
    trial.set_user_attr("skipped", why)
    ledger.study.tell(trial, objectives)

