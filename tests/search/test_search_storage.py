"""Searches on Optuna storages: resuming a killed search, and workers sharing one study on
SQLite and on a real PostgreSQL server (tests/postgres.py starts one, or the test skips).

The searches run on tiny_mbconv (6.5e10 archs, tables built in milliseconds, so worker
processes start fast) with a queried stand-in for accuracy: MACs, counted as a query."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from nas.errors import NasError
from nas.search.run import run_search
from nas.space import load_space
from tests.postgres import postgres_url  # noqa: F401  (a fixture)

QUERIED_PROXY = {"proxy": {"counter": "macs", "queried": True}}  # a cheap metric that counts as a query


def write_config(path: Path, **changes) -> Path:
    config = {"space": "tiny_mbconv", "objectives": ["max proxy"], "constraints": ["params <= 150K"],
              "sources": QUERIED_PROXY, "controller": "evolution", "budget": 40, "seed": 0, **changes}
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli", "search", *args, "--quiet"]


def query_trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    return [t for t in trials if t.user_attrs.get("query")]


def arch_of(trial: optuna.trial.FrozenTrial) -> str:
    """The network a trial evaluated (choices of layers its depth leaves out do not count)."""
    space = load_space("tiny_mbconv")
    codes = space.encode(space.arch(trial.params))
    return space.decode(space.canonical_codes(codes[None, :])[0]).arch_id


def count_trials(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0


def test_killed_search_resumes_without_repeating_evaluations(tmp_path):
    """Kill a search mid-way, resume it: the study ends with exactly the archs an
    uninterrupted run queries, and the resumed run spends no query on an arch twice."""
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    cfg = write_config(tmp_path / "s.yaml", budget=40)
    proc = subprocess.Popen(cli(str(cfg), "--storage", url, "--study", "s", "--out", str(tmp_path / "a")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while count_trials(db) < 11 and proc.poll() is None and time.time() < deadline:  # a lease + 10 queries
        time.sleep(0.02)
    assert proc.poll() is None, f"the search ended before it could be killed: {proc.stderr.read()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = query_trials(url, "s")
    assert 10 <= len(before) < 40
    resumed = run_search(yaml.safe_load(cfg.read_text()) | {"storage": url, "study": "s", "out": str(tmp_path / "b")},
                         progress=False)
    after = query_trials(url, "s")
    assert len(after) == resumed.summary["queries"] == 40
    assert len({arch_of(t) for t in after}) == 40  # no arch queried twice
    assert resumed.result.stats["queries"] == 40 - len(before)  # only new archs were evaluated
    assert resumed.result.stats["replayed"] == len(before)
    reference = run_search(yaml.safe_load(cfg.read_text()) | {"storage": url, "study": "ref", "out": str(tmp_path / "c")},
                           progress=False)
    assert [arch_of(t) for t in after] == [arch_of(t) for t in query_trials(url, "ref")]
    assert resumed.summary["best"] == reference.summary["best"]


def test_a_study_refuses_another_search(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    base = yaml.safe_load(write_config(tmp_path / "s.yaml", budget=5).read_text()) | {"storage": url, "study": "s",
                                                                                       "out": str(tmp_path / "o")}
    run_search(base, progress=False)
    with pytest.raises(NasError, match="holds another search"):
        run_search(base | {"seed": 1}, progress=False)


def run_workers(tmp_path: Path, url: str, controller: str, budget: int) -> list[optuna.trial.FrozenTrial]:
    """Two worker processes on one study: an `hwnas search` process and this one."""
    cfg = write_config(tmp_path / "w.yaml", controller=controller, budget=budget)
    other = subprocess.Popen(cli(str(cfg), "--storage", url, "--study", "shared", "--out", str(tmp_path / "w1")),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        mine = run_search(yaml.safe_load(cfg.read_text()) | {"storage": url, "study": "shared",
                                                              "out": str(tmp_path / "w0")}, progress=False)
    finally:
        _, err = other.communicate(timeout=300)
    assert other.returncode == 0, err[-2000:]
    assert mine.summary["queries"] == budget  # each worker's results hold every worker's queries
    return optuna.load_study(study_name="shared", storage=url).get_trials(deepcopy=False)


def check_shared_study(trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """No trial lost (none left running, every failure is a deliberate yield), none duplicated
    (each arch queried once), and the budget met exactly."""
    states = {t.state for t in trials}
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    assert all(t.user_attrs.get("yielded") for t in trials if t.state == optuna.trial.TrialState.FAIL)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    queries = [t for t in trials if t.user_attrs.get("query")]
    assert len(queries) == budget
    assert len({arch_of(t) for t in queries}) == budget
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in queries)


def test_two_workers_share_one_sqlite_study(tmp_path):
    trials = run_workers(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", "optuna-tpe", budget=30)
    check_shared_study(trials, 30)


def test_two_workers_share_one_postgresql_study(tmp_path, postgres_url):  # noqa: F811
    trials = run_workers(tmp_path, postgres_url, "optuna-nsga2", budget=30)
    check_shared_study(trials, 30)
    workers = {t.user_attrs["worker"] for t in trials if t.user_attrs.get("query")}
    assert 1 <= len(workers) <= 2


@pytest.mark.slow
def test_one_evolution_worker_per_study(tmp_path):
    """A second evolution worker on a study held by a live one is refused; a killed
    worker's hold is released at once on its own machine."""
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    cfg = write_config(tmp_path / "s.yaml", budget=400, controller={"name": "evolution", "surrogate": "none"})
    proc = subprocess.Popen(cli(str(cfg), "--storage", url, "--study", "s", "--out", str(tmp_path / "a")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while count_trials(db) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None
    config = yaml.safe_load(cfg.read_text()) | {"storage": url, "study": "s", "out": str(tmp_path / "b")}
    try:
        with pytest.raises(NasError, match="being searched by another worker"):
            run_search(config, progress=False)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run_search(config, progress=False).summary["queries"] == 400


def test_an_unreachable_storage_is_a_one_line_error(tmp_path):
    config = yaml.safe_load(write_config(tmp_path / "s.yaml", budget=3).read_text())
    with pytest.raises(NasError, match="cannot open it"):
        run_search(config | {"storage": "postgresql+psycopg2://nobody@127.0.0.1:1/none", "out": str(tmp_path / "o")},
                   progress=False)
    with pytest.raises(NasError, match="cannot open it"):
        run_search(config | {"storage": "nosuchdb://x/y", "out": str(tmp_path / "o")}, progress=False)
