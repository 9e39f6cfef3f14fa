"""The `hwnas` command: a thin layer over the Python API.

Each subsystem registers its own subcommands (a `register(commands, bench)` function in
its `commands` module), so the root only wires them together and turns user mistakes
(NasError) into one line on stderr and exit code 2; argparse usage errors also exit 2.
Every command returns a `Result`, and only this module writes it to stdout: its data
as JSON with --json, its text otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nas.errors import NasError

@dataclass(frozen=True)
class Result:
    """What a command hands back: its data (JSON-ready; printed as JSON with --json) and
    its rendering for people (printed otherwise; None: the data as JSON either way, for
    commands whose output is JSON by nature)."""

    data: Any
    text: str | None = None

    def render(self, as_json: bool) -> str:
        return json.dumps(self.data, indent=2) if as_json or self.text is None else self.text


COMMAND_MODULES = ("nas.space.commands", "nas.hardware.commands", "nas.supernet.commands", "nas.predictors.commands",
                   "nas.search.commands", "nas.experiment.commands", "nas.export.commands",
                   "nas.prune.commands")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: Result = args.run(args)
        text = result.render(getattr(args, "json", False))
        if text:
            print(text)
    except NasError as exc:
        print(f"hwnas: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hwnas ... | head`
        sys.stderr.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    bench = commands.add_parser("bench", help="benchmarks (the figures in docs/benchmarks.md)")
    bench_cmds = bench.add_subparsers(title="benchmarks", metavar="BENCH", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands, bench_cmds)
    return parser


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int,
                        help="torch intra-op threads per process (default: the cores free at the start, "
                             "followed as other work comes and goes)")


if __name__ == "__main__":
    sys.exit(main())
