"""The `hwnas` command: a thin layer over the Python API.

Each subsystem registers its own subcommands (a `register(commands, bench)` function in
its `commands` module), so the root only wires them together and turns user mistakes
(NasError) into one line on stderr and exit code 2; argparse usage errors also exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from nas.errors import NasError

COMMAND_MODULES = ("nas.space.commands", "nas.hardware.commands", "nas.supernet.commands", "nas.predictors.commands",
                   "nas.search.commands", "nas.experiment.commands", "nas.export.commands")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        args.run(args)
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
    bench = commands.add_parser("bench", help="benchmarks (the README's figures)")
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
                        help="torch intra-op threads per process (default: torch's choice; 1 on a busy machine)")


def set_torch_threads(threads: int | None) -> None:
    """`--threads` and an experiment's `threads:`. torch's default of one OpenMP thread per
    core thrashes when other jobs share the cores: on the busy 2-core VM, training with 2
    threads ran up to 30x slower than with 1. Also exported as OMP_NUM_THREADS, so worker
    processes started from here inherit it."""
    if threads is None:
        return
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    sys.exit(main())
