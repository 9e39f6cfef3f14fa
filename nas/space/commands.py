"""`hwnas space ...` and `hwnas bench space`: search spaces from the command line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nas.cli import positive_int, print_json
from nas.errors import NasError
from nas.space.arch import Arch
from nas.space.base import SearchSpace


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    space = commands.add_parser("space", help="search spaces: list, show, sample, stats")
    space_cmds = space.add_subparsers(title="space commands", metavar="ACTION", required=True)

    p = space_cmds.add_parser("list", help="shipped search spaces and reference networks")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(run=_space_list)

    p = space_cmds.add_parser("show", help="decisions, choices and size of a space")
    p.add_argument("space", help="a shipped space name or a path to a space YAML")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(run=_space_show)

    p = space_cmds.add_parser("sample", help="random architectures as JSON lines")
    p.add_argument("space", help="a shipped space name or a path to a space YAML")
    p.add_argument("-n", type=positive_int, default=1, help="number of archs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--costs", action="store_true", help="add params, MACs and memory to each line")
    p.set_defaults(run=_space_sample)

    p = space_cmds.add_parser("stats", help="params, MACs and memory of one architecture")
    p.add_argument("space", help="a shipped space name or a path to a space YAML")
    p.add_argument("arch", nargs="?", help="inline JSON, a JSON file, an NB201 arch string, max or min "
                                           "(optional for a space of one architecture)")
    p.add_argument("--resolution", type=positive_int, help="input resolution to count at (default: the arch's)")
    p.add_argument("--dtype", default="float32", help="activation/weight dtype for byte counts (default float32)")
    p.add_argument("--layers", action="store_true", help="also list every layer with its counts")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(run=_space_stats)

    p = bench.add_parser("space", help="sampling/encoding and counter throughput per space")
    p.add_argument("--spaces", default="tiny_mbconv,ofa_mbv3,proxyless,fbnet,fbnet_cifar,nb201",
                   help="comma-separated space names")
    p.add_argument("-n", type=positive_int, default=100_000, help="archs per batch (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(run=_bench_space)


# ----------------------------------------------------------------------------- space
def _space_list(args: argparse.Namespace) -> None:
    from nas.space import load_space, space_files

    rows = []
    for name, path in space_files().items():
        space = load_space(path)
        rows.append({"name": name, "type": type(space).__name__, "decisions": len(space.decisions),
                     "size": space.size, "distinct_size": space.distinct_size, "file": str(path)})
    if args.json:
        print_json(rows)
        return
    print(f"{'space':<22} {'type':<12} {'decisions':>9}  {'size':>15}  distinct networks")
    for r in rows:
        print(f"{r['name']:<22} {r['type']:<12} {r['decisions']:>9}  {_size(r['size']):>15}  {_size(r['distinct_size'])}")


def _size(n: int) -> str:
    from decimal import Decimal  # exact: a size beyond a float's range (4**1000) cannot go through float

    return f"{n:,}" if n < 10**12 else f"{Decimal(n):.3e}"


def _space_show(args: argparse.Namespace) -> None:
    from nas.space import load_space

    space = load_space(args.space)
    info = space.describe()
    if args.json:
        print_json(info)
        return
    print(f"{info['name']} ({info['type']}): {_size(info['size'])} decision assignments, "
          f"{_size(info['distinct_size'])} distinct networks, {len(info['decisions'])} decisions")
    if info["description"]:
        print(info["description"])
    for d in info["decisions"]:
        print(f"  {d['name']:<24} {', '.join(map(str, d['choices']))}")


def _space_sample(args: argparse.Namespace) -> None:
    from nas.space import load_space

    space = load_space(args.space)
    codes = space.sample_codes(args.seed, args.n)
    for row in codes:
        arch = space.decode(row)
        line = arch.to_dict()
        if args.costs:
            line.update(space.counts(arch))
        print(json.dumps(line))


def resolve_arch(space: SearchSpace, text: str | None) -> Arch:
    """ARCH on the command line: inline JSON, a JSON file, an NB201 string, max or min."""
    if text is None:
        if space.size != 1:
            raise NasError(f"space {space.name} has {_size(space.size)} architectures: give ARCH "
                           "(inline JSON, a JSON file, max or min)")
        return space.from_index(0)
    if text in ("max", "min"):
        return space.extreme(largest=text == "max")
    stripped = text.strip()
    if stripped.startswith(("{", "|")):
        return space.parse_arch(stripped)
    path = Path(text)
    if not path.is_file():
        raise NasError(f"ARCH {text!r} is neither inline JSON, an NB201 string, max, min nor an existing file")
    return space.parse_arch(path.read_text())


def _space_stats(args: argparse.Namespace) -> None:
    from nas.space import load_space
    from nas.space.counters import dtype_bytes, layer_macs, layer_params, layer_peak_elements

    space = load_space(args.space)
    arch = resolve_arch(space, args.arch)
    out: dict[str, Any] = {"space": space.name, **space.counts(arch, args.resolution, args.dtype), "dtype": args.dtype,
                           "arch": dict(arch)}
    if args.layers:
        nbytes = dtype_bytes(args.dtype)
        out["layers"] = [{"key": s.key, "params": layer_params(s), "macs": layer_macs(s),
                          "peak_activation_bytes": layer_peak_elements(s) * nbytes}
                         for s in space.layers(arch, args.resolution)]
    if args.json:
        print_json(out)
        return
    print(f"{space.name} arch {out['arch_id']} at {out['resolution']}x{out['resolution']}, {args.dtype}")
    print(f"  params                 {out['params']:,}")
    print(f"  MACs                   {out['macs']:,}")
    print(f"  peak activation bytes  {out['peak_activation_bytes']:,}")
    print(f"  weight bytes           {out['weight_bytes']:,}")
    for layer in out.get("layers", []):
        print(f"    {layer['key']:<60} {layer['params']:>10,} {layer['macs']:>14,} {layer['peak_activation_bytes']:>12,}")


# ----------------------------------------------------------------------------- bench
def _bench_space(args: argparse.Namespace) -> None:
    from nas.bench.space import bench_spaces, format_table

    rows = bench_spaces([s for s in args.spaces.split(",") if s], args.n, args.seed, args.repeats,
                        one_core=not args.all_cores)
    if args.json:
        print_json(rows)
    else:
        print(format_table(rows))
