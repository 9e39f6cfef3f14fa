"""`hwnas run EXP.yaml` and `hwnas runs list|show|compare`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nas.cli import Result

STEP_NAMES = ("profile", "train", "search", "export")


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="run an experiment: profile -> train -> search -> export, report (resumes)",
        description="Run the experiment a YAML file describes. Rerunning the same config resumes its latest "
                    "unfinished run; finished steps are never redone (their outputs are cached by a hash of "
                    "their inputs).")
    p.add_argument("config", type=Path, help="experiment YAML (see experiments/)")
    p.add_argument("--check", action="store_true", help="validate the config and show the plan; run nothing")
    p.add_argument("--new", action="store_true", help="start a new run even if an unfinished one exists")
    p.add_argument("--from", dest="from_step", choices=STEP_NAMES,
                   help="new run that recomputes this step and the later ones (earlier ones come from the cache)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="results folder (default runs/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_run)

    runs = commands.add_parser("runs", help="results of experiment runs: list, show, compare")
    cmds = runs.add_subparsers(title="runs commands", metavar="ACTION", required=True)
    q = cmds.add_parser("list", help="every run under runs/, oldest first")
    q.add_argument("--runs", type=Path, default=Path("runs"))
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=_list)
    q = cmds.add_parser("show", help="one run: settings, steps, best arch")
    q.add_argument("run_ref", metavar="RUN", help="run id, unique id prefix, or folder")
    q.add_argument("--runs", type=Path, default=Path("runs"))
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=_show)
    q = cmds.add_parser("compare", help="runs side by side: settings and outcomes")
    q.add_argument("run_refs", nargs="+", metavar="RUN")
    q.add_argument("--runs", type=Path, default=Path("runs"))
    q.add_argument("--json", action="store_true")
    q.add_argument("--csv", type=Path, metavar="FILE", help="also save the comparison as CSV, one row per run")
    q.set_defaults(run=_compare)


def _run(args: argparse.Namespace) -> Result:
    if args.check:
        from nas.experiment.plan import plan_lines
        from nas.experiment.schema import load_experiment

        exp = load_experiment(args.config)
        lines = plan_lines(exp, args.config)
        return Result(lines, "\n".join(lines))
    from nas.experiment.runner import run_experiment

    run = run_experiment(args.config, args.runs, new=args.new, from_step=args.from_step, progress=not args.quiet,
                         echo=lambda line: print(line, file=sys.stderr, flush=True))
    from nas.experiment.runs import run_facts, show_lines

    return Result(run_facts(run), "\n".join(show_lines(run)))


def _list(args: argparse.Namespace) -> Result:
    from nas.experiment.rundir import all_runs
    from nas.experiment.runs import format_table, list_table, listed_facts

    runs = all_runs(args.runs)
    return Result([listed_facts(r) for r in runs],
                  "\n".join(format_table(*list_table(runs))) if runs else f"no runs under {args.runs}")


def _show(args: argparse.Namespace) -> Result:
    from nas.experiment.rundir import find_run
    from nas.experiment.runs import run_facts, show_lines

    run = find_run(args.runs, args.run_ref)
    return Result(run_facts(run), "\n".join(show_lines(run)))


def _compare(args: argparse.Namespace) -> Result:
    from nas.experiment.rundir import find_run
    from nas.experiment.runs import compare_dataframe, compare_table, format_table, run_facts

    runs = [find_run(args.runs, ref) for ref in args.run_refs]
    if args.csv:
        from nas.atomic import write_atomic

        write_atomic(args.csv, compare_dataframe(runs).to_csv(lineterminator="\n"))
        print(f"wrote {args.csv}", file=sys.stderr)
    return Result([run_facts(r) for r in runs], "\n".join(format_table(*compare_table(runs))))
