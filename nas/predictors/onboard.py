"""`hwnas device onboard DEVICE --space SPACE`: from nothing to a validated predictor.

Rounds of measurements on this machine (whole archs, the LUT protocol of
nas.hardware.measure), each followed by a fit and an estimate of its own fidelity:

  picks     the first round is the reference design over a seeded pool of archs
            (spread over the coarse physical features, nas.predictors.reference);
            later rounds take the pool archs with the widest 90 % interval, i.e.
            where the predictor is least sure
  fit       `hwnas predictor fit --model auto` on everything measured: transfer from
            the space's shipped predictors of other devices when it has any, else the
            group ridge; with the device's LUT of the space (when one exists) its
            per-arch sum becomes a feature (model lut_residual)
  fidelity  the share of measured archs within +-10 % of the prediction made without
            them (closed-form leave-one-out, the predictor's calibration residuals)
  stop      when the one-sided 90 % Wilson lower bound of that share reaches the
            target, or the measurement budget is spent. The bound, not the share:
            on tiny_mbconv@local-cpu the share read 95 % at 20 measurements while
            only 78 % of 200 fresh archs were within +-10 % (docs/benchmarks.md), a
            handful of archs and penalties tuned on the same leave-one-out errors
            make the raw share optimistic

A device that cannot run hwnas (only python3, numpy and onnxruntime) is onboarded with
`--kit`: each round's archs are written as a kit of whole networks (nas.hardware.kit)
into FOLDER/kits/roundK.zip and the command stops saying what to run on the device;
rerun with its results.csv at FOLDER/kits/roundK.csv, it checks them against the archs
asked for, reads every round on the first round's reference scale and goes on.

Everything lives in one folder: measurements.csv (rewritten atomically after every
round, so a killed run resumes without re-measuring), predictor.npz, fidelity.json
(the curve of estimated fidelity against measurements, with wall time) and
profile.json (the device's runtime, protocol and what the predictor was made from).
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nas.atomic import write_atomic
from nas.errors import NasError
from nas.hardware.measure import Protocol
from nas.jsonfile import read_json
from nas.space.arch import Arch
from nas.space.base import SearchSpace

COLUMN = "measured_ms"
FIRST_ROUND_MIN = 10
SCHEMA = "hwnas.onboard/1"


def _pool(space: SearchSpace, size: int, seed: int, pin: tuple[int, int] | None = None) -> np.ndarray:
    """The candidate archs: the whole space when it is small, else a seeded sample; every
    one at the pinned resolution (nas.predictors.measure.resolution_pin)."""
    from nas.predictors.measure import pin_codes

    if space.size <= size:
        return np.unique(pin_codes(space.encode_batch(list(space.enumerate())), pin), axis=0)
    return np.unique(pin_codes(space.sample_codes(np.random.default_rng([seed, 17]), size), pin), axis=0)


def _read_measured(path: Path, space: SearchSpace) -> dict[str, tuple[Arch, float]]:
    from nas.predictors.tables import read_table

    if not path.is_file():
        return {}
    table = read_table(path, space)
    rows, values, _ = table.rows(COLUMN, positive=True)
    archs = table.archs(rows)
    return {a.arch_id: (a, float(v)) for a, v in zip(archs, values)}


def _write_measured(path: Path, measured: dict[str, tuple[Arch, float]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arch_id", COLUMN, "arch"])
    for arch_id, (arch, value) in measured.items():
        writer.writerow([arch_id, f"{value:.6f}", arch.to_json()])
    write_atomic(path, buf.getvalue())


def loo_within_10(predictor) -> tuple[float, float]:
    """Share of the training archs within +-10 % of their leave-one-out prediction, and
    its one-sided 90 % Wilson lower bound."""
    residuals = np.abs(np.asarray(predictor.meta["calibration"]["log_residuals"]))
    n, share = len(residuals), float(np.mean(residuals <= np.log(1.1)))
    z = 1.2816  # one-sided 90 %
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return share, float(centre - half)


def _lut_values(space: SearchSpace, device) -> dict[str, float] | None:
    from nas.hardware.lut import LUT
    from nas.hardware.profiling import default_lut_path

    path = default_lut_path(device, space)
    if not Path(path).is_file():
        return None
    lut = LUT.load(path)
    lut.check(space)
    return {key: lut.value(spec) for key, (spec, _) in lut.entries.items()}


def onboard(space: SearchSpace, device_name: str, out: Path, budget: int = 100, batch: int = 10,
            target: float = 0.95, pool_size: int = 2000, seed: int = 0, protocol: Protocol = Protocol(),
            log=print, resolution: int | None = None, kit: bool = False) -> dict[str, Any]:
    """Run (or resume) onboarding; returns the fidelity report. With `resolution`, every
    arch is one of the space's at that input size (its resolution decision pinned); with
    `kit`, every round is measured on the device through a kit (KitPending until its
    results are back)."""
    from nas.hardware.backends import make_backend
    from nas.hardware.devices import load_device
    from nas.hardware.profiling import measure_archs
    from nas.predictors.features import get_featurizer
    from nas.predictors.measure import resolution_pin
    from nas.predictors.predictor import fit_predictor
    from nas.predictors.reference import TYPICAL, coarse_features, design_order
    from nas.predictors.tables import read_table

    if not 0 < target <= 1:
        raise NasError(f"--target {target} must be a share in (0, 1], e.g. 0.95")
    if budget < FIRST_ROUND_MIN:
        raise NasError(f"--budget {budget} is below the first round's {FIRST_ROUND_MIN} measurements")
    pin = resolution_pin(space, resolution)
    device = load_device(device_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table_path, report_path = out / "measurements.csv", out / "fidelity.json"
    settings = {"space": space.name, "device": device.name, "budget": budget, "batch": batch, "target": target,
                "pool": pool_size, "seed": seed, "resolution": resolution, "kit": kit}
    report: dict[str, Any] = {"schema": SCHEMA, "settings": settings, "curve": []}
    if report_path.is_file():
        previous = read_json(report_path, f"no onboarding report at {report_path}", schema=SCHEMA)
        if previous.get("settings", {}).get("space") != space.name or previous["settings"].get("device") != device.name:
            raise NasError(f"{out} holds the onboarding of {previous['settings'].get('device')} on "
                           f"{previous['settings'].get('space')}; use another --out")
        if previous["settings"].get("resolution") != resolution:
            raise NasError(f"{out} holds an onboarding at --resolution {previous['settings'].get('resolution')}, "
                           f"not {resolution}; use another --out")
        if bool(previous["settings"].get("kit")) != kit:
            raise NasError(f"{out} holds an onboarding {'through kits' if previous['settings'].get('kit') else 'measured here'}"
                           f"; {'pass' if previous['settings'].get('kit') else 'drop'} --kit, or use another --out")
        report["curve"] = previous.get("curve", [])
        report["kit_rounds"] = previous.get("kit_rounds", [])
    measured = _read_measured(table_path, space)
    lut_values = _lut_values(space, device)
    pool = _pool(space, pool_size, seed, pin)
    features = coarse_features(get_featurizer(space), pool)
    design = design_order(features, min(budget, int(len(pool) * TYPICAL) - 1), seed)
    backend = None if kit else make_backend(device)
    predictor, estimate = None, 0.0
    started = time.perf_counter() - (report["curve"][-1]["seconds"] if report["curve"] else 0.0)
    while True:
        if len(measured) >= FIRST_ROUND_MIN:
            table = read_table(table_path, space)
            model = "lut_residual" if lut_values is not None else "auto"
            predictor = fit_predictor(table, COLUMN, None, seed, model, lut_values=lut_values, device=device.name)
            share, estimate = loo_within_10(predictor)
            if not report["curve"] or report["curve"][-1]["measured"] != len(measured):
                report["curve"].append({"measured": len(measured), "loo_within_10": share,
                                        "loo_within_10_lower_90": estimate,
                                        "model": predictor.meta["model"],
                                        "seconds": round(time.perf_counter() - started, 1)})
            predictor.save(out / "predictor.npz")
            write_atomic(report_path, json.dumps(report, indent=1) + "\n")
            log(f"{len(measured)} measured: {predictor.meta['model']} predictor, leave-one-out within ±10 % "
                f"{share:.1%} (90 % lower bound {estimate:.1%}, target {target:.0%})")
            if estimate >= target or len(measured) >= budget:
                break
        picks = _next_archs(space, pool, design, measured, predictor, min(batch, budget - len(measured)))
        if not picks:
            break
        if kit:
            times = _kit_round(space, device, picks, out, report)
        else:
            times = [t.at(protocol.statistic) for t in measure_archs(
                backend, space, picks, None, protocol, desc=f"onboard {space.name}@{device.name} ({len(measured)}/{budget})")]
        for arch, ms in zip(picks, times):
            measured[arch.arch_id] = (arch, float(ms))
        _write_measured(table_path, measured)
    report["result"] = {"measured": len(measured), "loo_within_10_lower_90": estimate, "reached_target": estimate >= target,
                        "predictor": str(out / "predictor.npz")}
    write_atomic(report_path, json.dumps(report, indent=1) + "\n")
    profile = {"device": device.name, "space": space.name, "resolution": resolution, "runtime": device.runtime(),
               "protocol": protocol.to_dict(),
               "lut": lut_values is not None, "predictor_model": predictor.meta["model"] if predictor else None,
               "transfer_sources": (predictor.meta.get("transfer") or {}).get("sources") if predictor else None,
               "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_atomic(out / "profile.json", json.dumps(profile, indent=1) + "\n")
    return report


def _kit_round(space: SearchSpace, device, picks: list[Arch], out: Path, report: dict[str, Any]) -> list[float]:
    """One round measured on the device through a kit: the times (ms, the kit protocol's
    statistic, on the first round's reference scale, so rounds run on different days read
    alike) when its results are back, else the kit written, the report saved and
    KitPending raised."""
    import hashlib

    from nas.hardware.kit import KitPending, read_models_results, write_models_kit

    rounds = report.setdefault("kit_rounds", [])
    k = len(rounds) + 1
    ids = [a.arch_id for a in picks]
    kit_id = hashlib.sha256(json.dumps([space.fingerprint(), k, ids]).encode()).hexdigest()[:16]
    zip_path, results = out / "kits" / f"round{k}.zip", out / "kits" / f"round{k}.csv"
    if not results.is_file():
        if not zip_path.is_file():
            write_models_kit(space, zip_path, [(a.arch_id, space.layers(a)) for a in picks], kit_id, [None],
                             device.batch, f"hwnas onboarding kit: round {k}, {len(picks)} archs of {space.name}")
        write_atomic(out / "fidelity.json", json.dumps(report, indent=1) + "\n")
        raise KitPending(f"onboarding round {k} needs the device: copy {zip_path} to {device.name}, run 'unzip "
                         f"{zip_path.name} -d kit && python3 kit/runner.py --threads {device.threads} --out results.csv' "
                         f"there, bring results.csv back to {results}, then rerun the same command")
    timings, reference_ms, statistic = read_models_results(results, kit_id, ids, device)
    first = rounds[0]["reference_ms"] if rounds else reference_ms
    factor = first / reference_ms if first and reference_ms else 1.0
    rounds.append({"round": k, "kit": kit_id, "archs": len(ids), "reference_ms": reference_ms, "scale": factor})
    return [timings[i].at(statistic) * factor for i in ids]


def _next_archs(space: SearchSpace, pool: np.ndarray, design: np.ndarray, measured: dict, predictor,
                n: int) -> list[Arch]:
    """The first round: the design's archs; later: the unmeasured pool archs with the
    widest 90 % interval. A single model's interval is as wide everywhere (no members
    to disagree): then the design goes on, the next most different archs."""
    archs = space.decode_batch(pool)
    fresh = np.array([a.arch_id not in measured for a in archs])
    order = [int(i) for i in design if fresh[i]]
    if predictor is None:
        n = max(n, FIRST_ROUND_MIN - len(measured))
    else:
        lower, upper = predictor.interval(pool, 0.9)
        width = np.log(upper / lower)
        if np.ptp(width[fresh]) > 1e-9:
            order = [int(i) for i in np.argsort(-np.where(fresh, width, -np.inf), kind="stable") if fresh[i]]
    return [archs[i] for i in order[:n]]


def validate_curve(space: SearchSpace, out: Path, fresh: Path, seed: int = 0) -> list[dict[str, Any]]:
    """The onboarding's curve scored on fresh archs (`hwnas measure` of the same device):
    the predictor of each round (refitted on the first n measurements, as onboarding
    fitted it) against the fresh measurements, archs it measured left out."""
    from nas.predictors.predictor import evaluate, fit_predictor
    from nas.predictors.tables import read_table

    out = Path(out)
    report = read_json(out / "fidelity.json", f"no onboarding report in {out}", schema=SCHEMA)
    measured = read_table(out / "measurements.csv", space)
    fresh_table = read_table(fresh, space)
    device = report["settings"]["device"]
    lut_values = None
    if any(p.get("model") == "lut_residual" for p in report["curve"]):
        from nas.hardware.devices import load_device

        lut_values = _lut_values(space, load_device(device))
    points = []
    for point in report["curve"]:
        n = point["measured"]
        rows = np.arange(n)
        head = _first_rows(measured, rows, out / f".first_{n}.csv")
        predictor = fit_predictor(head, COLUMN, None, seed, point["model"], lut_values=lut_values, device=device)
        scored = evaluate(predictor, fresh_table, COLUMN)
        points.append({**point, "fresh_within_10": scored["within_10"], "fresh_spearman": scored["spearman_rho"],
                       "fresh_archs": scored["n"], "fresh_coverage_90": scored.get("coverage_90")})
    return points


def _first_rows(table, rows: np.ndarray, scratch: Path):
    """The table cut to its first rows (measurement order), through a scratch CSV so the
    predictor records the same provenance as onboarding's own fits."""
    from nas.predictors.tables import read_table

    values = table.column(COLUMN).values
    archs = table.archs(rows)
    _write_measured(scratch, {a.arch_id: (a, float(values[i])) for a, i in zip(archs, rows)})
    try:
        return read_table(scratch, table.space)
    finally:
        scratch.unlink(missing_ok=True)
