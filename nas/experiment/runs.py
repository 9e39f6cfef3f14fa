"""`hwnas runs list|show|compare`: the results store as tables.

Everything is read from the run folders (run.json, step.json of each step, the search
summary), so a table always shows what is on disk, including runs that were killed.
`compare_dataframe` gives the comparison as a pandas DataFrame, one row per run with
numbers as numbers, which `hwnas runs compare --csv FILE` saves.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError
from nas.experiment.rundir import Run
from nas.experiment.schema import STEPS

if TYPE_CHECKING:
    import pandas

MARKS = {"finished": "done", "done": "done", "cached": "cached", "skipped": "-", "running": "partial",
         "not started": ""}


def run_facts(run: Run) -> dict[str, Any]:
    """One run's headline facts: state, steps, best arch and its metrics, wall time."""
    state = run.read()
    steps = state.get("steps", {})
    facts: dict[str, Any] = {"id": run.id, "name": state.get("name"), "status": state.get("status"),
                             "created": state.get("created"), "error": state.get("error"),
                             "steps": {s: steps.get(s, {}).get("status", "not started") for s in STEPS},
                             "seconds": sum(v.get("seconds", 0.0) for v in steps.values()
                                            if v.get("status") == "finished")}
    exp = _json(run.path / "experiment.json") or {}
    trains = bool((exp.get("accuracy") or {}).get("supernet"))
    facts.update({"space": exp.get("space"), "dataset": (exp.get("dataset") or {}).get("source") if trains else None,
                  "budgets": exp.get("budgets", []), "objectives": exp.get("objectives", []),
                  "controller": _controller((exp.get("search") or {}).get("controller"))})
    search = (_json(run.path / "search" / "step.json") or {}).get("result", {}).get("summary") or {}
    facts["queries"], facts["feasible"] = search.get("queries"), search.get("feasible")
    best = search.get("best") or {}
    facts["best"] = best.get("arch_id")
    facts["metrics"] = best.get("metrics", {})
    train = (_json(run.path / "train" / "step.json") or {}).get("result", {})
    facts["train"] = train.get("last", {})
    export = (_json(run.path / "export" / "step.json") or {}).get("result", {})
    facts["exported"] = export.get("arch_id")
    return facts


def listed_facts(run: Run) -> dict[str, Any]:
    """run_facts, or the reason a damaged run folder cannot be read: one must not hide the others."""
    try:
        return run_facts(run)
    except NasError as exc:
        return {"id": run.id, "status": "unreadable", "error": str(exc)}


def list_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "status", *STEPS, "best arch", "first objective", "seconds"]
    rows = []
    for run in runs:
        f = listed_facts(run)
        if f["status"] == "unreadable":
            rows.append([run.id, "unreadable", *([""] * len(STEPS)), "", f["error"][:40], ""])
            continue
        first = _first_objective(f)
        rows.append([f["id"], f["status"], *(MARKS.get(f["steps"][s], f["steps"][s]) for s in STEPS),
                     f["best"] or "", first, f"{f['seconds']:.0f}"])
    return header, rows


def show_lines(run: Run) -> list[str]:
    f = run_facts(run)
    lines = [f"run       {f['id']} ({run.path})", f"status    {f['status']}" + (f": {f['error']}" if f["error"] else ""),
             f"created   {f['created']}", f"space     {f['space']}" + (f" on {f['dataset']}" if f["dataset"] else ""),
             f"budgets   {'; '.join(f['budgets']) or 'none'}", f"objectives {', '.join(map(str, f['objectives']))}",
             f"controller {f['controller']}", ""]
    state = run.read()
    header = ["step", "status", "seconds", "input hash", "note"]
    rows = []
    for s in STEPS:
        st = state["steps"].get(s, {})
        seconds = f"{st['seconds']:.1f}" if isinstance(st.get("seconds"), (int, float)) else ""
        rows.append([s, st.get("status", "not started"), seconds, st.get("key", ""),
                     f"from run {st['cached_from']}" if st.get("cached_from") else ""])
    lines += format_table(header, rows)
    if f["best"]:
        lines += ["", f"best arch {f['best']} ({f['queries']} queries, {f['feasible']} feasible)"]
        lines += format_table(["metric", "value"], [[k, _fmt(v)] for k, v in f["metrics"].items()])
    if (run.path / "report.html").is_file():
        lines += ["", f"report    {run.path / 'report.html'}"]
    return lines


def compare_records(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One record per run, settings then outcomes, values as read (numbers stay numbers, None
    where a run has no value): the rows of compare_dataframe, the columns of compare_table."""
    facts = [run_facts(r) for r in runs]
    metrics = list(dict.fromkeys(m for f in facts for m in f["metrics"]))
    train_keys = list(dict.fromkeys(k for f in facts for k in f["train"] if k.startswith("val_acc")))
    return [{"run": f["id"], "status": f["status"], "space": f["space"], "dataset": f["dataset"],
             "budgets": "; ".join(f["budgets"]), "controller": f["controller"],
             **{f"train {k}": f["train"].get(k) for k in train_keys},
             "queries": f["queries"], "feasible": f["feasible"], "best arch": f["best"],
             **{m: f["metrics"].get(m) for m in metrics}, "seconds": f["seconds"]} for f in facts]


def compare_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """Rows are facts (settings, then outcomes), columns are runs."""
    records = compare_records(runs)
    text = {"space": str, "dataset": str, "best arch": lambda v: v or "", "seconds": lambda v: f"{v:.0f}"}
    keys = [k for k in (records[0] if records else {}) if k != "run"]
    rows = [[k, *(text.get(k, _fmt)(r[k]) for r in records)] for k in keys]
    return ["", *(r["run"] for r in records)], rows


def compare_dataframe(runs: Sequence[Run]) -> pandas.DataFrame:
    """The runs side by side as a DataFrame: one row per run, indexed by run id."""
    import pandas as pd

    return pd.DataFrame(compare_records(runs)).set_index("run")


def format_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Plain aligned columns (numbers right-aligned)."""
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if _numeric(c) else str(c).ljust(w) for c, w in zip(row, widths)).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _first_objective(f: dict[str, Any]) -> str:
    if not f["objectives"] or not f["metrics"]:
        return ""
    first = f["objectives"][0]
    metric = first.get("metric") if isinstance(first, dict) else str(first).split()[-1]
    value = f["metrics"].get(metric)
    return f"{metric} {_fmt(value)}" if value is not None else ""


def _controller(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name"))
    return str(value or "evolution")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _numeric(text: Any) -> bool:
    try:
        float(str(text).replace(",", ""))
    except ValueError:
        return False
    return True


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
