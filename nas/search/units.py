"""Quantities with units in budgets: `12 ms`, `30 mJ`, `256 KiB`, `2M`, `70 %`.

A budget is written in whatever unit reads naturally and converted once, when the
config is read, into the unit of the cost source it constrains, so the search compares
plain numbers. A quantity whose dimension does not fit the source (`12 MiB` for a
latency) is an error, not a silent reinterpretation.
"""
from __future__ import annotations

import math
import re

from nas.errors import NasError

# dimension -> unit -> factor to the dimension's base unit
UNITS: dict[str, dict[str, float]] = {
    "time": {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3},
    "energy": {"J": 1e3, "mJ": 1.0, "uJ": 1e-3, "µJ": 1e-3},
    "bytes": {"B": 1.0, "bytes": 1.0, "KB": 1e3, "KiB": 1024.0, "MB": 1e6, "MiB": 1024.0**2, "GB": 1e9,
              "GiB": 1024.0**3},
    "count": {"": 1.0, "count": 1.0, "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "B": 1e9},
    "fraction": {"fraction": 1.0, "%": 0.01},
}
# the units cost sources report in, and their dimension
SOURCE_UNITS = {"ms": "time", "s": "time", "mJ": "energy", "J": "energy", "bytes": "bytes", "count": "count",
                "": "count", "fraction": "fraction", "%": "fraction"}
# words that may follow a count ("2M params", "300M MACs")
COUNT_WORDS = ("params", "parameters", "macs", "MACs", "flops", "FLOPs")

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def parse_quantity(text: str | float, unit: str, where: str) -> float:
    """`text` (a number, optionally with a unit) in the source unit `unit`.

    A bare number is taken to be in the source's own unit.
    """
    if isinstance(text, bool):
        raise NasError(f"{where}: {text!r} is not a quantity")
    if isinstance(text, (int, float)):
        return _possible(float(text), unit, where)
    match = _NUMBER.match(str(text))
    if not match:
        raise NasError(f"{where}: {text!r} is not a number with an optional unit (like 12 ms, 256 KiB, 2M)")
    value, suffix = float(match.group(1)), match.group(2)
    for word in COUNT_WORDS:
        if suffix.endswith(word):
            suffix = suffix[: -len(word)].strip()
            break
    if suffix == "":
        return _possible(value, unit, where)
    target_dim = SOURCE_UNITS.get(unit)
    if target_dim is None:
        raise NasError(f"{where}: the source reports in {unit!r}, which hwnas cannot convert; give a bare number")
    dims = [d for d, table in UNITS.items() if suffix in table]
    if target_dim not in dims:
        known = ", ".join(u for u in UNITS[target_dim] if u)
        raise NasError(f"{where}: unit {suffix!r} does not measure {target_dim} (the source's unit is "
                       f"{unit or 'a count'}); use one of {known}")
    ratio = UNITS[target_dim][suffix] / UNITS[target_dim][unit if unit in UNITS[target_dim] else ""]
    return _possible(value * ratio if ratio >= 1 else value / (1 / ratio), unit, where)  # 70 % -> 0.7 exactly


def format_quantity(value: float, unit: str) -> str:
    """A value in a source unit, readably (bytes as KiB/MiB, counts with M)."""
    if unit == "bytes":
        for name, factor in (("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0)):
            if abs(value) >= factor:
                return f"{value / factor:.4g} {name}"
        return f"{value:.4g} B"
    if unit in ("count", ""):
        for name, factor in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(value) >= factor:
                return f"{value / factor:.4g}{name}"
        return f"{value:.4g}"
    if unit == "fraction":
        return f"{value:.4g}"
    return f"{value:.4g} {unit}"


def _possible(value: float, unit: str, where: str) -> float:
    """`value` if a cost in `unit` can take it: no budget below zero for a time, energy or
    size or an explicit count, none outside 0..100 % for a fraction, none infinite or NaN.
    Such a budget passes every network or none, so it is refused when the config is read.
    (A bare number for a metric without a unit, a user's table column, may be negative.)"""
    dim = SOURCE_UNITS.get(unit)
    if not math.isfinite(value):
        raise NasError(f"{where}: {value} is not a finite quantity")
    if (dim in ("time", "energy", "bytes") or unit == "count") and value < 0:
        raise NasError(f"{where}: a {dim} cannot be negative ({format_quantity(value, unit)})")
    top = 100.0 if unit == "%" else 1.0
    if dim == "fraction" and not 0 <= value <= top:
        raise NasError(f"{where}: {value * 100 / top:g} % is outside 0..100 %")
    return value


def check_possible(text: str, where: str) -> None:
    """Refuse a bound whose own unit makes it impossible (`-5 ms`, `150 %`), before any
    cost source is known: the experiment check reads budgets this way."""
    match = _NUMBER.match(text)
    suffix = match.group(2) if match else ""
    for word in COUNT_WORDS:
        if suffix.endswith(word):
            suffix = suffix[: -len(word)].strip() or "count"
            break
    for dim, base in (("time", "ms"), ("energy", "mJ"), ("bytes", "bytes"), ("fraction", "fraction"), ("count", "count")):
        if suffix and suffix in UNITS[dim]:
            parse_quantity(text, base, where)
            return
