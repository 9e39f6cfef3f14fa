"""A finished search as files: every queried arch, the front, a summary and a plot.

    archs.csv      one row per queried arch: order, id, arch, every metric, feasible, on the front
    front.csv      the feasible Pareto front (one objective: the best feasible arch)
    summary.json   problem, controller, queries, best arch, front, hypervolume and its reference
    front.png      the objectives of every queried arch, the front highlighted
    front_verified.csv  with `verify`: the front's predicted and measured latency (nas.search.verify)

Each file is written to a temporary name and renamed, so an interrupted write never
leaves a half-written file behind. The same tables come as pandas DataFrames, as Optuna's
`study.trials_dataframe()` gives a study's: `trials_dataframe(result)` (archs.csv) and
`front_dataframe(result)` (front.csv), with numbers as numbers and NaN where a metric is unknown.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.atomic import atomic_path, write_atomic
from nas.search.runner import SearchResult
from nas.search.units import format_quantity
from nas.space.base import SearchSpace

if TYPE_CHECKING:
    import pandas

SCHEMA = "hwnas.search/1"


def arch_text(space: SearchSpace, codes: np.ndarray) -> str:
    """The arch as its space writes it: the NB201 string, else canonical JSON."""
    return space.format_arch(space.decode(codes))


def default_reference(result: SearchResult) -> np.ndarray:
    """Hypervolume reference per objective, in the metric's units: the constraint bound
    where one bounds the metric, else the worst value any queried arch reached."""
    p = result.problem
    ref = []
    for o in p.objectives:
        bounds = [c.bound for c in p.constraints if c.metric == o.metric and c.upper == (o.direction == "minimize")]
        values = result.values[o.metric][np.isfinite(result.values[o.metric])]
        worst = (values.max() if o.direction == "minimize" else values.min()) if len(values) else np.nan
        ref.append(bounds[0] if bounds else worst)
    return np.array(ref, dtype=np.float64)


def summarize(result: SearchResult, controller: str, seed: int, budget: int,
              reference: np.ndarray | None = None) -> dict[str, Any]:
    p = result.problem
    space = p.space

    def row(i: int) -> dict[str, Any]:
        arch = space.decode(result.codes[i])
        return {"arch_id": arch.arch_id, "arch": arch_text(space, result.codes[i]),
                "metrics": {n: _num(result.values[n][i]) for n in p.metrics}}

    best = result.best()
    front = result.front()
    ref = default_reference(result) if reference is None else np.asarray(reference, dtype=np.float64)
    out: dict[str, Any] = {
        "schema": SCHEMA, "problem": p.describe(), "controller": controller, "seed": seed, "budget": budget,
        "queries": len(result.codes), "feasible": int(result.feasible.sum()), "stats": result.stats,
        "nan": {n: int(c) for n, c in p.nan_counts.items()},
        "nan_queried": {n: int(np.isnan(result.values[n]).sum()) for n in p.queried_names
                        if np.isnan(result.values[n]).any()},
        "best": row(best) if best is not None else None,
        "front": [row(int(i)) for i in front],
    }
    if np.all(np.isfinite(ref)):
        out["hypervolume"] = {"value": result.hypervolume(ref), "reference": ref.tolist()}
    return out


def trials_table(result: SearchResult) -> tuple[list[str], list[list[Any]]]:
    """Header and one row per queried arch in query order: query number, arch id, arch text,
    every metric (a float, NaN where it is unknown), feasible, on the front."""
    p = result.problem
    front = {int(i) for i in result.front()}
    names = list(p.metrics)
    feasible = result.feasible
    header = ["query", "arch_id", "arch", *names, "feasible", "front"]
    rows = [[i + 1, p.space.decode(codes).arch_id, arch_text(p.space, codes),
             *[float(result.values[n][i]) for n in names], bool(feasible[i]), i in front]
            for i, codes in enumerate(result.codes)]
    return header, rows


def trials_dataframe(result: SearchResult) -> pandas.DataFrame:
    """Every queried arch as a DataFrame (the rows of archs.csv), like Optuna's
    study.trials_dataframe(): filter, sort and plot a search without parsing its CSV."""
    import pandas as pd

    header, rows = trials_table(result)
    return pd.DataFrame(rows, columns=header)


def front_dataframe(result: SearchResult) -> pandas.DataFrame:
    """The feasible Pareto front as a DataFrame (the rows of front.csv), ordered by the first objective."""
    return trials_dataframe(result).iloc[result.front()].reset_index(drop=True)


def write_results(result: SearchResult, out: Path, summary: dict[str, Any]) -> list[Path]:
    """archs.csv, front.csv, summary.json and front.png in `out` (and front_verified.csv
    when the front was re-measured); returns the paths."""
    out = Path(out)
    header, rows = trials_table(result)
    rows = [[_cell(c) if isinstance(c, float) else c for c in row] for row in rows]
    text, front_text = _csv([header, *rows]), _csv([header, *(rows[int(i)] for i in result.front())])
    paths = [out / "archs.csv", out / "front.csv", out / "summary.json", out / "front.png"]
    write_atomic(paths[0], text)
    write_atomic(paths[1], front_text)
    if "verified" in summary:
        paths.append(out / "front_verified.csv")
        write_atomic(paths[-1], _verified_csv(summary["verified"]))
    summary = {**summary, "files": [str(x) for x in paths]}
    write_atomic(paths[2], json.dumps(summary, indent=2) + "\n")
    plot_front(result, paths[3])
    return paths


def _verified_csv(verified: dict[str, Any]) -> str:
    """One row per front arch: each verified metric predicted, measured (median, p10, p90)
    and the relative error, then whether every budget is met predicted and measured."""
    metrics = verified["metrics"]
    header = ["arch_id", *(f"{m} {k}" for m in metrics for k in ("predicted_ms", "measured_ms", "p10_ms", "p90_ms",
                                                                 "error")),
              "meets_predicted", "meets_measured", "arch"]
    rows = [[r["arch_id"], *(repr(r["latency"][m][k]) for m in metrics
                             for k in ("predicted_ms", "measured_ms", "p10_ms", "p90_ms", "error")),
             r["meets_predicted"], r["meets_measured"], r["arch"]] for r in verified["front"]]
    return _csv([header, *rows])


def plot_front(result: SearchResult, path: Path) -> None:
    """Scatter of the queried archs (two objectives: both; one: against its first budget, or
    the query order), feasible ones in colour, the front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = result.problem
    objs = p.objectives
    y_name = objs[0].metric
    if len(objs) > 1:
        x_name = objs[1].metric
        x = result.values[x_name]
    elif p.constraints:
        x_name = p.constraints[0].metric
        x = result.values[x_name]
    else:
        x_name, x = "query", np.arange(1, len(result.codes) + 1, dtype=np.float64)
    y = result.values[y_name]
    feasible = result.feasible
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    ax.scatter(x[~feasible], y[~feasible], s=10, c="0.75", label="infeasible")
    ax.scatter(x[feasible], y[feasible], s=12, c="tab:blue", label="feasible")
    front = result.front()
    if len(objs) > 1 and len(front):
        order = front[np.argsort(x[front])]
        ax.plot(x[order], y[order], "-o", c="tab:red", ms=4, label="Pareto front", drawstyle="steps-post")
    elif len(front):
        ax.scatter(x[front[:1]], y[front[:1]], s=60, marker="*", c="tab:red", label="best", zorder=3)
    for c in p.constraints:
        if c.metric == x_name:
            ax.axvline(c.bound, ls="--", c="k", lw=0.8, label=f"budget {format_quantity(c.bound, p.metrics[c.metric].unit)}")
    ax.set_xlabel(_label(p, x_name))
    ax.set_ylabel(_label(p, y_name))
    ax.set_title(f"{p.space.name}: {len(result.codes)} queried archs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _label(p, name: str) -> str:
    unit = p.metrics[name].unit if name in p.metrics else ""
    return f"{name} ({unit})" if unit and unit != "count" else name


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _cell(v: float) -> str:
    return repr(float(v)) if np.isfinite(v) else ""
