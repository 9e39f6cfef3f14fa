"""`hwnas search CONFIG`, `hwnas bench search` and `hwnas bench search-scoring`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nas.cli import Result, add_threads_argument, positive_int
from nas.redact import STORAGE_ENV


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    from nas.search.controllers import controller_names

    p = commands.add_parser("search", help="search archs against device budgets (resumes from its storage)",
                            description="Run the search a YAML config describes (controllers: "
                                        f"{', '.join(controller_names())}). Start the same command with the same "
                                        "--storage URL and --study NAME on several machines to share one study "
                                        "(Optuna controllers).")
    p.add_argument("config", type=Path, help="search config (YAML)")
    p.add_argument("--storage", help="Optuna storage URL (default: $HWNAS_STORAGE_URL, else the config's, else "
                                     "sqlite:///OUT/study.db); a URL with a password is better given through "
                                     "$HWNAS_STORAGE_URL, which other users cannot read from the process list")
    p.add_argument("--study", help="study name (default: the config's, else its file name)")
    p.add_argument("--budget", type=positive_int, help="queries of the expensive metrics (overrides the config)")
    p.add_argument("--seed", type=int, help="random seed (overrides the config)")
    p.add_argument("--out", type=Path, help="results folder (default: runs/search/STUDY)")
    p.add_argument("--verify", action="append", metavar="DEVICE",
                   help="re-measure the front's latency on DEVICE (this machine) and re-check the budgets "
                        "(repeatable; overrides the config's verify list)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_search)

    p = bench.add_parser("search", help="controllers on public device tables: regret and hypervolume ratio")
    p.add_argument("--acc-table", type=Path, required=True, help="accuracy table (e.g. nb201/cifar10_val_acc.csv)")
    p.add_argument("--acc-column", help="its accuracy column (default: its only value column)")
    p.add_argument("--cost-table", type=Path, nargs="+", required=True, help="table(s) holding the cost columns")
    p.add_argument("--cost-column", required=True,
                   help="cost column(s), comma-separated; shell patterns allowed ('*_latency')")
    p.add_argument("--space", default="nb201", help="the tables' space (default nb201)")
    p.add_argument("--budget-ms", type=float, help="the constrained task's budget (default: --budget-percentile)")
    p.add_argument("--budget-percentile", type=float, default=30.0, help="budget at this percentile (default 30)")
    p.add_argument("--queries", type=positive_int, help="accuracy queries per run (default 100 constrained, 300 front)")
    p.add_argument("--seeds", type=positive_int, default=10, help="seeds 0..S-1 (default 10)")
    p.add_argument("--controllers", help="comma-separated registered controllers that query a study "
                                         "(default: all of them)")
    p.add_argument("--tasks", default="constrained,front", help="constrained, front or both (default both)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_bench_search)

    p = bench.add_parser("controller", help="the evolution controller's own seconds per query (vs the query's)")
    p.add_argument("--supernet", type=Path, metavar="DIR", help="a trained supernet run folder: accuracy queries")
    p.add_argument("--acc-table", type=Path, help="or a public accuracy table (free queries: all is overhead)")
    p.add_argument("--cost-table", type=Path, help="the table with --cost-column (budget: its 30th percentile)")
    p.add_argument("--cost-column", default="edgegpu_latency")
    p.add_argument("--budget", type=positive_int, help="queries (default: the quickstart's, 40)")
    p.add_argument("--population", type=positive_int, help="evolution population (default: the quickstart's, 12)")
    p.add_argument("--init", type=positive_int, help="random archs first (default: the quickstart's, 8)")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..S-1 (default 3)")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_controller)

    p = bench.add_parser("search-scoring", help="seconds to score N candidate archs on cheap costs (vectorised)")
    p.add_argument("--space", default="ofa_mbv3")
    p.add_argument("--device", default="local-cpu", help="device whose LUT scores latency (and energy)")
    p.add_argument("-n", type=positive_int, default=50_000)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_scoring)


def _search(args: argparse.Namespace) -> Result:
    from nas.search.config import load_search_config
    from nas.search.run import run_search
    from nas.search.verify import lines as verify_lines

    overrides = {"storage": args.storage or os.environ.get(STORAGE_ENV), "study": args.study, "budget": args.budget, "seed": args.seed,
                 "out": str(args.out) if args.out else None, "verify": args.verify}
    run = run_search(load_search_config(args.config, overrides), progress=not args.quiet)
    s = run.summary
    for name, count in {**s.get("nan", {}), **s.get("nan_queried", {})}.items():
        print(f"hwnas: note: {name} had no value (NaN) for {count} arch(s); they count as infeasible", file=sys.stderr)
    lines = [*run.result.lines(s), *(verify_lines(s["verified"]) if "verified" in s else []),
             "wrote " + ", ".join(str(f) for f in run.files)]
    return Result(s, "\n".join(lines))


def _bench_search(args: argparse.Namespace) -> Result:
    from nas.search.bench import bench_search, format_report

    report = bench_search(args.acc_table, args.cost_table, [c for c in args.cost_column.split(",") if c],
                          space=args.space, acc_column=args.acc_column, budget=args.budget_ms,
                          percentile=args.budget_percentile, queries=args.queries, seeds=args.seeds,
                          controllers=[c for c in args.controllers.split(",") if c] if args.controllers else None,
                          tasks=[t for t in args.tasks.split(",") if t], progress=not args.quiet)
    return Result(report, format_report(report))


def _bench_scoring(args: argparse.Namespace) -> Result:
    from nas.search.bench import scoring_speed

    row = scoring_speed(args.space, args.device, args.n, args.repeats)
    return Result(row, f"{row['space']}: {row['n']:,} candidates bred, projected and scored on "
                       f"{', '.join(row['metrics'])} and filtered in {row['seconds']:.3f} s ({row['cpu']})")


def _bench_controller(args: argparse.Namespace) -> Result:
    import numpy as np

    from nas.errors import NasError
    from nas.search import overhead
    from nas.threads import configure

    if (args.supernet is None) == (args.acc_table is None):
        raise NasError("give either --supernet DIR or --acc-table (with --cost-table)")
    if args.acc_table is not None and args.cost_table is None:
        raise NasError("--acc-table needs --cost-table")
    configure(args.threads)
    settings = {**overhead.QUICKSTART, **{k: v for k in ("population", "init") if (v := getattr(args, k))}}
    budget = args.budget or overhead.QUICKSTART_BUDGET
    rows = []
    for seed in range(args.seeds):
        problem = (overhead.supernet_problem(args.supernet) if args.supernet else
                   overhead.table_problem(args.acc_table, args.cost_table, args.cost_column))
        rows.append({"seed": seed, **overhead.controller_overhead(problem, settings, budget, seed)})
    keys = ("controller_s_per_query", "query_s_per_query", "study_s_per_query", "controller_share")
    median = {k: None if rows[0][k] is None else float(np.median([r[k] for r in rows])) for k in keys}
    data = {"problem": str(args.supernet or args.cost_column), "settings": settings, "budget": budget, "runs": rows,
            "median": median}
    text = "\n".join(f"seed {r['seed']}: controller {r['controller_s_per_query'] * 1e3:.1f} ms/query, query "
                     f"{r['query_s_per_query'] * 1e3:.1f} ms, study {r['study_s_per_query'] * 1e3:.1f} ms, slowest ask "
                     f"{r['slowest_ask_s'] * 1e3:.0f} ms" for r in rows)
    share = "" if median["controller_share"] is None else f" = {median['controller_share'] * 100:.1f} % of a query"
    text += (f"\nmedian: controller {median['controller_s_per_query'] * 1e3:.1f} ms per query{share} "
             f"({rows[-1]['parallelism']})")
    return Result(data, text)
