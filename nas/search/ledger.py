"""The record of a search's evaluations, kept in an Optuna study.

Every query becomes one trial: its params are the arch's decision values, its values
the objectives, its user attributes every metric, and its constraints the relative
violations Optuna's constrained samplers read. The study lives in any Optuna storage:
in memory for benchmarks, SQLite by default (one file, resumable), any RDB URL (such
as PostgreSQL) when workers on several machines share one search.

Workers coordinate through the trials themselves. Before a worker spends a query it
*claims* the arch on its running trial and then reads every live claim: if another
trial holds the same arch, or the claims exceed the budget, it yields (the trial is
closed as FAIL with `yielded` set and nothing is evaluated). A claim is written before
it is read, so of two racing workers at least one sees the other: no arch is queried
twice and the budget is never exceeded. A killed worker's trial stops sending
heartbeats and is failed by the next worker after the grace period, freeing its claim.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
import sqlalchemy.event
import sqlalchemy.exc
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas.errors import NasError
from nas.redact import redact, scrub
from nas.search.codes import packed_rows
from nas.search.problem import Problem

HEARTBEAT_S, GRACE_S = 5, 20
SQLITE_TIMEOUT_S = 60
OPEN_ATTEMPTS = 5
LIVE = (TrialState.RUNNING, TrialState.COMPLETE)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # recorded on each query, to tell workers apart


def make_storage(url: str | None) -> optuna.storages.BaseStorage:
    """In-memory storage for None, an RDB storage with heartbeats for a URL."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                     grace_period=GRACE_S)
            if url.startswith("sqlite"):
                _write_ahead_log(storage)
            return storage
        except (ImportError, ModuleNotFoundError) as exc:
            hint = "pip install 'hwnas[postgres]'" if url.startswith("postgresql") else f"install {exc.name}"
            raise NasError(f"storage {redact(url)}: its database driver is not installed ({exc.name or exc}); "
                           f"{hint}") from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            # an unreachable server, a bad URL or bad credentials; and
            # the race of workers creating the schema of a new database at once (the loser retries)
            racing = any(s in str(exc) for s in ("UNIQUE constraint", "already exists", "duplicate key"))
            if not racing or attempt + 1 == OPEN_ATTEMPTS:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise NasError(f"storage {redact(url)}: cannot open it ({scrub(first, url)})") from None
            time.sleep(0.5 * (attempt + 1))
    raise NasError(f"storage {redact(url)}: cannot open it")


def _write_ahead_log(storage: optuna.storages.RDBStorage) -> None:
    """SQLite in write-ahead-log mode with `synchronous=NORMAL`: readers no longer block the
    writer (workers sharing a file poll the study constantly), and a commit no longer
    waits for the disk (Optuna commits once per suggested parameter). A killed process
    loses nothing committed; only a power cut can lose the last commits, which a resumed
    search then evaluates again. WAL needs a local disk, not a network share."""
    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened while creating the schema predate the pragmas


class Ledger:
    """A study of evaluations for one problem (its description is checked on reopening).

    `created` tells whether this process made the study (the first worker) or joined it.
    """

    def __init__(self, problem: Problem, storage: str | None, study: str, identity: Mapping[str, Any]) -> None:
        self.problem = problem
        self.decisions = problem.space.decisions
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = make_storage(storage)
        directions = [o.direction for o in problem.objectives]
        sampler = optuna.samplers.RandomSampler(0)  # placeholder: Optuna controllers set their own
        try:
            self.study = optuna.create_study(storage=self.storage, study_name=study, directions=directions,
                                             sampler=sampler)
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=study, storage=self.storage, sampler=sampler)
            self.created = False
            found = [d.name.lower() for d in self.study.directions]
            if found != directions:
                raise NasError(f"study {study!r} in {storage} optimises {found}, this search {directions}; "
                               "use another --study") from None
        text = json.dumps(identity, sort_keys=True, default=str)
        found = self.study.user_attrs.get("hwnas")
        if found is None:
            self.study.set_user_attr("hwnas", text)
        elif found != text:
            raise NasError(f"study {study!r} in {storage} holds another search (other space, objectives, budgets, "
                           "controller or seed); use another --study name to start a new one")
        self._distributions = {d.name: CategoricalDistribution(list(d.choices)) for d in self.decisions}
        self._stale_checked = -float("inf")

    # ------------------------------------------------------------------ reading
    def trials(self, states: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.FAIL)) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def queries(self) -> list[FrozenTrial]:
        """Trials that spent a query (completed, or failed with a NaN metric), in order."""
        return [t for t in self.trials() if t.user_attrs.get("query")]

    def progress(self) -> tuple[int, int]:
        """(queries done, queries other workers are evaluating now), from one read."""
        trials = self.study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if t.state != TrialState.RUNNING and t.user_attrs.get("query"))
        running = sum(1 for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("claim")
                      and not t.user_attrs.get("yielded"))
        return done, running

    def known(self) -> dict[bytes, dict[str, float]]:
        """Metrics of every queried arch, keyed by its network (canonical codes: a sampler's
        trial may name choices of layers its depth leaves out)."""
        trials = self.queries()
        if not trials:
            return {}
        codes = self.problem.identical(np.stack([self.codes_of(t) for t in trials]))
        keys = packed_rows(codes, self.problem.space.radices)
        return {k: {n: _float(v) for n, v in t.user_attrs["metrics"].items()} for k, t in zip(keys, trials)}

    def codes_of(self, trial: FrozenTrial) -> np.ndarray:
        return np.array([d.choices.index(trial.params[d.name]) for d in self.decisions], dtype=np.int64)

    def key(self, codes: np.ndarray) -> bytes:
        """The arch's key in `known()` and in claims."""
        return packed_rows(codes[None, :], self.problem.space.radices)[0]

    def params(self, codes: np.ndarray) -> dict[str, Any]:
        return {d.name: d.choices[int(c)] for d, c in zip(self.decisions, codes)}

    # ------------------------------------------------------------------ writing
    def ask(self) -> optuna.Trial:
        """A new trial from the study's sampler. Optuna warns that heartbeats belong to
        Study.optimize; this ledger runs its own heartbeat around each evaluation."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            return self.study.ask()

    def attrs(self, values: Mapping[str, float]) -> tuple[dict[str, Any], dict[str, float], list[float] | None]:
        """(user attrs, constraint attrs, objective values or None when one is NaN) of an evaluation."""
        metrics = {k: float(v) for k, v in values.items()}
        arrays = {k: np.array([v]) for k, v in metrics.items()}
        violation = self.problem.violation(arrays)[0]
        constraints = {str(c): (float(v) if np.isfinite(v) else 1e9)
                       for c, v in zip(self.problem.constraints, violation)}
        objectives = [metrics[o.metric] for o in self.problem.objectives]
        ok = bool(self.problem.feasible(arrays)[0])
        user = {"metrics": {k: _jsonable(v) for k, v in metrics.items()}, "query": True, "feasible": ok,
                "worker": WORKER}
        return user, constraints, (objectives if all(np.isfinite(objectives)) else None)

    def record(self, codes: np.ndarray, values: Mapping[str, float]) -> None:
        """Store one evaluation as a finished trial (controllers that are not Optuna's)."""
        user, constraints, objectives = self.attrs(values)
        state = TrialState.COMPLETE if objectives is not None else TrialState.FAIL
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            self.study.add_trial(create_trial(params=self.params(codes), distributions=self._distributions,
                                              values=objectives, state=state, user_attrs=user,
                                              system_attrs={f"constraints:{k}": v for k, v in constraints.items()}))

    def claim(self, trial: optuna.Trial, key: bytes, budget: int) -> bool:
        """Claim the arch on a running trial; False (and the trial yields) if another live
        trial holds it or the live claims exceed the budget."""
        trial.set_user_attr("claim", key.hex())
        claims = [t for t in self.study.get_trials(deepcopy=False, states=LIVE)
                  if t.user_attrs.get("claim") and (t.state == TrialState.RUNNING or t.user_attrs.get("query"))
                  and not t.user_attrs.get("yielded")]
        mine = [t for t in claims if t.number == trial.number]
        others = [t for t in claims if t.number != trial.number]
        if mine and not any(t.user_attrs["claim"] == key.hex() for t in others) and len(claims) <= budget:
            return True
        trial.set_user_attr("yielded", True)
        self.study.tell(trial, state=TrialState.FAIL)
        return False

    @contextmanager
    def heartbeat(self, trial: optuna.Trial) -> Iterator[None]:
        """Keep a running trial alive in RDB storage while its arch is evaluated."""
        storage = self.storage
        if not isinstance(storage, optuna.storages.RDBStorage):
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.is_set():
                storage.record_heartbeat(trial._trial_id)
                stop.wait(HEARTBEAT_S)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Hold the study for one worker (controllers that are not Optuna's replay their own
        history and cannot share a study). The lease is a running trial kept alive by
        heartbeats; of several workers starting at once, the lowest trial number wins."""
        if not isinstance(self.storage, optuna.storages.RDBStorage):
            yield
            return
        self.fail_stale(force=True)
        trial = self.ask()
        trial.set_user_attr("lease", WORKER)
        try:
            for other in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if other.number < trial.number and not self._dead(other):
                    raise NasError(f"study {self.study.study_name!r} is being searched by another worker "
                                   f"({other.user_attrs.get('lease', 'starting')}); evolution and random search run "
                                   "one worker per study (optuna-tpe and optuna-nsga2 share one between workers)")
            with self.heartbeat(trial):
                yield
        finally:
            self.study.tell(trial, state=TrialState.FAIL)  # a lease is not an evaluation

    def _dead(self, trial: FrozenTrial) -> bool:
        """A lease of a process of this machine that no longer exists (killed): fail it now
        instead of waiting out the heartbeat grace period."""
        host, _, pid = str(trial.user_attrs.get("lease", "")).rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
            return False
        except ProcessLookupError:
            self.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            return True
        except PermissionError:  # alive, another user's
            return False

    def fail_stale(self, force: bool = False) -> None:
        """Fail trials of workers that stopped sending heartbeats (killed), freeing their claims
        (checked at most once per heartbeat interval)."""
        now = time.monotonic()
        if isinstance(self.storage, optuna.storages.RDBStorage) and (force or now - self._stale_checked >= HEARTBEAT_S):
            self._stale_checked = now
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _jsonable(value: float) -> float | None:
    """Optuna stores user attributes as JSON, which has no NaN."""
    return value if np.isfinite(value) else None
