"""`hwnas export` and `hwnas finetune`: a found arch as a deployable, fine-tunable folder."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.cli import Result, add_threads_argument, positive_int
from nas.threads import configure as configure_threads
from nas.errors import NasError
from nas.export.latency import measured_ms


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="write an arch as weights, verified ONNX, a model card and a loader",
                            description="Export one architecture into OUT: model.safetensors, model.onnx (verified "
                                        "with onnxruntime), arch.json, card.json and MODEL_CARD.md. Load it with "
                                        "nas.export.load(OUT).")
    p.add_argument("--space", required=True, help="a shipped space name or a path to a space YAML")
    p.add_argument("--arch", required=True, help="inline JSON, a JSON file, an NB201 arch string, max or min")
    p.add_argument("--supernet", type=Path, help="a 'hwnas supernet train' folder or its checkpoint: inherit its "
                                                  "weights (BN recalibrated) and score the arch")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUT", help="export folder")
    p.add_argument("--budgets", help="budgets to check on the card: a JSON/YAML file or inline JSON, a mapping "
                                     "{metric: bound} or a list like [\"latency@local-cpu <= 5 ms\"]")
    p.add_argument("--sources", help="cost sources the budgets are checked with, as a search config names them: a "
                                     "search config (its sources:), a JSON/YAML file or inline JSON {metric: source} "
                                     "(default: the names hwnas knows: counters, device LUTs, shipped predictors)")
    p.add_argument("--search-run", help="id of the search run that found the arch (recorded in the card)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed without a supernet (default 0)")
    p.add_argument("--split", choices=("val", "test"), default="val", help="split the supernet accuracy is on")
    p.add_argument("--no-measure", action="store_true", help="skip measuring the latency on this machine")
    p.add_argument("--force", action="store_true", help="replace OUT if it is not empty")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(run=_export)

    p = commands.add_parser("finetune", help="fine-tune an export (checkpoints every epoch; rerun to resume)")
    p.add_argument("out", type=Path, metavar="OUT", help="a folder written by 'hwnas export'")
    p.add_argument("--data", required=True, help="digits, or a dataset path (CIFAR folder, image folder, .npz)")
    p.add_argument("--epochs", type=positive_int, required=True)
    p.add_argument("--distill-from", type=Path, metavar="CKPT",
                   help="a supernet folder or checkpoint: distil from its largest subnet; or an export folder "
                        "(a pruned network's parent): distil from that network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate of the cosine schedule (default 0.01)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--split", choices=("val", "test"), default="val", help="split the accuracy is reported on")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware: int8 layers train with their int8 rounding (an export with int8 layers)")
    add_threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_finetune)


def read_budgets(text: str | None, flag: str = "--budgets"):
    """--budgets (or another flag's value): inline JSON, or a JSON/YAML file."""
    if text is None:
        return None
    if text.strip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise NasError(f"{flag} is not valid JSON ({exc.msg})") from None
    path = Path(text)
    if not path.is_file():
        raise NasError(f"{flag} {text!r} is neither inline JSON nor an existing file")
    from nas.space.registry import read_yaml

    return read_yaml(path)  # YAML reads JSON too


def read_sources(text: str | None) -> tuple[dict | None, Path | None]:
    """--sources: (the mapping of metric -> source, the folder relative paths are read from);
    a search config gives its `sources:` and its own folder, as `hwnas search` reads them."""
    data = read_budgets(text, "--sources")
    if data is None:
        return None, None
    if not isinstance(data, dict):
        raise NasError("--sources must map metric names to sources, like {\"latency@local-cpu\": {\"lut\": \"FILE\"}}")
    base = Path(text).resolve().parent if Path(text).is_file() else None
    if "objectives" in data:  # a search config
        data = data.get("sources") or {}
    return data, base


def _export(args: argparse.Namespace) -> Result:
    from nas.export.card import read_card
    from nas.export.export import DEFAULT_PROTOCOL, export_arch

    configure_threads(args.threads)
    budgets = read_budgets(args.budgets)
    sources, base = read_sources(args.sources)
    out = export_arch(args.space, args.arch, args.out, args.supernet, budgets,
                      {"search_run": args.search_run} if args.search_run else None, seed=args.seed, split=args.split,
                      latency_protocol=None if args.no_measure else DEFAULT_PROTOCOL, force=args.force,
                      sources=sources, base=base)
    card = read_card(out)
    c = card["costs"]
    lines = [f"{out}: {card['space']} arch {card['arch_id']}, {c['params']:,} params, {c['macs']:,} MACs; ONNX max abs "
             f"diff {card['onnx']['max_abs_diff']:.2e}"]
    if card["accuracy"]:
        lines.append(f"  supernet accuracy {card['accuracy']['value']:.4f} ({card['accuracy']['split']})")
    if card["measured_latency"]:
        lines.append(f"  measured latency {measured_ms(card['measured_latency']):.4g} ms on "
                     f"{card['measured_latency']['device']}")
    q = card.get("int8")
    if q:
        acc = f"accuracy {q['accuracy']['value']:.4f}, " if q["accuracy"] else ""
        lat = f"latency {measured_ms(q['measured_latency']):.4g} ms, " if q["measured_latency"] else ""
        lines.append(f"  int8 model ({len(q['layers'])} int8 layers): {acc}{lat}{q['size_bytes']:,} bytes; onnxruntime "
                     f"and the simulation agree on {q['verification']['top1_agreement']:.2%} of "
                     f"{q['verification']['images']} {q['verification']['inputs']}")
    for b in card["budgets"]:
        state = "met" if b["met"] else f"unknown ({b['reason']})" if b["met"] is None else "NOT met"
        lines.append(f"  budget {b['budget']}: {state}")
    return Result(card, "\n".join(lines))


def _finetune(args: argparse.Namespace) -> Result:
    from nas.export.finetuning import finetune

    configure_threads(args.threads)
    result = finetune(args.out, args.data, args.epochs, seed=args.seed, distill_from=args.distill_from, lr=args.lr,
                      batch_size=args.batch_size, split=args.split, qat=args.qat, progress=not args.quiet)
    return Result(result, f"{args.out}: fine-tuned {result['epochs']} epochs on {result['data']}: {result['split']} "
                          f"accuracy {result['accuracy_before']:.4f} -> {result['accuracy']:.4f}")
