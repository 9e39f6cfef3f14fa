"""How close LUT predictions come to measured end-to-end latency.

Random archs that were not used for calibration are built whole, measured with the
LUT's own backend and protocol, and compared with both the raw sum of blocks and the
calibrated prediction. A subset is then measured a second time: how well two
measurements of the same archs agree is the ceiling any predictor can reach on this
machine now (a busy or throttling machine lowers it), reported beside the LUT's figures.
All measurements are rescaled to the LUT's reference network (see measure.Yardstick);
the report gives the range of those drift factors.

The end-to-end side runs the LUT's protocol unless `passes` asks for more: on a busy
machine one pass of a whole network is noisy (7-11 % per arch on ofa_mbv3_int8 at 128 px
at load 5 on 2 cores), and pooling passes is what brings it down (2.8 % at 3 passes,
2.3 % at 4), because every extra pass also ties the chunks together for the drift fit.
Where the archs' latencies lie close together (ofa_mbv3 at 128 px: 15 % spread, half of
tiny_mbconv's), that noise alone caps Kendall tau, so a precise validation spends passes
(docs/benchmarks.md, issue 15); the repeat set is measured with the same protocol, so
the reported ceiling is the ceiling of the measurement actually used.
Writes a per-arch CSV and a predicted-vs-measured scatter PNG.
"""
from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nas.atomic import atomic_path, write_atomic
from nas.hardware.backends import make_backend
from nas.hardware.devices import Device
from nas.hardware.lut import LUT, LUTCost
from nas.hardware.measure import Protocol
from nas.hardware.profiling import lut_yardstick, measure_archs, validation_archs
from nas.metrics import regression_report
from nas.space.base import SearchSpace

REPEAT = 40  # archs measured twice for the repeatability ceiling


def validate_lut(space: SearchSpace, device: Device, lut: LUT, n: int = 200, seed: int = 0,
                 out_dir: Path | None = None, allow_mismatch: bool = False, passes: int | None = None) -> dict[str, Any]:
    """Measure `n` held-out archs whole and compare them with the LUT's predictions.

    Single-threaded by protocol, whatever the process's parallelism (nas/threads.py):
    every network runs with the device profile's pinned threads (1 for local-cpu) and
    one inter-op thread, exactly as the LUT's blocks were timed, so the two are
    comparable; sizing this to the free cores would measure another configuration."""
    raw = LUTCost(lut, space, calibrated=False, device=device, allow_mismatch=allow_mismatch)
    calibrated = LUTCost(lut, space, calibrated=True, device=device, allow_mismatch=allow_mismatch)
    protocol = Protocol.recorded(lut.meta.get("protocol"))
    if passes is not None:
        protocol = replace(protocol, passes=passes)
    archs = validation_archs(lut, space, n, seed)
    codes = space.encode_batch(archs)
    backend = make_backend(device)
    yardstick = lut_yardstick(lut, space, backend, raw.resolution)
    timings = measure_archs(backend, space, archs, raw.resolution, protocol, desc="validation", yardstick=yardstick)
    measured = np.array([t.at(protocol.statistic) for t in timings])
    again = measure_archs(backend, space, archs[:REPEAT], raw.resolution, protocol, desc="repeat", yardstick=yardstick)
    predicted_raw, predicted = raw.predict(codes), calibrated.predict(codes)
    report: dict[str, Any] = {
        "space": space.name, "device": device.name, "resolution": raw.resolution, "n": len(archs), "seed": seed,
        "protocol": protocol.to_dict(),
        **regression_report(predicted, measured),
        "calibrated": calibrated.calibration is not None,
        "uncalibrated": regression_report(predicted_raw, measured),
        "measurement_spread_median": float(np.median([t.spread for t in timings])),
        "samples_per_arch": int(np.median([t.n + t.rejected for t in timings])),
        "repeatability": regression_report(np.array([t.at(protocol.statistic) for t in again]), measured[:REPEAT]),
        "drift_factor_range": [float(min(yardstick.factors)), float(max(yardstick.factors))],
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        stem = f"validate_{space.name}_{device.name}"
        _write_csv(out_dir / f"{stem}.csv", archs, measured, predicted_raw, predicted, timings)
        _scatter(out_dir / f"{stem}.png", measured, predicted_raw, predicted, report)
        report["files"] = [str(out_dir / f"{stem}.csv"), str(out_dir / f"{stem}.png")]
    return report


def _write_csv(path: Path, archs, measured, raw, predicted, timings) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch_id", "measured_ms", "p10_ms", "p90_ms", "predicted_raw_ms", "predicted_ms", "arch"])
    for a, m, r, p, t in zip(archs, measured, raw, predicted, timings):
        w.writerow([a.arch_id, f"{m:.6f}", f"{t.p10:.6f}", f"{t.p90:.6f}", f"{r:.6f}", f"{p:.6f}", a.to_json()])
    write_atomic(path, buf.getvalue())


def _scatter(path: Path, measured, raw, predicted, report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = float(min(measured.min(), raw.min(), predicted.min())), float(max(measured.max(), raw.max(), predicted.max()))
    grid = np.linspace(lo, hi, 2)
    ax.fill_between(grid, grid * 0.9, grid * 1.1, color="0.9", label="±10 %")
    ax.plot(grid, grid, color="0.4", lw=1)
    ax.scatter(measured, raw, s=8, alpha=0.5, label=f"sum of blocks ({report['uncalibrated']['within_10']:.0%} within 10 %)")
    ax.scatter(measured, predicted, s=8, alpha=0.7, label=f"calibrated ({report['within_10']:.0%} within 10 %)")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("LUT prediction (ms)")
    ax.set_title(f"{report['space']} on {report['device']}: Kendall τ {report['kendall_tau']:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
