"""`hwnas supernet train|eval` and `hwnas bench supernet-ranking|supernet-step`."""
from __future__ import annotations

import argparse
from pathlib import Path

from nas.cli import Result, add_threads_argument, positive_int
from nas.threads import configure as configure_threads
from nas.errors import NasError
from nas.space.arch import Arch
from nas.space.base import SearchSpace


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    supernet = commands.add_parser("supernet", help="weight-sharing supernets: train, eval")
    cmds = supernet.add_subparsers(title="supernet commands", metavar="ACTION", required=True)

    p = cmds.add_parser("train", help="train a supernet into DIR (rerun with the same DIR to resume)",
                        description="Train a supernet. Flags override the config file; launch with torchrun "
                                    "for several processes or machines.")
    p.add_argument("config", nargs="?", type=Path, help="YAML config (every key optional; defaults: the quickstart)")
    _run_flags(p)
    p.set_defaults(run=_train)

    p = cmds.add_parser("eval", help="accuracy of subnets with inherited weights (after BN recalibration)")
    p.add_argument("run_dir", type=Path, metavar="DIR",
                   help="a folder written by 'hwnas supernet train' (or its checkpoint.pt)")
    p.add_argument("--archs", required=True,
                   help="max, min, or a file of archs: JSON lines (as 'hwnas space sample' writes) or a JSON list")
    p.add_argument("--split", choices=("val", "test"), default="val", help="data split to score on (default val)")
    p.add_argument("--calib-images", type=positive_int, help="BN recalibration images (default: the run's config)")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true", help="JSON output: a list of {arch_id, accuracy, arch}")
    p.set_defaults(run=_eval)

    p = bench.add_parser("supernet-ranking", help="Kendall tau of supernet vs stand-alone accuracy (long; resumes)")
    p.add_argument("config", nargs="?", type=Path, help="YAML config (default: the ranking benchmark's for the space's family)")
    _run_flags(p)
    p.add_argument("--archs", type=positive_int, default=12, help="subnets trained stand-alone (default 12)")
    p.add_argument("--standalone-seeds", type=positive_int, metavar="N",
                   help="seeds each subnet is trained alone under, its stand-alone accuracy their mean (default: the "
                        "space family's, 6 for a pure transformer, else 1)")
    p.add_argument("--supernet-epochs", type=positive_int, metavar="E",
                   help="the supernet's epochs where they differ from the stand-alone runs' (--epochs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_ranking)

    p = bench.add_parser("quant", help="int8 (post-training) vs float accuracy of a supernet's subnets, and "
                                       "onnxruntime-vs-simulation agreement")
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a 'hwnas supernet train' folder of an int8 space")
    p.add_argument("--archs", type=positive_int, default=20, help="random subnets, all int8 (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy"),
                   help="calibration method (default: the run's quant settings)")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_quant)

    p = bench.add_parser("supernet-step", help="cost of a sandwich step vs a step of the largest subnet alone")
    p.add_argument("--space", default="tiny_mbconv")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--random-subnets", type=int, default=2, help="random subnets per sandwich step (default 2)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps of each kind (default 10)")
    p.add_argument("--all-cores", action="store_true",
                   help="the default parallelism of 'hwnas supernet train' (or --threads, --workers) instead of one "
                        "pinned thread")
    add_threads_argument(p)
    p.add_argument("--workers", type=positive_int, help="worker processes (with --all-cores; default: as training)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_step)


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", help="space name or YAML path")
    p.add_argument("--data", help="digits, or a dataset path (CIFAR folder, image folder, .npz)")
    p.add_argument("--epochs", type=positive_int, help="training epochs")
    p.add_argument("--seed", type=int, help="seed of weights, batches, augmentation and sampled subnets")
    p.add_argument("--batch-size", type=positive_int, help="global batch size")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder (resumes if it holds one)")
    add_threads_argument(p)
    p.add_argument("--workers", type=positive_int,
                   help="worker processes training together on CPU (default: one per free core, at most one per "
                        "micro-batch; the result does not depend on it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _overrides(args: argparse.Namespace) -> dict:
    return {"space": args.space, "data.source": args.data, "epochs": args.epochs, "seed": args.seed,
            "batch_size": args.batch_size, "workers": args.workers}


def _train(args: argparse.Namespace) -> Result:
    from nas.supernet.config import load_config
    from nas.supernet.trainer import train

    configure_threads(args.threads)
    history = train(load_config(args.config, _overrides(args)), args.out, progress=not args.quiet)
    if not history:
        return Result(history, "")
    last = history[-1]
    scores = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith("val_acc"))
    return Result(history, f"{args.out}: {last['epoch']} epochs trained; {scores}")


def read_archs(space: SearchSpace, text: str) -> list[Arch]:
    """--archs: max, min, or a file of archs (JSON lines, a JSON list, the space's strings)."""
    from nas.predictors.tables import read_archs as read_arch_file

    if text in ("max", "min"):
        return [space.extreme(largest=text == "max")]
    if not Path(text).is_file():
        raise NasError(f"--archs {text!r} is neither max, min nor an existing file")
    return read_arch_file(text, space)


def _eval(args: argparse.Namespace) -> Result:
    from nas.supernet.oracle import SupernetAccuracy

    configure_threads(args.threads)
    oracle = SupernetAccuracy(args.run_dir, args.split, args.calib_images)
    archs = read_archs(oracle.space, args.archs)
    rows = [{"arch_id": a.arch_id, "accuracy": float(acc), "arch": dict(a)}
            for a, acc in zip(archs, oracle.predict(archs))]
    return Result(rows, "\n".join(f"{row['arch_id']}  {row['accuracy']:.4f}" for row in rows))


def _bench_ranking(args: argparse.Namespace) -> Result:
    from nas.supernet.bench import ranking_config, ranking_fidelity, ranking_standalone_seeds
    from nas.supernet.config import load_config

    configure_threads(args.threads)
    config = load_config(args.config, _overrides(args), base=ranking_config(args.space))
    seeds = args.standalone_seeds or ranking_standalone_seeds(config.space)
    report = ranking_fidelity(config, args.out, args.archs, progress=not args.quiet, standalone_seeds=seeds,
                              supernet_epochs=args.supernet_epochs)
    lines = [f"  {row['arch_id']}  MACs {row['macs'] / 1e6:6.2f}M  stand-alone {row['standalone']:.4f}"
             + (f" (sd {row['standalone_sd'] * 100:.1f})" if row["standalone_sd"] is not None else "")
             + f"  supernet {row['supernet']:.4f}" for row in report["archs"]]
    lines.append(f"Kendall tau {report['kendall_tau']:.3f} over {len(report['archs'])} subnets (MACs alone: "
                 f"{report['kendall_tau_macs']:.3f}); stand-alone accuracies, mean of {seeds} seed{'s' * (seeds > 1)}, "
                 f"spread {report['standalone_spread'] * 100:.1f} points ({report['split']} split, {config.data.source}"
                 f"{', noise ' + str(config.data.noise) if config.data.noise else ''})")
    truth = report["truth"]
    if truth:
        lines.append(f"the truth repeats itself: ceiling {truth['ceiling']:.3f} (the tau of exact accuracies against "
                     f"it), tau between two seeds {truth['pairwise_tau']:.3f}, between halves "
                     f"{truth['split_half_tau']:.3f}; seed sd {truth['noise_sd'] * 100:.1f} points, exact spread sd "
                     f"{truth['exact_sd'] * 100:.1f}")
    return Result(report, "\n".join(lines))


def _bench_step(args: argparse.Namespace) -> Result:
    from nas.supernet.bench import step_cost

    if (args.threads or args.workers) and not args.all_cores:
        raise NasError("--threads and --workers need --all-cores (without it the benchmark runs one pinned thread)")
    row = step_cost(args.space, args.batch_size, args.random_subnets, args.steps, pin=not args.all_cores,
                    threads=args.threads, workers=args.workers)
    return Result(row, f"{row['space']}, batch {row['batch_size']}, {row['cpu']}, {row['parallelism']}: largest alone "
                       f"{row['largest_alone_s'] * 1e3:.0f} ms/step, sandwich of {row['subnets']} subnets "
                       f"{row['sandwich_s'] * 1e3:.0f} ms/step = {row['ratio']:.2f}x (supernet running the largest "
                       f"only: {row['largest_in_supernet_s'] * 1e3:.0f} ms)")


def _bench_quant(args: argparse.Namespace) -> Result:
    from nas.quant.bench import quant_bench
    from nas.supernet.run import RunDir

    configure_threads(args.threads)
    quant = None
    if args.method:
        quant = RunDir(args.run_dir).config().quant.model_copy(update={"method": args.method})
    found = quant_bench(args.run_dir, args.archs, args.seed, args.split, quant)
    lines = [f"{'arch':<14} {'float':>7} {'int8':>7} {'ort':>7} {'agree':>7} {'steps':>6}"]
    for r in found["rows"]:
        lines.append(f"{r['arch_id']:<14} {r['float']:7.4f} {r['int8']:7.4f} {r['int8_onnxruntime']:7.4f} "
                     f"{r['top1_agreement']:7.2%} {r.get('max_logit_diff_steps', 0):6.2f}")
    lines.append(f"int8 drop: median {found['drop_median']:+.4f}, worst {found['drop_worst']:+.4f}; onnxruntime vs "
                 f"simulation: top-1 agreement >= {found['agreement_min']:.2%}, max logit difference "
                 f"{found['max_logit_diff_steps']:.2f} steps ({found['archs']} subnets, {found['images']} "
                 f"{found['split']} images, {found['quant']['method']} on {found['quant']['calib_images']} images); "
                 f"scoring median {found['seconds_float_median']:.2f} s float, {found['seconds_int8_median']:.2f} s int8")
    return Result(found, "\n".join(lines))
