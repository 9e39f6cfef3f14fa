"""Building LUTs by profiling, and measuring whole archs end to end.

A build profiles every unique block the space can produce at the chosen resolutions,
in batches: each batch is measured (all passes, see measure.measure_models) and then
the whole LUT is rewritten atomically, so a killed build loses at most the batch in
flight and a rerun with the same output resumes where it stopped. Calibration and
validation measure whole archs with the same backend and protocol as the blocks.
Every chunk, of blocks or of whole archs, is timed beside the LUT's reference network
(the space's middle arch) and rescaled to its baseline time, so drift of the machine
between chunks and between the build and later measurements cancels (see
measure.Yardstick).
"""
from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nas import catalog
from nas.errors import NasError
from nas.hardware.backends import Backend, make_backend
from nas.hardware.calibration import block_features, fit_calibration
from nas.hardware.devices import Device, host_facts
from nas.hardware.lut import LUT, LUTCost, lut_blocks, new_meta
from nas.hardware.measure import Protocol, Summary, Yardstick, measure_models
from nas.space.arch import Arch
from nas.space.base import SearchSpace
from nas.space.layers import LayerSpec
from nas.space.tables import SpecTable

CHUNK = 16  # models timed together, interleaved
BATCH = 3 * CHUNK  # blocks measured between two saves of a LUT build


def default_lut_path(device: Device, space: SearchSpace) -> Path:
    """The device's LUT of the space: the first LUT layer's <device>/<space>.csv (see
    nas.catalog), else where a new one is written (Device.folder, the first user layer)."""
    name = f"{space.name}.csv"
    return catalog.find(catalog.LUTS, f"{device.name}/{name}") or device.folder / name


def arch_rng(seed: int, purpose: str) -> np.random.Generator:
    """Separate random streams for calibration and validation archs from one seed."""
    return np.random.default_rng([seed, {"calibration": 1, "validation": 2}[purpose]])


def reference_arch(space: SearchSpace) -> Arch:
    """The middle choice of every decision: a mid-sized network, the same on every machine."""
    return space.decode([len(d.choices) // 2 for d in space.decisions])


def lut_yardstick(lut: LUT, space: SearchSpace, backend: Backend, resolution: int | None) -> Yardstick:
    """The LUT's reference network on this backend, with the LUT's baseline when it has one."""
    reference = lut.meta.get("reference") or {}
    layers = space.layers(reference_arch(space), reference.get("resolution", resolution))
    return Yardstick(lambda: backend.runner(layers), reference.get("ms"))


def _reference_meta(space: SearchSpace, resolution: int | None, yardstick: Yardstick) -> dict:
    """What a LUT keeps of its yardstick, so later measurements read on its scale."""
    return {"arch_id": reference_arch(space).arch_id, "resolution": resolution, "ms": yardstick.baseline_ms}


def measure_archs(backend: Backend, space: SearchSpace, archs: Sequence[Arch], resolution: int | None,
                  protocol: Protocol, desc: str | None = None, yardstick: Yardstick | None = None) -> list[Summary]:
    """End-to-end timings of whole archs, interleaved in chunks of CHUNK models, over the protocol's passes."""
    factories = [lambda a=a, i=i: backend.runner(space.layers(a, resolution), seed=i) for i, a in enumerate(archs)]
    return measure_models(factories, protocol, yardstick, CHUNK, desc=desc)


def build_lut(space: SearchSpace, device: Device, resolutions: Sequence[int | None] = (None,), out: Path | None = None,
              protocol: Protocol = Protocol(), calibrate: int = 30, seed: int = 0, force: bool = False) -> LUT:
    """Profile every block of the space on the device and write the LUT (resuming a partial one)."""
    out = Path(out) if out else default_lut_path(device, space)
    specs = lut_blocks(space, resolutions)
    device.check_precisions(specs, f"space {space.name}")
    backend = make_backend(device)
    meta = new_meta(space, device, list(resolutions), protocol=protocol.to_dict(),
                    host={"node": platform.node(), "cpu": host_facts()["cpu"], "machine": platform.machine()})
    lut = _resume(out, meta, force)
    yardstick = lut_yardstick(lut, space, backend, resolutions[0])
    todo = [s for s in specs if s.key not in lut.entries]
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=f"LUT {space.name}@{device.name}", unit="layer")
    for start in range(0, len(todo), BATCH):
        batch = todo[start:start + BATCH]
        factories = [lambda s=s: backend.runner([s], seed=seed) for s in batch]
        for spec, timing in zip(batch, measure_models(factories, protocol, yardstick, CHUNK, seed=start)):
            lut.entries[spec.key] = (spec, timing)
        lut.meta["reference"] = _reference_meta(space, resolutions[0], yardstick)
        lut.save(out)
        bar.update(len(batch))
    bar.close()
    spreads = np.array([t.spread for _, t in lut.entries.values()])
    lut.meta["noise"] = {"median_spread": float(np.median(spreads)), "p90_spread": float(np.percentile(spreads, 90))}
    lut.meta["overhead_ms"] = measure_models([lambda: backend.runner([LayerSpec("skip", 1, 1, 1)])], protocol,
                                             yardstick)[0].at(protocol.statistic)
    lut.meta["reference"] = _reference_meta(space, resolutions[0], yardstick)
    if calibrate:
        calibrate_lut(lut, space, backend, calibrate, seed, protocol)
    lut.meta["complete"] = True
    lut.save(out)
    return lut


def calibrate_lut(lut: LUT, space: SearchSpace, backend: Backend, n: int, seed: int, protocol: Protocol) -> None:
    """Fit and store the end-to-end calibration on n random archs (ids kept for validation)."""
    resolution = LUTCost(lut, space, calibrated=False).resolution
    archs = distinct_archs(space, n, arch_rng(seed, "calibration"))
    codes = space.encode_batch(archs)
    features = {name: SpecTable(space, fn, "sum", resolution)(codes) for name, fn in block_features(lut.value).items()}
    timings = measure_archs(backend, space, archs, resolution, protocol, desc="calibration",
                            yardstick=lut_yardstick(lut, space, backend, resolution))
    measured = np.array([t.at(protocol.statistic) for t in timings])
    lut.meta["calibration"] = {**fit_calibration(features, measured), "arch_ids": [a.arch_id for a in archs], "seed": seed}


def distinct_archs(space: SearchSpace, n: int, rng: np.random.Generator, exclude: set[str] = frozenset()) -> list[Arch]:
    """n different random archs (fewer when the space holds fewer), none of them in exclude."""
    archs: dict[str, Arch] = {}
    for _ in range(100):
        for arch in space.decode_batch(space.sample_codes(rng, n)):
            if arch.arch_id not in exclude and len(archs) < n:
                archs.setdefault(arch.arch_id, arch)
        if len(archs) == n or len(archs) + len(exclude) >= space.size:
            break
    return list(archs.values())


def _resume(out: Path, meta: dict, force: bool) -> LUT:
    """The partial LUT at `out` when it was made the same way; with `force`, a fresh one."""
    if not LUT.paths(out)[0].exists():
        return LUT(meta, {})
    try:
        old = LUT.load(out)
    except NasError as exc:
        if force:
            return LUT(meta, {})
        raise NasError(f"cannot resume from {out}: {exc}; pass --force to replace it") from None
    same = all(old.meta.get(k) == meta[k] for k in ("space", "space_fingerprint", "device", "runtime", "resolutions", "protocol"))
    if same and (old.meta.get("reference") or not old.entries):  # without a reference its timings have no common scale
        meta["created"] = old.meta.get("created", meta["created"])
        meta["reference"] = old.meta.get("reference")  # resumed chunks are rescaled to the same baseline
        return LUT(meta, old.entries)
    if force:
        return LUT(meta, {})
    raise NasError(f"{out} holds a LUT built differently (space, device, runtime, resolutions or protocol differ, or it "
                   "predates the reference network); pass --force to replace it or choose another -o path")


def validation_archs(lut: LUT, space: SearchSpace, n: int, seed: int) -> list[Arch]:
    """n random archs not used for the LUT's calibration."""
    used = set((lut.meta.get("calibration") or {}).get("arch_ids", []))
    return distinct_archs(space, n, arch_rng(seed, "validation"), exclude=used)
