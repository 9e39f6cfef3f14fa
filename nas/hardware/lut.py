"""Lookup tables: a measured value per LayerSpec, as a CSV plus a JSON of provenance.

`<name>.csv` holds one row per block: its LayerSpec fields (so the block can be rebuilt
and featurised) and the timing summary. `<name>.json` holds what the numbers depend
on: schema, metric and unit, space and its fingerprint (SearchSpace.fingerprint), device and runtime
(backend, provider, threads, batch, dtype, library versions), protocol, host, date,
measurement noise and the end-to-end calibration. Loading parses text only.
"""
from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from nas.atomic import write_atomic
from nas.costs import CostModel, as_codes
from nas.errors import CompatibilityError, CompatibilityWarning, DataError, NasError, unknown_key
from nas.hardware.calibration import calibrated_block_value
from nas.hardware.devices import Device, host_facts
from nas.hardware.measure import Protocol, Summary
from nas.jsonfile import read_json
from nas.space.arch import Arch
from nas.space.base import SearchSpace
from nas.space.layers import LayerSpec
from nas.space.tables import SpecTable, unique_layers

SCHEMA = "hwnas.lut/1"
SPEC_COLUMNS = [f.name for f in fields(LayerSpec)]
VALUE_COLUMNS = [f.name for f in fields(Summary)]
BOOL_COLUMNS = {"shuffle", "bn", "bias", "preact", "cls_token"}
INT_COLUMNS = {"in_ch", "out_ch", "in_size", "kernel", "stride", "mid_ch", "groups", "se_ch", "heads", "head_dim"}
# Columns a LUT written before blocks had a precision lacks (its blocks are all float), and
# before transformer blocks (issue 18) lacks (no token sequences): their defaults.
OPTIONAL_COLUMNS = {"precision": "fp32", "in_precision": "fp32", "cls_token": "False", "heads": "0", "head_dim": "0"}


def spec_to_row(spec: LayerSpec) -> dict[str, Any]:
    row = spec.to_dict()
    row["edges"] = "+".join(spec.edges)
    return row


def spec_from_row(row: dict[str, str], where: str) -> LayerSpec:
    values: dict[str, Any] = {}
    try:
        for name in SPEC_COLUMNS:
            text = row[name] if name in row or name not in OPTIONAL_COLUMNS else OPTIONAL_COLUMNS[name]
            if name in INT_COLUMNS:
                values[name] = int(text)
            elif name in BOOL_COLUMNS:
                if text not in ("True", "False"):
                    raise ValueError(f"{name} must be True or False")
                values[name] = text == "True"
            elif name == "edges":
                values[name] = tuple(text.split("+")) if text else ()
            else:
                values[name] = text
    except (KeyError, ValueError, TypeError) as exc:
        raise NasError(f"{where}: garbled layer fields ({exc})") from None
    return LayerSpec(**values)


@dataclass
class LUT:
    """Measured values per block key, with provenance."""

    meta: dict[str, Any]
    entries: dict[str, tuple[LayerSpec, Summary]]

    @property
    def unit(self) -> str:
        return self.meta.get("unit", "ms")

    @property
    def metric(self) -> str:
        return self.meta.get("metric", "latency")

    @property
    def statistic(self) -> str:
        """Which summary of a block's samples is its value: its protocol's statistic."""
        return Protocol.recorded(self.meta.get("protocol")).statistic

    def value(self, spec: LayerSpec) -> float:
        """The block's measurement (its protocol's statistic), in the LUT's unit."""
        return self.entries[spec.key][1].at(self.statistic)

    def missing(self, specs: Iterable[LayerSpec]) -> list[LayerSpec]:
        return [s for s in specs if s.key not in self.entries]

    # ------------------------------------------------------------------ files
    @staticmethod
    def paths(path: Path) -> tuple[Path, Path]:
        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".csv", ".json") else path
        return stem.with_suffix(".csv"), stem.with_suffix(".json")

    def save(self, path: Path) -> None:
        csv_path, meta_path = self.paths(path)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["key", *SPEC_COLUMNS, *VALUE_COLUMNS], lineterminator="\n")
        writer.writeheader()
        for key, (spec, timing) in self.entries.items():
            writer.writerow({"key": key, **spec_to_row(spec), **timing.to_dict()})
        self.meta["entries"] = len(self.entries)
        self.meta["blocks"] = blocks_digest(spec for spec, _ in self.entries.values())
        # While building, metadata first: a kill between the two writes then leaves either
        # no CSV (a build starts afresh) or the previous chunk's CSV, which a build resumes
        # from. A complete LUT's rows first: a kill between them leaves every row beside
        # metadata that still says "incomplete", which a build also resumes from.
        writes = [(meta_path, json.dumps(self.meta, indent=2) + "\n"), (csv_path, buf.getvalue())]
        for target, text in reversed(writes) if self.meta.get("complete") else writes:
            write_atomic(target, text)

    @classmethod
    def load(cls, path: Path) -> "LUT":
        csv_path, meta_path = cls.paths(path)
        if not csv_path.is_file():
            raise NasError(f"no LUT at {csv_path}; build one with 'hwnas lut build'")
        meta = read_json(meta_path, f"LUT {csv_path} has no metadata file {meta_path.name}: its provenance is unknown",
                         schema=SCHEMA)
        reference = meta.get("reference")
        if reference is not None and not (isinstance(reference, dict) and isinstance(reference.get("ms"), (int, float))
                                          and math.isfinite(reference["ms"]) and reference["ms"] > 0):
            raise NasError(f"{meta_path}: 'reference' must hold the reference network's time as a positive 'ms', "
                           f"got {reference!r}")
        entries: dict[str, tuple[LayerSpec, Summary]] = {}
        lines: dict[str, int] = {}
        try:
            text = csv_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{csv_path}: not UTF-8 text") from None
        with io.StringIO(text, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = ["key", *SPEC_COLUMNS, *VALUE_COLUMNS]
            missing = set(columns) - set(reader.fieldnames or []) - set(OPTIONAL_COLUMNS)
            if missing:
                raise NasError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
            # an unknown column is refused, not ignored: save() would drop it on the next
            # rewrite, and a column of another schema may change what a row means
            extra = [c for c in reader.fieldnames or [] if c not in columns]
            if extra:
                raise DataError(f"{csv_path}: {unknown_key(extra[0], columns, 'column')}")
            for line, row in enumerate(reader, start=2):
                where = f"{csv_path}:{line}"
                if None in row:  # more cells than the header names
                    raise DataError(f"{where}: {len(columns) + len(row[None])} cells, the header has {len(columns)}")
                spec = spec_from_row(row, where)
                if spec.key != row["key"]:
                    raise NasError(f"{where}: key {row['key']!r} does not match its layer fields ({spec.key!r})")
                if spec.key in entries:  # the last row would silently win
                    raise DataError(f"{where}: duplicated block {spec.key!r}, already on line {lines[spec.key]}")
                entries[spec.key], lines[spec.key] = (spec, summary_from_row(row, where, meta.get("unit", "ms"))), line
        if meta.get("complete") and meta.get("blocks") not in (None, blocks_digest(s for s, _ in entries.values())):
            # a finished LUT holds exactly the blocks it was built for: rows were added,
            # removed or re-keyed afterwards, and its calibration no longer belongs to them
            raise DataError(f"{csv_path}: its blocks are not the ones recorded in {meta_path.name} when it was built "
                            "(rows were added, removed or edited afterwards); rebuild it")
        return cls(meta, entries)

    # ------------------------------------------------------------------ compatibility
    def check(self, space: SearchSpace, device: Device | None = None, allow_mismatch: bool = False) -> None:
        """Refuse a LUT made for another space, device, backend or library version.

        A LUT of another version of the space (its fingerprint differs, or it was written
        by an older hwnas whose fingerprint hashed only the blocks) is still right for
        every block it holds, so it is used with a CompatibilityWarning while it holds
        all of the space's blocks, and refused when it lacks some.

        Precision must match too: an int8 LUT for a float-only search (or a LUT of a space
        with precision decisions for one without) is refused like another space, and a
        float-only LUT can never price a search over precision (it holds no int8 timing).
        """
        problems = []
        lut_int8 = any(spec.precision == "int8" for spec, _ in self.entries.values())
        space_int8 = any(s.precision == "int8" for s in lut_blocks(space, self.meta.get("resolutions") or [None]))
        where = f"LUT for {self.meta.get('space')}@{self.meta.get('device')}"
        if space_int8 and not lut_int8:
            raise CompatibilityError(f"{where} holds float32 blocks only and space {space.name} searches int8 "
                                     f"layers too: a float-only LUT cannot price a search over precision; run "
                                     f"'hwnas lut build --space {space.name} --device {self.meta.get('device')}'")
        if lut_int8 and not space_int8:
            problems.append(f"it holds int8 blocks and space {space.name} is float-only (an int8 LUT for a "
                            "float-only search)")
        if self.meta.get("space") != space.name:
            problems.append(f"it was built for space {self.meta.get('space')!r}, not {space.name!r}")
        else:
            self._check_fingerprint(space)
        if device is not None:
            if self.meta.get("device") != device.name:
                problems.append(f"it was built on device {self.meta.get('device')!r}, not {device.name!r}")
            ours, theirs = device.runtime(), self.meta.get("runtime", {})
            for key in ("backend", "provider", "threads", "batch", "dtype"):
                if theirs.get(key) != ours.get(key):
                    problems.append(f"its {key} is {theirs.get(key)!r}, the device's is {ours.get(key)!r}")
            if device.detect and self.meta.get("host", {}).get("cpu") not in (None, host_facts()["cpu"]):
                problems.append(f"it was measured on CPU {self.meta['host']['cpu']!r}, this machine has {host_facts()['cpu']!r}")
            for lib, version in ours.get("versions", {}).items():
                if lib in ("onnxruntime", "torch") and theirs.get("versions", {}).get(lib) not in (None, version):
                    problems.append(f"it was measured with {lib} {theirs['versions'][lib]}, this runtime is {version}")
        if not problems:
            return
        message = f"{where} does not fit: " + "; ".join(problems)
        if not allow_mismatch:
            raise CompatibilityError(message + " (rebuild it, or pass --allow-mismatch to use it anyway)")
        warnings.warn(message, CompatibilityWarning, stacklevel=2)

    def _check_fingerprint(self, space: SearchSpace) -> None:
        theirs = self.meta.get("space_fingerprint")
        if theirs == space.fingerprint():
            return
        what = (f"LUT for {space.name}@{self.meta.get('device')} was built for another version of space {space.name} "
                f"or by an older hwnas (space fingerprint {theirs} there, {space.fingerprint()} now)")
        missing = self.missing(lut_blocks(space, self.meta.get("resolutions") or [None]))
        if missing:
            raise CompatibilityError(f"{what} and lacks {len(missing)} of its blocks, e.g. {missing[0].key!r}; run "
                                     f"'hwnas lut build --space {space.name} --device {self.meta.get('device')}' "
                                     "to rebuild it")
        warnings.warn(f"{what}; it holds every block of the space, so it is used (rebuild it to record the "
                      "current fingerprint)", CompatibilityWarning, stacklevel=3)


# The largest entry accepted, per unit: a block slower than an hour (or one inference
# using more than a kilowatt-hour) is a unit mistake or a corrupted file, not a measurement.
MAX_VALUE = {"ms": 3_600_000.0, "mJ": 3.6e9}


def summary_from_row(row: dict[str, str], where: str, unit: str = "ms") -> Summary:
    try:
        values = {name: float(row[name]) for name in VALUE_COLUMNS}
    except (KeyError, ValueError, TypeError):
        raise NasError(f"{where}: value columns {', '.join(VALUE_COLUMNS)} must be numbers") from None
    for name in ("median", "p10", "p90", "mean"):
        if not math.isfinite(values[name]) or values[name] <= 0:
            raise NasError(f"{where}: {name} = {row[name]} is not a positive finite value")
        if unit in MAX_VALUE and values[name] > MAX_VALUE[unit]:
            raise DataError(f"{where}: {name} = {row[name]} {unit} is beyond the sanity limit of {MAX_VALUE[unit]:g} {unit}; "
                            "the value is corrupt or in the wrong unit")
    if not math.isfinite(values["std"]) or values["std"] < 0:
        raise NasError(f"{where}: std = {row['std']} must be finite and >= 0")
    for name in ("n", "rejected"):
        if not (math.isfinite(values[name]) and values[name] >= 0 and values[name] == int(values[name])):
            raise DataError(f"{where}: {name} = {row[name]} must be a count (an integer >= 0)")
    return Summary(**{**values, "n": int(values["n"]), "rejected": int(values["rejected"])})


def blocks_digest(specs: Iterable[LayerSpec]) -> str:
    """Hash of the block keys a LUT holds: the integrity check of a finished LUT's rows
    (the space's identity is SearchSpace.fingerprint(), checked against the space in use)."""
    return hashlib.sha256("\n".join(sorted(s.key for s in specs)).encode()).hexdigest()[:16]


def lut_blocks(space: SearchSpace, resolutions: Sequence[int | None]) -> list[LayerSpec]:
    """Every distinct block of the space at these resolutions (None: the archs' own): what a LUT holds."""
    return list(dict.fromkeys(s for r in resolutions for s in unique_layers(space, r)))


def new_meta(space: SearchSpace, device: Device, resolutions: Sequence[int | None], metric: str = "latency",
             unit: str = "ms", **extra: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "metric": metric, "unit": unit, "space": space.name,
        "space_fingerprint": space.fingerprint(), "resolutions": list(resolutions), "device": device.name,
        "runtime": device.runtime(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False, "calibration": None, **extra,
    }


class LUTCost(CostModel):
    """Latency (or energy) of archs from a LUT: a gather and a sum per layer slot.

    With the LUT's calibration (nas.hardware.calibration) each block's entry is replaced
    by its calibrated value and the intercept added, so both are one table lookup.
    """

    def __init__(self, lut: LUT, space: SearchSpace, resolution: int | None = None, calibrated: bool = True,
                 device: Device | None = None, allow_mismatch: bool = False) -> None:
        lut.check(space, device, allow_mismatch)
        self.lut, self.space, self.metric, self.unit = lut, space, lut.metric, lut.unit
        resolutions = lut.meta.get("resolutions") or [None]
        if resolution is None and len(resolutions) == 1:
            resolution = resolutions[0]
        self.resolution = resolution
        if device is not None:
            device.check_precisions(unique_layers(space, resolution), f"space {space.name}")
        missing = lut.missing(unique_layers(space, resolution))
        if missing:
            raise CompatibilityError(f"LUT lacks {len(missing)} of the space's blocks, e.g. {missing[0].key!r}; "
                           f"run 'hwnas lut build --space {space.name} --device {lut.meta.get('device')}' to fill them in")
        self.calibration = lut.meta.get("calibration") if calibrated else None
        value = calibrated_block_value(self.calibration, lut.value) if self.calibration else lut.value
        self.intercept = self.calibration["intercept"] if self.calibration else 0.0
        self.table = SpecTable(space, value, "sum", resolution)

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        return self.table(as_codes(self.space, archs)) + self.intercept

    def expected(self, probs):
        return self.table.expected(probs) + self.intercept
