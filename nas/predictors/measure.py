"""`hwnas measure`: whole archs timed end to end on a device, as a predictor training table.

The archs are the space's reference set (optional, first, so a new device's table can
drive few-shot transfer) and then seeded random archs; each is built whole and timed
with the device's backend under the LUT protocol. The CSV has the columns of `hwnas
lut validate`'s (arch_id, measured_ms, p10_ms, p90_ms, arch) and a JSON sidecar records
the device runtime and protocol.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from pathlib import Path

import numpy as np

from nas.errors import NasError
from nas.hardware.backends import make_backend
from nas.hardware.devices import load_device
from nas.hardware.lut import write_atomic
from nas.hardware.measure import Protocol
from nas.hardware.profiling import measure_archs
from nas.predictors.reference import load_reference
from nas.space.arch import Arch
from nas.space.base import SearchSpace


def measure_table(space: SearchSpace, device_name: str, n: int, seed: int, out: Path, protocol: Protocol = Protocol(),
                  reference: bool = False) -> int:
    """Measure n archs and write the table; returns the number of rows."""
    device = load_device(device_name)
    backend = make_backend(device)
    archs: dict[str, Arch] = {}
    if reference:
        shipped = load_reference(space)
        if shipped is None:
            raise NasError(f"space {space.name} has no shipped reference set; "
                           "make one with 'hwnas predictor reference'")
        archs.update((a.arch_id, a) for a in shipped[:n])
    rng = np.random.default_rng(seed)
    for _ in range(100):
        if len(archs) >= min(n, space.size):
            break
        for arch in space.decode_batch(space.sample_codes(rng, n)):
            if len(archs) < n:
                archs.setdefault(arch.arch_id, arch)
    chosen = list(archs.values())
    timings = measure_archs(backend, space, chosen, None, protocol, desc=f"measure {space.name}@{device.name}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arch_id", "measured_ms", "p10_ms", "p90_ms", "arch"])
    for arch, t in zip(chosen, timings):
        writer.writerow([arch.arch_id, f"{t.median:.6f}", f"{t.p10:.6f}", f"{t.p90:.6f}", arch.to_json()])
    out = Path(out)
    write_atomic(out, buf.getvalue())
    meta = {"space": space.name, "device": device.name, "runtime": device.runtime(), "protocol": protocol.to_dict(),
            "seed": seed, "reference_first": reference, "n": len(chosen),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return len(chosen)
