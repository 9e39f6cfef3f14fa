"""`hwnas devices ...`, `hwnas lut ...`, `hwnas energy ...`, `hwnas memory check` and `hwnas bench lut`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.cli import Result, positive_int
from nas.hardware.measure import Protocol


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    devices = commands.add_parser("devices", aliases=["device"], help="device profiles: list, show, onboard")
    dev_cmds = devices.add_subparsers(title="device commands", metavar="ACTION", required=True)
    p = dev_cmds.add_parser("list", help="device profiles under latency_luts/")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_devices_list)
    p = dev_cmds.add_parser("show", help="one device profile (this machine's facts for local-cpu)")
    p.add_argument("device")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_devices_show)
    p = dev_cmds.add_parser("onboard", help="measure, fit and validate a predictor for a device in rounds (resumes)")
    p.add_argument("device", help="device profile (see 'hwnas devices list'); measured on this machine unless --kit")
    p.add_argument("--kit", action="store_true",
                   help="a device without hwnas: each round is a kit of whole networks to run there (the command "
                        "stops after writing it and says where its results go; rerun to go on)")
    p.add_argument("--space", required=True, help="space name or YAML path")
    p.add_argument("--budget", type=positive_int, default=100, help="most archs to measure (default 100)")
    p.add_argument("--batch", type=positive_int, default=10, help="archs measured per round (default 10)")
    p.add_argument("--target", type=float, default=0.95,
                   help="stop when this share of archs is within ±10 %% (90 %% lower bound of the leave-one-out "
                        "share; default 0.95)")
    p.add_argument("--pool", type=positive_int, default=2000, help="candidate archs to choose from (default 2000)")
    p.add_argument("--resolution", type=positive_int,
                   help="onboard archs at this input resolution, one the space offers (default: each arch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", type=Path, help="folder (default runs/onboard/DEVICE/SPACE)")
    Protocol.add_arguments(p)
    p.set_defaults(run=_devices_onboard)

    lut = commands.add_parser("lut", help="latency lookup tables: build, validate, kit, import")
    lut_cmds = lut.add_subparsers(title="lut commands", metavar="ACTION", required=True)

    p = lut_cmds.add_parser("build", help="profile every block of a space on a device (resumes)")
    _space_device(p)
    p.add_argument("--resolution", type=positive_int, nargs="+", help="input resolution(s) to profile")
    p.add_argument("-o", "--out", type=Path, help="LUT path (default latency_luts/DEVICE/SPACE.csv)")
    Protocol.add_arguments(p)
    p.add_argument("--calibrate", type=int, default=30, help="archs measured end to end for calibration (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace a LUT at the path that was built differently")
    p.set_defaults(run=_lut_build)

    p = lut_cmds.add_parser("validate", help="LUT predictions vs measured end-to-end latency")
    _space_device(p)
    p.add_argument("--lut", type=Path, help="LUT path (default latency_luts/DEVICE/SPACE.csv)")
    p.add_argument("--n", type=positive_int, default=200, help="random archs to measure (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/lut-validation"), help="folder for the CSV and PNG")
    p.add_argument("--allow-mismatch", action="store_true", help="warn instead of refusing a LUT of another device/runtime")
    p.add_argument("--passes", type=positive_int,
                   help="passes of the end-to-end measurements (default: the LUT's protocol); more passes, less noise")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_lut_validate)

    p = lut_cmds.add_parser("kit", help="a zip of ONNX micro-models + runner for a device without hwnas")
    p.add_argument("--space", required=True)
    p.add_argument("--resolution", type=positive_int, nargs="+")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("-o", "--out", type=Path, required=True, help="kit zip to write")
    p.set_defaults(run=_lut_kit)

    p = lut_cmds.add_parser("import", help="turn a kit's results CSV into a LUT")
    p.add_argument("results", type=Path)
    _space_device(p)
    p.add_argument("-o", "--out", type=Path, help="LUT path (default latency_luts/DEVICE/SPACE.csv)")
    p.add_argument("--allow-mismatch", action="store_true", help="accept results measured with other threads/provider")
    p.add_argument("--force", action="store_true", help="replace a LUT at the path that 'hwnas lut build' measured")
    p.set_defaults(run=_lut_import)

    memory = commands.add_parser("memory", help="the memory model against ONNX graphs and measured memory")
    memory_cmds = memory.add_subparsers(title="memory commands", metavar="ACTION", required=True)
    p = memory_cmds.add_parser("check", help="weights and activations vs ONNX initializers and process memory, random archs")
    _space_device(p)
    p.add_argument("--resolution", type=positive_int, help="input resolution (default the space's)")
    p.add_argument("--n", type=positive_int, default=20, help="random archs (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="the report with every arch's figures")
    p.set_defaults(run=_memory_check)

    energy = commands.add_parser("energy", help="energy per inference: estimate, measure, import")
    energy_cmds = energy.add_subparsers(title="energy commands", metavar="ACTION", required=True)
    p = energy_cmds.add_parser("estimate", help="analytic estimate from the device's power model and its LUT latency")
    _space_device(p)
    p.add_argument("arch", nargs="?", help="inline JSON, a JSON file, an NB201 string, max or min")
    p.add_argument("--lut", type=Path, help="latency LUT (default latency_luts/DEVICE/SPACE.csv)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_energy_estimate)
    p = energy_cmds.add_parser("measure", help="measured energy per inference (RAPL/NVML) on this machine")
    _space_device(p)
    p.add_argument("arch", nargs="?", help="inline JSON, a JSON file, an NB201 string, max or min")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_energy_measure)
    p = energy_cmds.add_parser("import", help="external measurements (mJ) into an energy LUT or an arch table")
    p.add_argument("csv", type=Path, help="by layer: columns key,energy_mj; by arch: columns arch,energy_mj")
    _space_device(p)
    p.add_argument("--by", choices=("layer", "arch"), required=True)
    p.add_argument("--resolution", type=positive_int, nargs="+", help="resolutions the layer keys cover")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.set_defaults(run=_energy_import)

    p = bench.add_parser("lut", help="archs per second of LUT latency scoring")
    _space_device(p)
    p.add_argument("--lut", type=Path)
    p.add_argument("-n", type=positive_int, default=1_000_000)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench_lut)


def _space_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help="space name or YAML path")
    p.add_argument("--device", required=True, help="device profile name (see 'hwnas devices list')")



def _devices_list(args: argparse.Namespace) -> Result:
    from nas.hardware.devices import device_names, load_device

    rows = [load_device(n).runtime() | {"name": n} for n in device_names()]
    return Result(rows, "\n".join(f"{r['name']:<14} {r['backend']:<12} {r['provider'] or '':<28} threads={r['threads']} "
                                  f"batch={r['batch']}" for r in rows))


def _devices_onboard(args: argparse.Namespace) -> Result:
    from nas.predictors.onboard import onboard
    from nas.space import load_space

    space = load_space(args.space)
    out = args.out or Path("runs") / "onboard" / args.device / space.name
    report = onboard(space, args.device, out, args.budget, args.batch, args.target, args.pool, args.seed,
                     Protocol.from_arguments(args), resolution=args.resolution, kit=args.kit)
    r = report["result"]
    return Result(report, f"{'reached' if r['reached_target'] else 'stopped short of'} {args.target:.0%} within ±10 % "
                          f"(90 % lower bound of the leave-one-out share {r['loo_within_10_lower_90']:.1%}) after {r['measured']} measurements; "
                          f"wrote {out}/predictor.npz, fidelity.json, profile.json, measurements.csv")


def _devices_show(args: argparse.Namespace) -> Result:
    from nas.hardware.devices import load_device

    info = load_device(args.device).describe()
    return Result(info, "\n".join(f"{key:<12} {json.dumps(value) if isinstance(value, (dict, list)) else value}"
                                  for key, value in info.items()))


def _lut_path(args: argparse.Namespace, given: Path | None):
    from nas.hardware.devices import load_device
    from nas.hardware.profiling import default_lut_path
    from nas.space import load_space

    space, device = load_space(args.space), load_device(args.device)
    return space, device, given or default_lut_path(device, space)


def _lut_build(args: argparse.Namespace) -> Result:
    from nas.hardware.profiling import build_lut

    space, device, out = _lut_path(args, args.out)
    lut = build_lut(space, device, args.resolution or [None], out, Protocol.from_arguments(args), args.calibrate, args.seed, args.force)
    cal = lut.meta.get("calibration") or {}
    return Result({"wrote": str(out), "meta": lut.meta},
                  f"wrote {out} ({len(lut.entries)} blocks, median noise {lut.meta['noise']['median_spread']:.1%}"
                  + (f", calibration residual {cal['residual_rmspe']:.1f} % RMSPE on {cal['n']} archs)" if cal else ")"))


def _lut_validate(args: argparse.Namespace) -> Result:
    from nas.hardware.lut import LUT
    from nas.hardware.validation import validate_lut

    space, device, path = _lut_path(args, args.lut)
    report = validate_lut(space, device, LUT.load(path), args.n, args.seed, args.out, args.allow_mismatch, args.passes)
    raw, ceiling = report["uncalibrated"], report["repeatability"]
    lines = [f"{space.name} on {device.name}, {report['n']} archs:"]
    for label, r in (("calibrated", report), ("sum of blocks", raw), ("re-measured", ceiling)):
        lines.append(f"  {label:<14} within ±5/10/15 %: {r['within_5']:.1%} / {r['within_10']:.1%} / {r['within_15']:.1%}"
                     f"  RMSPE {r['rmspe']:.2f} %  bias {r['bias']:+.2f} %  Kendall τ {r['kendall_tau']:.3f}"
                     f"  Spearman ρ {r['spearman_rho']:.3f}")
    lines.append(f"  ('re-measured' compares two measurements of {ceiling['n']} of the archs: the best any predictor can "
                 "do on this machine now)")
    lines.append("  wrote " + ", ".join(report.get("files", [])))
    return Result(report, "\n".join(lines))


def _lut_kit(args: argparse.Namespace) -> Result:
    from nas.hardware.kit import write_kit
    from nas.space import load_space

    manifest = write_kit(load_space(args.space), args.out, args.resolution or [None], args.batch)
    return Result({"wrote": str(args.out), "manifest": manifest},
                  f"wrote {args.out}: {len(manifest['entries'])} micro-models; on the device: unzip it, run "
                  "'python3 runner.py --threads N --out results.csv', then 'hwnas lut import results.csv ...'")


def _lut_import(args: argparse.Namespace) -> Result:
    from nas.errors import NasError
    from nas.hardware.kit import import_results
    from nas.hardware.lut import LUT

    space, device, out = _lut_path(args, args.out)
    meta_path = LUT.paths(out)[1]
    if meta_path.is_file() and not args.force:
        # a LUT measured here (no 'source': not imported) holds its calibration; only
        # a previous import of kit results may be replaced silently
        try:
            source = json.loads(meta_path.read_text(encoding="utf-8")).get("source", "")
        except (ValueError, AttributeError):
            source = ""
        if not str(source).startswith("kit results"):
            raise NasError(f"{out} holds a LUT that was not imported from kit results (built by 'hwnas lut build', "
                           "with its calibration); pass --force to replace it or choose another -o path")
    lut = import_results(args.results, space, device, out, args.allow_mismatch)
    return Result({"wrote": str(out), "blocks": len(lut.entries)},
                  f"wrote {out} ({len(lut.entries)} blocks from {args.results})")


def _bench_lut(args: argparse.Namespace) -> Result:
    from nas.bench.space import median_seconds, pin_one_core
    from nas.hardware.lut import LUT, LUTCost

    space, device, path = _lut_path(args, args.lut)
    pinned = pin_one_core()
    cost = LUTCost(LUT.load(path), space, device=device)
    codes = space.sample_codes(0, args.n)
    seconds = median_seconds(lambda: cost.predict(codes), args.repeats)
    row = {"space": space.name, "device": device.name, "n": args.n, "archs_per_s": args.n / seconds,
           "calibrated": cost.calibration is not None, "cpu": pinned}
    return Result(row, f"{space.name}@{device.name}: {row['archs_per_s']:,.0f} archs/s of LUT latency "
                       f"({args.n:,} archs, {'calibrated' if row['calibrated'] else 'raw sum'}, {pinned})")


def _memory_check(args: argparse.Namespace) -> Result:
    from nas.hardware.devices import load_device
    from nas.hardware.memory import check_memory
    from nas.space import load_space

    report = check_memory(load_space(args.space), load_device(args.device), args.n, args.seed, args.resolution)
    load, run = report["load_over_weights"], report["run_over_peak_activation"]
    return Result(report, "\n".join([
        f"{report['space']} on {report['device']}, {report['n']} random archs, memory measured in a fresh process each",
        f"  ONNX initializers equal the model's weight bytes: {'yes' if report['initializers_match_weights'] else 'NO'}",
        f"  resident growth while loading / weight bytes:     median {load['median']:.2f} (range {load['min']:.2f}-{load['max']:.2f})",
        f"  resident growth while running / peak activation:  median {run['median']:.2f} (range {run['min']:.2f}-{run['max']:.2f})",
        f"  Spearman, weights vs loading growth:               {_optional(report['spearman_weights_vs_load'])}",
        f"  Spearman, weights + activations vs total growth:   {_optional(report['spearman_model_vs_measured'])}"]))


def _optional(value: float | None) -> str:
    return "n/a (no spread)" if value is None else f"{value:.3f}"


def _energy_estimate(args: argparse.Namespace) -> Result:
    from nas.hardware.energy import AnalyticEnergy
    from nas.hardware.lut import LUT, LUTCost

    space, device, path = _lut_path(args, args.lut)
    arch = space.resolve_arch(args.arch)
    model = AnalyticEnergy(space, device, LUTCost(LUT.load(path), space, device=device))
    out = {"arch_id": arch.arch_id, "energy_mj": float(model.predict([arch])[0]), **model.describe()}
    return Result(out, f"{space.name} arch {arch.arch_id} on {device.name}: {out['energy_mj']:.4f} mJ per inference "
                       f"(ESTIMATE: {out['formula']} with {out['coefficients']})")


def _energy_measure(args: argparse.Namespace) -> Result:
    from nas.hardware.backends import make_backend
    from nas.hardware.devices import load_device
    from nas.hardware.energy import find_energy_counter, measure_energy
    from nas.space import load_space

    space, device = load_space(args.space), load_device(args.device)
    arch = space.resolve_arch(args.arch)
    counter = find_energy_counter()
    out = {"arch_id": arch.arch_id, "device": device.name,
           **measure_energy(make_backend(device).runner(space.layers(arch)), counter, args.seconds)}
    return Result(out, f"{space.name} arch {arch.arch_id}: {out['energy_mj']:.4f} mJ per inference "
                       f"({out['runs']} runs, {out['counter']}, idle power included)")


def _energy_import(args: argparse.Namespace) -> Result:
    from nas.hardware.devices import load_device
    from nas.hardware.energy import import_arch_energy, import_layer_energy
    from nas.space import load_space

    space, device = load_space(args.space), load_device(args.device)
    if args.by == "layer":
        lut = import_layer_energy(args.csv, space, device, args.out, args.resolution or [None])
        return Result({"wrote": str(args.out), "blocks": len(lut.entries)},
                      f"wrote energy LUT {args.out} ({len(lut.entries)} blocks)")
    n = import_arch_energy(args.csv, space, args.out)
    return Result({"wrote": str(args.out), "archs": n}, f"wrote {args.out} ({n} archs)")
