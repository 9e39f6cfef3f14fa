"""`hwnas bench search`: controllers against real device measurements (public benchmark tables).

The tables are the oracle. The budget counts accuracy queries; costs are cheap and
known for every arch, as they are from a LUT or a predictor. Two tasks per cost column:

- constrained: best accuracy with cost <= T (T: a budget, or a percentile of the
  column). Regret = the true optimum under T minus the best found, in accuracy points.
- front: accuracy vs cost. Hypervolume ratio = the found front's hypervolume over the
  true front's, reference point (0 accuracy, the column's largest cost).

Every controller runs through the same search loop as `hwnas search` (in-memory
study), with seeds 0..S-1. Archs whose cost is missing in the table (the Edge TPU's
models that did not compile) cannot be deployed and count as infeasible.
"""
from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from nas.errors import NasError, unknown_key
from nas.predictors.energy import ColumnCost
from nas.search.ledger import Ledger
from nas.search.objectives import Constraint, Objective
from nas.search.pareto import hypervolume
from nas.search.problem import Problem, enumerate_codes
from nas.search.runner import search
from nas.sources import Metric
from nas.space import load_space
from nas.space.base import SearchSpace

if TYPE_CHECKING:
    from nas.predictors.tables import ArchTable

TASKS = ("constrained", "front")
DEFAULT_QUERIES = {"constrained": 100, "front": 300}


def bench_controllers() -> list[str]:
    """The registered controllers that spend queries on a study (all but the differentiable one), by name."""
    from nas.search.controllers import controller_class, controller_names

    return sorted(n for n in controller_names() if controller_class(n).records_queries)


def unit_of(column: str) -> str:
    return "ms" if column.endswith("latency") else "mJ" if column.endswith("energy") else ""


def cost_columns(tables: Sequence[ArchTable], patterns: Sequence[str]) -> list[tuple[ArchTable, str]]:
    """(table, column) for every column matching one of the patterns (fnmatch: '*_latency')."""
    found: list[tuple[ArchTable, str]] = []
    available: list[str] = []
    for table in tables:
        available += table.value_columns
        found += [(table, c) for c in table.value_columns if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(c, p) for _, c in found)]
    if missing:
        raise NasError(f"no cost column matches {missing[0]!r}; columns: {', '.join(available)}")
    return found


class TableTask:
    """One cost column: the problem's metrics and the true optimum and front from the tables."""

    def __init__(self, space: SearchSpace, accuracy: ColumnCost, cost_table: ArchTable, column: str) -> None:
        self.space, self.column = space, column
        self.accuracy = Metric("accuracy", accuracy, queried=True)
        self.cost = Metric(column, ColumnCost(cost_table, column, column, unit_of(column)), queried=False)
        codes = np.vstack(list(enumerate_codes(space)))
        self.all_acc, self.all_cost = accuracy.predict(codes), self.cost.model.predict(codes)
        self.known = np.isfinite(self.all_acc) & np.isfinite(self.all_cost)
        self.reference = np.array([0.0, float(self.all_cost[self.known].max())])
        self.true_hv = hypervolume(np.c_[-self.all_acc[self.known], self.all_cost[self.known]],
                                   np.array([0.0, self.reference[1]]))

    def budget(self, budget: float | None, percentile: float) -> float:
        return float(budget if budget is not None else np.percentile(self.all_cost[self.known], percentile))

    def optimum(self, budget: float) -> float:
        return float(self.all_acc[self.known & (self.all_cost <= budget)].max())

    def problem(self, task: str, budget: float) -> Problem:
        metrics = {"accuracy": self.accuracy, self.column: self.cost}
        if task == "constrained":
            constraint = Constraint(self.column, True, f"{budget} {self.cost.unit}".strip())
            return Problem(self.space, [Objective("accuracy", "maximize")], [constraint], metrics)
        return Problem(self.space, [Objective("accuracy", "maximize"), Objective(self.column, "minimize")], [], metrics)


def bench_search(acc_table: Path, cost_tables: Sequence[Path], patterns: Sequence[str], *, space: str = "nb201",
                 acc_column: str | None = None, budget: float | None = None, percentile: float = 30.0,
                 queries: int | None = None, seeds: int = 10, controllers: Sequence[str] | None = None,
                 tasks: Sequence[str] = TASKS, progress: bool = True) -> dict[str, Any]:
    """Regret and hypervolume ratio of each controller on each cost column (see the module doc)."""
    known = bench_controllers()
    controllers = known if controllers is None else list(controllers)
    for c in controllers:
        if c not in known:
            raise NasError(unknown_key(c, known, "controller") + " (the benchmark runs controllers that query)")
    for t in tasks:
        if t not in TASKS:
            raise NasError(f"unknown task {t!r}; choose {', '.join(TASKS)}")
    s = load_space(space)
    from nas.predictors.tables import read_table

    acc = read_table(acc_table, s)
    if acc_column is None:
        if len(acc.value_columns) != 1:
            raise NasError(f"{acc_table} has value columns {', '.join(acc.value_columns)}; name one with --acc-column")
        acc_column = acc.value_columns[0]
    accuracy = ColumnCost(acc, acc_column, "accuracy", "%")
    columns = cost_columns([read_table(p, s) for p in cost_tables], patterns)
    runs = [(table, column, task, c, seed) for table, column in columns for task in tasks for c in controllers
            for seed in range(seeds)]
    bar = tqdm(total=len(runs), desc="bench search", unit="run", disable=not progress)
    report: dict[str, Any] = {"space": s.name, "acc_table": str(acc_table), "seeds": seeds, "columns": {}}
    for table, column in columns:
        task_data = TableTask(s, accuracy, table, column)
        t_budget = task_data.budget(budget, percentile)
        entry: dict[str, Any] = {"table": ", ".join(table.sources), "budget": t_budget, "unit": unit_of(column),
                                 "optimum": task_data.optimum(t_budget), "controllers": {}}
        for c in controllers:
            row: dict[str, Any] = {}
            for task in tasks:
                n_queries = queries or DEFAULT_QUERIES[task]
                scores, seconds = [], []
                for seed in range(seeds):
                    problem = task_data.problem(task, t_budget)
                    start = time.perf_counter()
                    result = search(problem, c, {}, seed, n_queries, Ledger(problem, None, "bench", {}), progress=False)
                    seconds.append(time.perf_counter() - start)
                    if task == "constrained":
                        best = result.best()
                        found = result.values["accuracy"][best] if best is not None else 0.0
                        scores.append(entry["optimum"] - float(found))
                    else:
                        scores.append(result.hypervolume(task_data.reference) / task_data.true_hv)
                    bar.update(1)
                key = "regret" if task == "constrained" else "hv_ratio"
                row[f"{key}_median"] = float(np.median(scores))
                row[key] = [round(x, 4) for x in scores]
                row[f"{task}_queries"] = n_queries
                row[f"{task}_seconds_median"] = float(np.median(seconds))
            entry["controllers"][c] = row
        report["columns"][column] = entry
    bar.close()
    report["summary"] = _summary(report, controllers, tasks)
    return report


def _summary(report: dict[str, Any], controllers: Sequence[str], tasks: Sequence[str]) -> dict[str, Any]:
    """Per controller: the worst column's median and the median over every column and seed."""
    out: dict[str, Any] = {}
    for c in controllers:
        row: dict[str, Any] = {}
        for task, key in (("constrained", "regret"), ("front", "hv_ratio")):
            if task not in tasks:
                continue
            per_column = [e["controllers"][c][f"{key}_median"] for e in report["columns"].values()]
            every = [x for e in report["columns"].values() for x in e["controllers"][c][key]]
            row[f"{key}_median"] = float(np.median(every))
            row[f"{key}_worst_column"] = float(max(per_column) if key == "regret" else min(per_column))
        out[c] = row
    return out


def format_report(report: dict[str, Any]) -> str:
    """A text table: one row per cost column, regret and hypervolume ratio per controller."""
    controllers = list(report["summary"])
    lines = []
    has = {k: any(f"{k}_median" in r for e in report["columns"].values() for r in e["controllers"].values())
           for k in ("regret", "hv_ratio")}
    for key, title in (("regret", "median regret (accuracy points) at the budget"),
                       ("hv_ratio", "median hypervolume ratio")):
        if not has[key]:
            continue
        lines.append(f"{title}, {report['seeds']} seeds:")
        lines.append(f"  {'cost column':<22}{'budget':>12}  " + "".join(f"{c:>14}" for c in controllers))
        for column, e in report["columns"].items():
            budget = f"{e['budget']:.3g} {e['unit']}" if key == "regret" else ""
            lines.append(f"  {column:<22}{budget:>12}  " + "".join(
                f"{e['controllers'][c][f'{key}_median']:>14.{2 if key == 'regret' else 4}f}" for c in controllers))
        lines.append(f"  {'all columns and seeds':<22}{'':>12}  " + "".join(
            f"{report['summary'][c][f'{key}_median']:>14.{2 if key == 'regret' else 4}f}" for c in controllers))
    return "\n".join(lines)


def scoring_speed(space_name: str, device: str, n: int = 50_000, repeats: int = 5) -> dict[str, Any]:
    """Seconds for one evolution generation's candidate work on `n` children: breed them,
    project onto one code per network, drop evaluated ones, score latency (a LUT, or a
    shipped predictor for the public tables' devices), energy where the device has it,
    params and peak memory, and filter on budgets over all of them (pinned to one core:
    the figure is per core)."""
    from nas.bench.space import median_seconds, pin_one_core
    from nas.search.controllers.evolution import Evolution
    from nas.search.objectives import parse_constraint, parse_objective
    from nas.sources import resolve_metrics

    cpu = pin_one_core()
    space = load_space(space_name)
    latency, energy = f"latency@{device}", f"energy@{device}"
    try:
        resolve_metrics(space, [energy], {})
        bounded = [energy, "params", "peak_memory"]
    except NasError:  # a device with a latency predictor only
        bounded = ["params", "peak_memory"]
    probe = Problem.build(space, [parse_objective(f"min {latency}", "bench")],
                          [parse_constraint(f"{m} <= 1", "bench") for m in bounded])
    sample = probe.cheap(space.sample_codes(0, 4096))
    budgets = [parse_constraint(f"{m} <= {np.median(sample[m])}", "bench") for m in bounded]
    problem = Problem(space, probe.objectives, budgets, probe.metrics)
    controller = Evolution(Evolution.Settings(pool=n, surrogate="none"), seed=0)
    controller.start(problem)
    parents = space.sample_codes(1, 20)
    seconds = median_seconds(lambda: controller.candidates(controller.breed(parents)), repeats)
    kept = len(controller.candidates(controller.breed(parents))[0])
    return {"space": space.name, "n": n, "seconds": seconds, "feasible_kept": kept,
            "metrics": list(problem.metrics), "cpu": cpu}
