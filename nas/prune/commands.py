"""`hwnas prune`: an export pruned to device budgets, as an export."""
from __future__ import annotations

import argparse
from pathlib import Path

from typing import Any

from nas.cli import Result, add_threads_argument, positive_int
from nas.threads import configure as configure_threads


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    from nas.prune.network import CRITERIA
    from nas.prune.rounds import METHODS, SCORES, SELECTIONS, PruneSettings

    d = PruneSettings(budgets=(), data="")
    p = commands.add_parser("prune", help="prune an export's channels and layers to device budgets (LUT-driven), "
                                          "then fine-tune with distillation",
                            description="NetAdapt-style rounds on EXPORT's layers: each round proposes one reduction "
                                        "per width, expanded width, squeeze width and residual block that lowers the "
                                        "budgeted cost (from the device's LUT; blocks it lacks are profiled and added "
                                        "to it), keeps the proposal losing least accuracy, and stops when every "
                                        "budget is met. OUT is an export folder; rerun to resume.")
    p.add_argument("export", type=Path, metavar="EXPORT_DIR", help="a folder written by 'hwnas export' (or 'hwnas prune')")
    p.add_argument("--budgets", required=True, help="budgets as 'hwnas export --budgets' reads them: "
                                                    "[\"latency@local-cpu <= 2 ms\", \"params <= 100k\"]")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUT", help="the pruned export folder")
    p.add_argument("--data", required=True, help="digits, or a dataset path (as 'hwnas finetune --data')")
    p.add_argument("--lut", type=Path, help="the device's LUT (default: the catalogue's <device>/<space>.csv)")
    p.add_argument("--method", choices=METHODS, default=d.method,
                   help="netadapt rounds, or uniform: every width scaled by the largest factor meeting the budgets "
                        "(the baseline) (default %(default)s)")
    p.add_argument("--criterion", choices=CRITERIA, default=d.criterion,
                   help="channel importance: l1 of the weights reading each channel, or order (keep the leading "
                        "channels: a supernet's own sorting) (default %(default)s)")
    p.add_argument("--select", choices=SELECTIONS, default=d.select,
                   help="score proposals by accuracy after BN recalibration (proxy), after --select-steps "
                        "distillation steps (finetune), or without data by the share of importance removed per "
                        "share of cost saved (magnitude) (default %(default)s)")
    p.add_argument("--score", choices=SCORES, default=d.score,
                   help="what the proxy and finetune selections rank proposals by on the validation images: the "
                        "KL divergence from the parent's predictions (kl), the cross-entropy (ce), or the accuracy "
                        "(accuracy: steps of one image, so proposals often tie) (default %(default)s)")
    p.add_argument("--select-steps", type=int, default=d.select_steps, help="default %(default)s")
    p.add_argument("--select-top", type=int, default=d.select_top,
                   help="finetune selection: tune only the best K proposals by the proxy, the others keep their "
                        "proxy scores (0: tune all) (default %(default)s)")
    p.add_argument("--round-steps", type=int, default=d.round_steps,
                   help="distillation steps on each round's kept network (default %(default)s)")
    p.add_argument("--step", type=float, default=d.step,
                   help="cost removed per round, a fraction of the parent's (default %(default)s)")
    p.add_argument("--multiple", type=positive_int, default=d.multiple,
                   help="pruned widths are multiples of this (default %(default)s)")
    p.add_argument("--candidates", type=positive_int, default=d.candidates,
                   help="widths explored per unit per batch (default %(default)s)")
    p.add_argument("--calib-images", type=positive_int, default=d.calib_images,
                   help="training images BN statistics are recalibrated on before scoring (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="final fine-tune epochs (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="default %(default)s")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--max-rounds", type=positive_int, default=d.max_rounds)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-measure", action="store_true", help="keep to the LUT: no end-to-end timing of the pruned "
                                                            "network, so latency budgets are met on the LUT only "
                                                            "(offline use, tests)")
    p.add_argument("--force", action="store_true", help="replace OUT if it is not empty")
    add_threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_prune)


def _prune(args: argparse.Namespace) -> Result:
    from nas.export.commands import read_budgets
    from nas.prune.prune import prune_export

    configure_threads(args.threads)
    settings = {"seed": args.seed, "method": args.method, "criterion": args.criterion, "select": args.select,
                "score": args.score, "select_steps": args.select_steps,
                "select_top": args.select_top,
                "round_steps": args.round_steps, "step": args.step, "multiple": args.multiple,
                "candidates": args.candidates, "lr": args.lr, "batch_size": args.batch_size,
                "max_rounds": args.max_rounds, "epochs": args.epochs, "calib_images": args.calib_images}
    result = prune_export(args.export, read_budgets(args.budgets), args.out, args.data, settings=settings, lut=args.lut,
                          force=args.force, progress=not args.quiet, measure=not args.no_measure)
    p = result["pruning"]
    lines = [f"{args.out}: pruned {args.export} in {len(p['rounds'])} rounds ({p['blocks_profiled']} blocks profiled on "
             f"demand); LUT latency {p['parent_predicted_ms']:.4g} -> {p['predicted_ms']:.4g} ms"
             + (f", measured {p['measured_lut_scale_ms']:.4g} ms" if p.get("measured_lut_scale_ms") else "")]
    for b in p["budgets"]:
        lines.append(f"  budget {b['budget']}: {'met' if b['met'] else 'NOT met'} ({b['value']:.4g} {b['unit']}, "
                     f"{b['source']})")
    lines += measured_lines(p)
    ft = result.get("finetune")
    if ft:
        lines.append(f"  fine-tuned {ft['epochs']} epochs with distillation from the parent: {ft['split']} accuracy "
                     f"{ft['accuracy_before']:.4f} -> {ft['accuracy']:.4f}")
    return Result(result, "\n".join(lines))


def measured_lines(pruning: dict[str, Any]) -> list[str]:
    """The measurement checks of nas.prune.measured, and plainly whether they met the budget."""
    checks = pruning.get("measurement_checks") or []
    lines = [f"  check {c['check']} after round {c['after_round']}: LUT {c['predicted_ms']:.4g} ms (target "
             f"{c['target_ms']:.4g}), measured {c['measured_ms']:.4g} ms against {c['bound_ms']:.4g} ms: "
             f"{'met' if c['met'] else 'missed'}" for c in checks]
    if pruning.get("measured_met") is False:
        lines.append(f"  the latency budget is NOT met on measurement: pruning could go no further than "
                     f"{checks[-1]['measured_ms']:.4g} ms measured")
    return lines
