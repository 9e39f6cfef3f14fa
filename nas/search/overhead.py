"""`hwnas bench controller`: the evolution controller's own time per query.

A query to a supernet costs about a second on one core; the controller's breeding,
cheap scoring, GP fit and acquisition must stay a small fraction of it (issue 16: under
10 % at the quickstart's settings), and must not grow with the load on the machine
more than the query does. The controller runs its normal ask/tell loop against an
in-memory study; its `ask` and `tell`, the problem's queries and the rest (the study's
bookkeeping) are timed separately. Two problems: a public table (NB201 accuracy as
the queried metric, a device's latency column as a budget at its 30th percentile:
queries are free, so everything measured is overhead) and a trained supernet
(inherited-weight accuracy queried, MACs and params budgeted at their medians, as the
quickstart budgets latency and energy).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.search.ledger import Ledger
from nas.search.problem import Problem

# the quickstart's search (experiments/quickstart.yaml): the settings whose overhead counts
QUICKSTART = {"population": 12, "init": 8}
QUICKSTART_BUDGET = 40


def _timed(clock: dict[str, float], key: str, fn: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[key] += time.perf_counter() - start

    return wrapper


def controller_overhead(problem: Problem, settings: dict[str, Any], budget: int, seed: int) -> dict[str, Any]:
    """Seconds per query: the controller's own (ask + tell), the query's, the study's."""
    from nas.search.controllers.evolution import Evolution
    from nas.threads import current

    controller = Evolution(Evolution.Settings(**settings), seed=seed)
    clock = {"ask": 0.0, "tell": 0.0, "query": 0.0}
    asks: list[float] = []

    def ask(n: int, _ask=controller.ask) -> np.ndarray:
        start = time.perf_counter()
        out = _ask(n)
        asks.append(time.perf_counter() - start)
        clock["ask"] += asks[-1]
        return out

    controller.ask = ask  # instance attributes: the loop calls self.ask / self.tell
    controller.tell = _timed(clock, "tell", controller.tell)
    problem.query = _timed(clock, "query", problem.query)
    ledger = Ledger(problem, None, "bench", {})
    start = time.perf_counter()
    result = controller.search(problem, ledger, budget, progress=False)
    total = time.perf_counter() - start
    queries = max(1, int(result.stats.get("queries", 0)))
    own = clock["ask"] + clock["tell"]
    parallel = current()
    return {"queries": queries, "controller_s_per_query": own / queries, "query_s_per_query": clock["query"] / queries,
            "study_s_per_query": (total - own - clock["query"]) / queries, "slowest_ask_s": max(asks, default=0.0),
            "controller_share": own / clock["query"] if clock["query"] > 1e-3 * queries else None, "total_s": total,
            "parallelism": parallel.summary() if parallel else None}


def table_problem(acc_table: Path, cost_table: Path, column: str, space: str = "nb201") -> Problem:
    """Constrained search on public tables: accuracy queried, `column` <= its 30th percentile."""
    from nas.predictors.energy import ColumnCost
    from nas.predictors.tables import read_table
    from nas.search.bench import TableTask
    from nas.space import load_space

    s = load_space(space)
    acc = read_table(acc_table, s)
    task = TableTask(s, ColumnCost(acc, acc.value_columns[0], "accuracy", "%"), read_table(cost_table, s), column)
    return task.problem("constrained", task.budget(None, 30.0))


def supernet_problem(run_dir: Path, split: str = "val") -> Problem:
    """Accuracy from a trained supernet (queried), MACs and params at most their medians."""
    from nas.search.objectives import parse_constraint, parse_objective
    from nas.sources import Metric, resolve_metrics
    from nas.supernet.oracle import SupernetAccuracy

    oracle = SupernetAccuracy(run_dir, split)
    space = oracle.space
    metrics = {"accuracy": Metric("accuracy", oracle, queried=True), **resolve_metrics(space, ["macs", "params"], {})}
    sample = space.sample_codes(np.random.default_rng(0), 4096)
    budgets = [parse_constraint(f"{m} <= {float(np.median(metrics[m].model.predict(sample)))}", "bench")
               for m in ("macs", "params")]
    return Problem(space, [parse_objective("max accuracy", "bench")], budgets, metrics)
