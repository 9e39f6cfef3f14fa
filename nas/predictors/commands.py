"""`hwnas predictor ...`, `hwnas measure`, `hwnas bench predictors` and `hwnas bench noise`."""
from __future__ import annotations

import argparse
import csv
import json
import io
from pathlib import Path

from nas.cli import Result, positive_int
from nas.errors import NasError
from nas.hardware.measure import Protocol

FIT_MODELS = ("auto", "ridge", "transfer", "gbt", "forest", "mlp", "boosted", "ensemble", "lut_residual")


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    pred = commands.add_parser("predictor",
                               help="learned latency/energy/accuracy predictors: fit, eval, transfer, predict")
    cmds = pred.add_subparsers(title="predictor commands", metavar="ACTION", required=True)

    p = cmds.add_parser("fit", help="train a predictor on a table column")
    _tables(p)
    p.add_argument("--space", required=True, help="space name or YAML path")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--n-train", type=positive_int, help="random rows to train on (default: all rows with a value)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="auto", choices=FIT_MODELS,
                   help="model kind (default auto: for latency/energy, transfer from the space's predictors of other "
                        "devices when it has any, else ridge; gbt for accuracy)")
    p.add_argument("--features", default="layerspec", help="feature set: layerspec (default), coarse, onehot")
    p.add_argument("--lut", type=Path, help="a LUT whose per-arch sum becomes a feature (needed by lut_residual)")
    p.add_argument("--device", help="device name for the metadata (default: read off the column name)")
    p.add_argument("--metric", help="metric name (default: read off the column name)")
    p.add_argument("--unit", help="unit (default: read off the column name)")
    p.add_argument("-o", "--out", type=Path, required=True, help="predictor file (.npz) to write")
    p.set_defaults(run=_fit)

    p = cmds.add_parser("eval", help="score a predictor on a table (its training archs left out)")
    p.add_argument("file", type=Path)
    _tables(p)
    p.add_argument("--target", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_eval)

    p = cmds.add_parser("transfer", help="pretrain on source columns, adapt with K rows of a new device's column")
    _tables(p)
    p.add_argument("--space", required=True)
    p.add_argument("--source", required=True, help="comma-separated source columns")
    p.add_argument("--target", required=True)
    p.add_argument("--k", type=positive_int, required=True, help="target measurements to adapt with (5..50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", type=Path, help="reference set JSON (default: the shipped one of the space)")
    p.add_argument("--n-pretrain", type=positive_int, default=2000, help="rows per source column (default 2000)")
    p.add_argument("--device", help="the new device's name for the metadata (default: read off the target column)")
    p.add_argument("--heads", default="auto",
                   help="heads to average: 'auto' (chosen by leaving each source device out in turn, as "
                        "'hwnas bench predictors' does) or comma-separated from shared, direct, mix, simplex")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.set_defaults(run=_transfer)

    p = cmds.add_parser("predict", help="predict archs from a file (CSV with an arch column, or one arch per line)")
    p.add_argument("file", type=Path)
    p.add_argument("--archs", type=Path, required=True)
    p.add_argument("--std", action="store_true", help="add the relative uncertainty (ensemble and transfer models)")
    p.add_argument("--interval", type=float, metavar="LEVEL",
                   help="add the bounds of the interval at this confidence level, e.g. 0.9")
    p.set_defaults(run=_predict)

    p = cmds.add_parser("energy-table", help="analytic energy estimates from measured latencies (no energy measured)")
    _tables(p)
    p.add_argument("--space", required=True)
    p.add_argument("--latency", required=True, help="the latency column (ms) the estimate starts from")
    p.add_argument("--device", required=True, help="device profile with a power model (see 'hwnas devices show')")
    p.add_argument("-o", "--out", type=Path, required=True, help="CSV to write (arch_id, estimated_energy_mj, arch)")
    p.set_defaults(run=_energy_table)

    p = cmds.add_parser("show", help="a predictor file's metadata")
    p.add_argument("file", type=Path)
    p.set_defaults(run=_show)

    p = cmds.add_parser("reference", help="write a reference set: the archs to measure on a new device")
    p.add_argument("--space", required=True)
    p.add_argument("-n", type=positive_int, default=50, help="archs in the set (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", type=Path, help="JSON to write (default predictors/reference/SPACE.json)")
    p.set_defaults(run=_reference)

    p = commands.add_parser("measure", help="measure random archs end to end on a device: a training table")
    p.add_argument("space", help="space name or YAML path")
    p.add_argument("--device", required=True, help="device profile (see 'hwnas devices list')")
    p.add_argument("--n", type=positive_int, required=True, help="random archs to measure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", action="store_true", help="measure the space's reference archs first")
    p.add_argument("--resolution", type=positive_int,
                   help="measure archs at this input resolution, one the space offers (default: each arch's own)")
    p.add_argument("-o", "--out", type=Path,
                   help="CSV to write (arch_id, measured_ms, p10_ms, p90_ms, arch); "
                        "default runs/measure/SPACE_DEVICE.csv")
    Protocol.add_arguments(p)
    p.set_defaults(run=_measure)

    p = bench.add_parser("predictors", help="predictors on devices they never saw: leave one device out of public tables")
    p.add_argument("tables", type=Path, nargs="+",
                   help="benchmark CSVs of one or more spaces (e.g. ../shared/benchmarks/nb201/*.csv)")
    p.add_argument("--n-train", default="100,900", help="comma-separated fit sizes (default 100,900)")
    p.add_argument("--k", default="5,10,20,50", help="comma-separated transfer K (default 5,10,20,50)")
    p.add_argument("--seeds", type=positive_int, default=3, help="splits per fold, seeds 0..N-1 (default 3)")
    p.add_argument("--models", help="fit candidates, chosen nested per device (default: nas.predictors.loo's "
                                     "FIT_CANDIDATES; any of its FITTERS)")
    p.add_argument("--variants", help="transfer candidates, chosen nested per device (default: "
                                      "nas.predictors.loo's TRANSFER_CANDIDATES; any of its TRANSFER_VARIANTS)")
    p.add_argument("--n-pretrain", type=positive_int, default=2000)
    p.add_argument("--out", type=Path, help="write the full results as JSON here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench)

    p = bench.add_parser("noise", help="measurement noise of each device column, from archs that are one network, "
                                       "and the ceiling it puts on any predictor")
    p.add_argument("tables", type=Path, nargs="+",
                   help="benchmark CSVs of one space (e.g. ../shared/benchmarks/nb201/*.csv)")
    p.add_argument("--columns", help="comma-separated cost columns (default: every latency and energy column)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated re-measurements (default 0)")
    p.add_argument("--bootstrap", type=positive_int,
                   help="resample the twin pairs this many times for a 90 %% interval of each ceiling (default: none)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_noise)

    p = bench.add_parser("onboard", help="an onboarding's curve scored on fresh measured archs")
    p.add_argument("folder", type=Path, help="the onboarding folder (hwnas device onboard ... -o FOLDER)")
    p.add_argument("--space", required=True)
    p.add_argument("--fresh", type=Path, required=True, help="fresh archs measured on the device (hwnas measure)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_onboard)


def _bench_onboard(args: argparse.Namespace) -> Result:
    from nas.predictors.onboard import validate_curve
    from nas.space import load_space

    points = validate_curve(load_space(args.space), args.folder, args.fresh)
    lines = [f"{p['measured']:>4} measured  {p['seconds']:>7.1f} s  leave-one-out ±10 % {p['loo_within_10']:.1%} "
             f"(lower bound {p['loo_within_10_lower_90']:.1%})  "
             f"fresh ±10 % {p['fresh_within_10']:.1%}  Spearman {p['fresh_spearman']:.3f}" for p in points]
    for goal in (0.90, 0.95):
        hit = next((p for p in points if p["fresh_within_10"] >= goal), None)
        lines.append(f"{goal:.0%} of {points[0]['fresh_archs'] if points else 0} fresh archs within ±10 %: "
                     + (f"after {hit['measured']} measurements, {hit['seconds']:.0f} s" if hit else "not reached"))
    return Result(points, "\n".join(lines))


def _tables(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", type=Path, action="append", required=True,
                   help="CSV with an arch column (repeat to merge several tables)")


def _fit(args: argparse.Namespace) -> Result:
    from nas.predictors.predictor import fit_predictor
    from nas.predictors.tables import read_tables
    from nas.space import load_space

    space = load_space(args.space)
    table = read_tables(args.table, space)
    lut_values = _lut_values(args.lut, space) if args.lut else None
    predictor = fit_predictor(table, args.target, args.n_train, args.seed, args.model, args.features, lut_values,
                              args.metric, args.unit, args.device)
    predictor.save(args.out)
    training = predictor.meta["training"]
    dropped = f", {training['dropped_missing']} rows without a value dropped" if training["dropped_missing"] else ""
    return Result({"wrote": str(args.out), "training": training},
                  f"wrote {args.out}: {predictor.meta['model']} predictor of {args.target} ({predictor.metric}, "
                  f"{predictor.unit or 'no unit'}) for {space.name}, trained on {training['n_train']} archs "
                  f"(seed {args.seed}{dropped})")


def _lut_values(path: Path, space) -> dict[str, float]:
    from nas.hardware.lut import LUT

    lut = LUT.load(path)
    lut.check(space)
    return {key: lut.value(spec) for key, (spec, _) in lut.entries.items()}


def _eval(args: argparse.Namespace) -> Result:
    from nas.predictors.predictor import Predictor, evaluate
    from nas.predictors.tables import read_tables

    predictor = Predictor.load(args.file)
    report = evaluate(predictor, read_tables(args.table, predictor.space), args.target)
    return Result(report, "\n".join([
        f"{args.file} on {args.target}: {report['n']} archs ({report['excluded']} training archs left out)",
        f"  within ±5/10/15 %: {report['within_5']:.1%} / {report['within_10']:.1%} / {report['within_15']:.1%}  "
        f"RMSE {report['rmse']:.4g}  RMSPE {report['rmspe']:.2f} %  Kendall τ {report['kendall_tau']:.3f}  "
        f"Spearman ρ {report['spearman_rho']:.3f}",
        *([f"  90 % intervals hold {report['coverage_90']:.1%} of measured values (median half-width "
           f"±{report['interval_90_median_halfwidth']:.1%})"] if "coverage_90" in report else [])]))


def _transfer(args: argparse.Namespace) -> Result:
    from nas.predictors.models.transfer import TransferModel
    from nas.predictors.reference import load_reference
    from nas.predictors.tables import read_tables
    from nas.predictors.transfer import transfer_predictor
    from nas.space import load_space

    space = load_space(args.space)
    table = read_tables(args.table, space)
    sources = [c.strip() for c in args.source.split(",") if c.strip()]
    reference = load_reference(space, args.reference) if args.reference else None
    heads = args.heads if args.heads == "auto" else tuple(h.strip() for h in args.heads.split(",") if h.strip())
    bad = [] if heads == "auto" else [h for h in heads if h not in TransferModel.HEADS]
    if bad or not heads:
        raise NasError(f"--heads {args.heads!r}: use auto or some of {', '.join(TransferModel.HEADS)}")
    predictor = transfer_predictor(table, sources, args.target, args.k, args.seed, reference, args.n_pretrain,
                                   device=args.device, heads=heads)
    predictor.save(args.out)
    t = predictor.meta["transfer"]
    return Result({"wrote": str(args.out), "transfer": t},
                  f"wrote {args.out}: {args.target} from {len(sources)} source column(s), adapted on {args.k} archs "
                  f"({t['adapted_on']}); their ids are in the file and 'hwnas predictor eval' leaves them out")


def _predict(args: argparse.Namespace) -> Result:
    from nas.predictors.predictor import Predictor
    from nas.predictors.tables import read_archs

    predictor = Predictor.load(args.file)
    archs = read_archs(args.archs, predictor.space)
    values, std = predictor.predict(archs, return_std=True)
    column = f"{predictor.metric}_{predictor.unit}" if predictor.unit else predictor.metric
    bounds = predictor.interval(archs, args.interval) if args.interval is not None else None
    level = f"{args.interval * 100:g}" if bounds is not None else ""
    header = ["arch_id", column, *(["relative_std"] if args.std else []),
              *([f"lower_{level}", f"upper_{level}"] if bounds is not None else []), "arch"]
    rows = [[arch.arch_id, f"{value:.6g}", *([f"{std[i]:.4f}"] if args.std else []),
             *([f"{bounds[0][i]:.6g}", f"{bounds[1][i]:.6g}"] if bounds is not None else []), arch.to_json()]
            for i, (arch, value) in enumerate(zip(archs, values))]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return Result([dict(zip(header, row)) for row in rows], buf.getvalue().rstrip("\n"))


def _energy_table(args: argparse.Namespace) -> Result:
    from nas.hardware.devices import load_device
    from nas.predictors.energy import ESTIMATE_COLUMN, energy_table
    from nas.predictors.tables import read_tables
    from nas.space import load_space

    space = load_space(args.space)
    n = energy_table(read_tables(args.table, space), args.latency, load_device(args.device), args.out)
    return Result({"wrote": str(args.out), "archs": n},
                  f"wrote {args.out}: {n} analytic energy estimates from {args.latency} with {args.device}'s power "
                  f"model; fit with 'hwnas predictor fit --table {args.out} --space {space.name} "
                  f"--target {ESTIMATE_COLUMN} ...'")


def _show(args: argparse.Namespace) -> Result:
    from nas.predictors.store import load_arrays

    meta, arrays = load_arrays(args.file)
    meta = {k: v for k, v in meta.items() if k != "model_state"}
    for section in ("training", "transfer"):
        if section in meta:
            for key in ("arch_ids", "adapt_arch_ids"):
                if key in meta[section]:
                    meta[section][key] = f"{len(meta[section][key])} arch ids"
    if "lut" in meta:
        meta["lut"] = f"{len(meta['lut']['values'])} embedded LUT entries"
    meta["arrays"] = f"{len(arrays)} arrays, {sum(a.size for a in arrays.values())} numbers"
    return Result(meta)


def _reference(args: argparse.Namespace) -> Result:
    from nas.hardware.lut import write_atomic
    from nas.predictors.reference import make_reference, reference_dir, reference_text
    from nas.space import load_space

    space = load_space(args.space)
    data = make_reference(space, args.n, args.seed)
    out = args.out or reference_dir() / f"{space.name}.json"
    write_atomic(out, reference_text(data))
    return Result({"wrote": str(out), "archs": len(data["archs"])},
                  f"wrote {out}: {len(data['archs'])} reference archs of {space.name} ({data['design']['pool']})")


def _measure(args: argparse.Namespace) -> Result:
    from nas.predictors.measure import measure_table
    from nas.space import load_space

    space = load_space(args.space)
    out = args.out or Path("runs") / "measure" / f"{space.name}_{args.device}.csv"
    n = measure_table(space, args.device, args.n, args.seed, out, Protocol.from_arguments(args),
                      args.reference, args.resolution)
    return Result({"wrote": str(out), "archs": n},
                  f"wrote {out}: {n} archs of {space.name} measured on {args.device}; "
                  f"fit with 'hwnas predictor fit --table {out} --space {space.name} --target measured_ms ...'")


def _bench_noise(args: argparse.Namespace) -> Result:
    from nas.predictors.bench import detect_space
    from nas.predictors.noise import NOISE_SCHEMA, table_noise
    from nas.predictors.predictor import infer_metric
    from nas.predictors.tables import read_tables

    space = detect_space(args.tables[0])
    table = read_tables(args.tables, space)
    costs = [c for c in table.value_columns if infer_metric(c)[0] in ("latency", "energy")]
    columns = _names(args.columns, "--columns", costs) if args.columns else costs
    if not columns:
        raise NasError(f"{', '.join(map(str, args.tables))}: no latency or energy column")
    lines: list[str] = []
    results = {"schema": NOISE_SCHEMA, "space": space.name, "tables": [str(p) for p in args.tables], "seed": args.seed,
               "bootstrap": args.bootstrap or 0,
               "columns": table_noise(table, columns, args.seed, args.bootstrap or 0,
                                      log=lines.append, progress=not args.json)}
    if args.out:
        from nas.atomic import write_atomic

        write_atomic(args.out, json.dumps(results, indent=1) + "\n")
    return Result(results, "\n".join(lines))


def _bench(args: argparse.Namespace) -> Result:
    from nas.predictors.bench import bench_predictors
    from nas.predictors.loo import FIT_CANDIDATES, FITTERS, TRANSFER_CANDIDATES, TRANSFER_VARIANTS

    n_trains = _ints(args.n_train, "--n-train")
    ks = _ints(args.k, "--k")
    fit = _names(args.models, "--models", FITTERS) if args.models else FIT_CANDIDATES
    variants = _names(args.variants, "--variants", TRANSFER_VARIANTS) if args.variants else TRANSFER_CANDIDATES
    results = bench_predictors(args.tables, n_trains, ks, args.seeds, fit, variants, args.n_pretrain,
                               log=(lambda s: None) if args.json else print, progress=not args.json)
    if args.out:
        from nas.atomic import write_atomic

        write_atomic(args.out, json.dumps(results, indent=1) + "\n")
    lines = [""]  # a blank line after the progress log
    for space, run in results["loo"].items():
        for key, r in run["summary"].items():
            setting, size = key.split()
            label = f"fit n={size}" if setting == "fit" else f"transfer K={size}"
            lines.append(f"{space} {label:<16} ({r['columns']} columns, chose {'/'.join(r['chosen'])}): "
                         + "  ".join(f"{name} {r[m]['mean']:.3f} (worst {r[m]['worst']:.3f} {r[m]['worst_column']})"
                                     for name, m in (("Spearman", "spearman_rho"), ("Kendall", "kendall_tau"),
                                                     ("within ±10 %", "within_10"))))
    for entry in results["accuracy"]:
        for model, by_n in entry["fit"].items():
            for n, r in by_n.items():
                lines.append(f"{entry['space']} {entry['column']}, {model} n_train={n}: "
                             f"Spearman {r['spearman_rho']:.3f}, Kendall {r['kendall_tau']:.3f}")
    return Result(results, "\n".join(lines))


def _names(text: str, flag: str, known) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise NasError(f"{flag}: unknown or no name(s) {', '.join(bad)}; choose from {', '.join(known)}")
    return names


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NasError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise NasError(f"{flag} values must be at least 2, got {text!r}")
    return values
