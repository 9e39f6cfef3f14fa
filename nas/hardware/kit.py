"""Profiling kits for devices without hwnas, and importing what they measured.

A kit is a zip of the ONNX micro-model of every unique block of a space, the space's
reference network (timed with every chunk, see measure.Yardstick), a manifest,
and a runner that needs only python3, numpy and onnxruntime (runner.py plus the very
measure.py hwnas uses). Its results CSV comes back through `import_results`, which
checks it row by row before anything is written.
"""
from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.atomic import atomic_path
from nas.errors import NasError
from nas.hardware import kit_runner, measure
from nas.hardware.devices import Device
from nas.hardware.lut import LUT, lut_blocks, new_meta, summary_from_row
from nas.hardware.onnx_graph import model_input_shape, network_model
from nas.hardware.profiling import reference_arch
from nas.space.base import SearchSpace
from nas.space.layers import LayerSpec

KIT_SCHEMA = "hwnas.kit/1"


class KitPending(NasError):
    """A kit is written; the work goes on when its results come back from the device."""
RESULT_COLUMNS = ["id", "key", "median", "p10", "p90", "mean", "std", "n", "rejected"]  # times in ms


def write_kit(space: SearchSpace, out: Path, resolutions: Sequence[int | None] = (None,), batch: int = 1) -> dict[str, Any]:
    """Write the kit zip of every block of the space atomically; returns its manifest."""
    specs = lut_blocks(space, resolutions)
    return write_models_kit(space, out, [(spec.key, [spec]) for spec in specs], space.fingerprint(), resolutions, batch,
                            f"hwnas profiling kit for space {space.name} ({len(specs)} blocks).")


def write_models_kit(space: SearchSpace, out: Path, models: Sequence[tuple[str, Sequence[LayerSpec]]], kit_id: str,
                     resolutions: Sequence[int | None] = (None,), batch: int = 1, title: str = "") -> dict[str, Any]:
    """A kit of any networks given as (key, LayerSpecs): single blocks for a LUT, whole archs
    for a front to verify (nas.search.verify). The runner times them all beside the
    space's reference network and keys its results by `key`."""
    reference = space.layers(reference_arch(space), resolutions[0])
    manifest: dict[str, Any] = {"schema": KIT_SCHEMA, "space": space.name, "kit_id": kit_id,
                                "resolutions": list(resolutions), "batch": batch, "entries": [],
                                "reference": {"file": "models/reference.onnx", "input": model_input_shape(reference[0], batch),
                                              "arch_id": reference_arch(space).arch_id, "resolution": resolutions[0]}}
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(manifest["reference"]["file"], network_model(reference, batch, compact=True).SerializeToString())
        for i, (key, layers) in enumerate(models):
            entry = {"id": f"m{i:05d}", "key": key, "file": f"models/m{i:05d}.onnx",
                     "input": model_input_shape(layers[0], batch)}
            z.writestr(entry["file"], network_model(list(layers), batch, name=key, compact=True).SerializeToString())
            manifest["entries"].append(entry)
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        z.writestr("runner.py", Path(kit_runner.__file__).read_text())
        z.writestr("measure.py", Path(measure.__file__).read_text())
        z.writestr("README.txt", f"{title}\n"
                                 "unzip, then: python3 runner.py --threads N --out results.csv\n"
                                 "needs: python3, numpy, onnxruntime\n")
    return manifest


def read_results(path: Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, str]]]]:
    """The results header and its rows with line numbers; malformed files are refused."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NasError(f"{path}: cannot read kit results ({exc})") from None
    if not lines or not lines[0].startswith("# "):
        raise NasError(f"{path}:1: not a kit results file (no '# {{...}}' header line from runner.py)")
    try:
        header = json.loads(lines[0][2:])
    except json.JSONDecodeError:
        raise NasError(f"{path}:1: garbled header line") from None
    if not isinstance(header, dict) or header.get("schema") != kit_runner.RESULTS_SCHEMA:
        raise NasError(f"{path}:1: header is not {kit_runner.RESULTS_SCHEMA}")
    reader = csv.reader(lines[1:])
    columns = next(reader, None)
    if columns != RESULT_COLUMNS:
        raise NasError(f"{path}:2: expected columns {','.join(RESULT_COLUMNS)}, got {','.join(columns or [])}")
    rows = []
    for line, values in enumerate(reader, start=3):
        if len(values) != len(RESULT_COLUMNS):
            raise NasError(f"{path}:{line}: expected {len(RESULT_COLUMNS)} fields, got {len(values)}")
        rows.append((line, dict(zip(RESULT_COLUMNS, values))))
    return header, rows


def read_models_results(results: Path, kit_id: str, keys: Sequence[str], device: Device,
                        allow_mismatch: bool = False) -> tuple[dict[str, measure.Summary], float | None, str]:
    """The timings of a `write_models_kit` kit, {key: Summary}, the kit's reference time
    (ms, None when absent) and the statistic its protocol measured: the results checked to
    be of this very kit, from the device's runtime, with a timing for every key asked for."""
    from nas.hardware.lut import summary_from_row

    header, rows = read_results(results)
    if header.get("kit") != kit_id:
        raise NasError(f"{results}: results of another kit ({header.get('kit')}; the archs asked for are kit {kit_id}); "
                       "delete the file and rerun to write the kit again")
    check_runtime(header, device, results, allow_mismatch)
    timings = {row["key"]: summary_from_row(row, f"{results}:{line}") for line, row in rows}
    missing = [k for k in keys if k not in timings]
    if missing:
        raise NasError(f"{results}: no timing for {len(missing)} of the {len(keys)} archs asked for, e.g. "
                       f"{missing[0]}; rerun the kit's runner")
    statistic = measure.Protocol.recorded(header.get("protocol")).statistic
    return {k: timings[k] for k in keys}, (header.get("reference") or {}).get("ms"), statistic


def check_runtime(header: dict[str, Any], device: Device, results: Path, allow_mismatch: bool = False) -> None:
    """Refuse results measured with another provider, thread count or batch than the device profile's."""
    problems = [f"{k} {header.get(k)!r} vs device {getattr(device, k)!r}"
                for k in ("provider", "threads", "batch") if header.get(k) != getattr(device, k)]
    if problems and not allow_mismatch:
        raise NasError(f"{results}: measured differently from device {device.name}: {'; '.join(problems)} "
                       "(fix device.yaml or pass --allow-mismatch)")


def import_results(results: Path, space: SearchSpace, device: Device, out: Path,
                   allow_mismatch: bool = False) -> LUT:
    """A LUT from a kit's results CSV: every block of the kit present once, every time sane."""
    header, rows = read_results(results)
    resolutions = header.get("resolutions", [None])
    specs = {s.key: s for s in lut_blocks(space, resolutions)}
    device.check_precisions(specs.values(), f"space {space.name}")
    if header.get("space") != space.name or header.get("kit") != space.fingerprint():
        raise NasError(f"{results}: results are from a kit of space {header.get('space')!r} "
                       f"(kit {header.get('kit')}), not of {space.name!r} as it is now (fingerprint {space.fingerprint()}); "
                       "make a new kit")
    check_runtime(header, device, results, allow_mismatch)
    entries: dict[str, tuple] = {}
    for line, row in rows:
        where = f"{results}:{line}"
        key = row["key"]
        if key not in specs:
            raise NasError(f"{where}: unknown block {key!r} (not in the kit)")
        if key in entries:
            raise NasError(f"{where}: duplicated block {key!r}")
        entries[key] = (specs[key], summary_from_row(row, where))
    missing = [k for k in specs if k not in entries]
    if missing:
        raise NasError(f"{results}: {len(missing)} block(s) missing, e.g. {missing[0]!r}; rerun the kit's runner")
    meta = new_meta(space, device, resolutions, protocol=header.get("protocol"),
                    host={"node": header.get("node"), "machine": header.get("machine")}, source=f"kit results {Path(results).name}")
    meta["runtime"] = {**device.runtime(), "provider": header.get("provider"), "threads": header.get("threads"),
                       "batch": header.get("batch"), "versions": {"onnxruntime": header.get("onnxruntime")}}
    meta["reference"] = header.get("reference")
    meta["complete"] = True
    lut = LUT(meta, {k: entries[k] for k in specs})
    lut.save(out)
    return lut
