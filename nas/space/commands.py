"""`hwnas space ...` and `hwnas bench space`: search spaces from the command line."""
from __future__ import annotations

import argparse
import json
from typing import Any

from nas.cli import Result, positive_int
from nas.space.base import size_text


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
def _space_list(args: argparse.Namespace) -> Result:
    from nas.space import load_space, space_files

    rows = []
    for name, path in space_files().items():
        space = load_space(path)
        rows.append({"name": name, "type": type(space).__name__, "decisions": len(space.decisions),
                     "size": space.size, "distinct_size": space.distinct_size, "file": str(path)})
    lines = [f"{'space':<22} {'type':<12} {'decisions':>9}  {'size':>15}  distinct networks"]
    lines += [f"{r['name']:<22} {r['type']:<12} {r['decisions']:>9}  {size_text(r['size']):>15}  "
              f"{size_text(r['distinct_size'])}" for r in rows]
    return Result(rows, "\n".join(lines))


def _space_show(args: argparse.Namespace) -> Result:
    from nas.space import load_space

    space = load_space(args.space)
    info = space.describe()
    lines = [f"{info['name']} ({info['type']}): {size_text(info['size'])} decision assignments, "
             f"{size_text(info['distinct_size'])} distinct networks, {len(info['decisions'])} decisions"]
    if info["description"]:
        lines.append(info["description"])
    lines += [f"  {d['name']:<24} {', '.join(map(str, d['choices']))}" for d in info["decisions"]]
    return Result(info, "\n".join(lines))


def _space_sample(args: argparse.Namespace) -> Result:
    from nas.space import load_space

    space = load_space(args.space)
    rows = []
    for codes in space.sample_codes(args.seed, args.n):
        arch = space.decode(codes)
        rows.append({**arch.to_dict(), **(space.counts(arch) if args.costs else {})})
    return Result(rows, "\n".join(json.dumps(row) for row in rows))


def _space_stats(args: argparse.Namespace) -> Result:
    from nas.space import load_space
    from nas.space.counters import layer_macs, layer_params, layer_peak_bytes

    space = load_space(args.space)
    arch = space.resolve_arch(args.arch)
    out: dict[str, Any] = {"space": space.name, **space.counts(arch, args.resolution, args.dtype), "dtype": args.dtype,
                           "arch": dict(arch)}
    if args.layers:
        out["layers"] = [{"key": s.key, "params": layer_params(s), "macs": layer_macs(s),
                          "peak_activation_bytes": layer_peak_bytes(s, args.dtype)}
                         for s in space.layers(arch, args.resolution)]
    lines = [f"{space.name} arch {out['arch_id']} at {out['resolution']}x{out['resolution']}, {args.dtype}",
             f"  params                 {out['params']:,}",
             f"  MACs                   {out['macs']:,}",
             f"  peak activation bytes  {out['peak_activation_bytes']:,}",
             f"  weight bytes           {out['weight_bytes']:,}"]
    lines += [f"    {layer['key']:<60} {layer['params']:>10,} {layer['macs']:>14,} {layer['peak_activation_bytes']:>12,}"
              for layer in out.get("layers", [])]
    return Result(out, "\n".join(lines))


# ----------------------------------------------------------------------------- bench
def _bench_space(args: argparse.Namespace) -> Result:
    from nas.bench.space import bench_spaces, format_table

    rows = bench_spaces([s for s in args.spaces.split(",") if s], args.n, args.seed, args.repeats,
                        one_core=not args.all_cores)
    return Result(rows, format_table(rows))
