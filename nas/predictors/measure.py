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


def resolution_pin(space: SearchSpace, resolution: int | None) -> tuple[int, int] | None:
    """Where archs at `resolution` px sit in the code: (decision, choice) of the space's
    `resolution` decision, or None when nothing needs pinning (no resolution asked for,
    or the space's one fixed resolution).

    Measuring at a resolution means measuring archs whose own resolution it is, so a
    table or predictor made at 128 px holds real 128 px archs of the space (their codes
    say so) rather than other archs timed at a size they do not have."""
    if resolution is None:
        return None
    names = [d.name for d in space.decisions]
    if "resolution" in names:
        index = names.index("resolution")
        choices = list(space.decisions[index].choices)
        if resolution not in choices:
            raise NasError(f"space {space.name} does not offer resolution {resolution} "
                           f"(its resolution decision: {', '.join(map(str, choices))})")
        return index, choices.index(resolution)
    own = space.resolution(space.decode([0] * len(space.decisions)))
    if resolution != own:
        raise NasError(f"space {space.name} does not offer resolution {resolution}: its archs run at {own} px only")
    return None


def pin_codes(codes: np.ndarray, pin: tuple[int, int] | None) -> np.ndarray:
    """The codes with the resolution decision set as `resolution_pin` says (a copy)."""
    codes = np.array(codes, copy=True)
    if pin is not None:
        codes[:, pin[0]] = pin[1]
    return codes


def measure_table(space: SearchSpace, device_name: str, n: int, seed: int, out: Path, protocol: Protocol = Protocol(),
                  reference: bool = False, resolution: int | None = None) -> int:
    """Measure n archs (at `resolution` when given, see resolution_pin) and write the table;
    returns the number of rows."""
    pin = resolution_pin(space, resolution)
    device = load_device(device_name)
    backend = make_backend(device)
    archs: dict[str, Arch] = {}
    if reference:
        shipped = load_reference(space)
        if shipped is None:
            raise NasError(f"space {space.name} has no shipped reference set; "
                           "make one with 'hwnas predictor reference'")
        if pin is not None:
            shipped = space.decode_batch(pin_codes(space.encode_batch(shipped), pin))
        archs.update((a.arch_id, a) for a in shipped[:n])
    rng = np.random.default_rng(seed)
    for _ in range(100):
        if len(archs) >= min(n, space.size if pin is None else space.size // int(space.radices[pin[0]])):
            break
        for arch in space.decode_batch(pin_codes(space.sample_codes(rng, n), pin)):
            if len(archs) < n:
                archs.setdefault(arch.arch_id, arch)
    chosen = list(archs.values())
    timings = measure_archs(backend, space, chosen, None, protocol, desc=f"measure {space.name}@{device.name}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arch_id", "measured_ms", "p10_ms", "p90_ms", "arch"])
    for arch, t in zip(chosen, timings):
        writer.writerow([arch.arch_id, f"{t.at(protocol.statistic):.6f}", f"{t.p10:.6f}", f"{t.p90:.6f}", arch.to_json()])
    out = Path(out)
    write_atomic(out, buf.getvalue())
    meta = {"space": space.name, "device": device.name, "runtime": device.runtime(), "protocol": protocol.to_dict(),
            "seed": seed, "reference_first": reference, "n": len(chosen), "resolution": resolution,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return len(chosen)
