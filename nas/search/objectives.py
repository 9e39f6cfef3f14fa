"""Objectives and budgets as the user writes them: `max accuracy`, `latency@pi4-ort <= 12 ms`,
`latency@pi4-ort <= 12 ms at 90 %` (the budget must hold with that confidence: the
bound of the metric's interval, nas.costs.CostModel.interval, is what is compared).

Parsing only splits the text into metric, direction or comparison and value; the metric
is resolved to a cost source and the value converted to the source's unit by
nas.search.problem, which knows the sources.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nas.errors import NasError
from nas.search.units import check_possible

DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
_CONSTRAINT = re.compile(r"^\s*(\S+?)\s*(<=|>=|<|>|=<|=>)\s*(.+?)\s*$")
_VALUE = re.compile(r"^[-+]?(\d|\.\d)")
_CONFIDENCE = re.compile(r"^(.*?)\s+at\s+(\S+?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "minimize" | "maximize"

    @property
    def sign(self) -> float:
        """Multiplier that turns the metric into a value to minimise."""
        return -1.0 if self.direction == "maximize" else 1.0

    def __str__(self) -> str:
        return f"{self.direction[:3]} {self.metric}"


@dataclass(frozen=True)
class Constraint:
    metric: str
    upper: bool       # True: metric <= bound; False: metric >= bound
    text: str         # the bound as written, for messages
    bound: float = float("nan")  # in the source's unit, set when the problem is built
    confidence: float | None = None  # the budget must hold at this level (0, 1)

    def __str__(self) -> str:
        at = f" at {self.confidence * 100:g} %" if self.confidence is not None else ""
        return f"{self.metric} {'<=' if self.upper else '>='} {self.text}{at}"


def default_direction(metric: str) -> str:
    """Accuracy-like metrics are maximised, costs minimised."""
    base = metric.split("@")[0].lower()
    return "maximize" if base.startswith(("acc", "top1", "top5", "score")) else "minimize"


def parse_objective(item: Any, where: str) -> Objective:
    """`accuracy`, `max accuracy`, `min latency@local-cpu` or {metric: ..., direction: ...}."""
    if isinstance(item, dict):
        unknown = set(item) - {"metric", "direction"}
        if unknown or "metric" not in item:
            raise NasError(f"{where}: an objective mapping takes 'metric' and optionally 'direction', got {sorted(item)}")
        metric, direction = str(item["metric"]), item.get("direction")
    elif isinstance(item, str) and item.strip():
        words = item.split()
        if len(words) == 2 and words[0].lower() in DIRECTIONS:
            direction, metric = words[0].lower(), words[1]
        elif len(words) == 1:
            direction, metric = None, words[0]
        else:
            raise NasError(f"{where}: objective {item!r} must read 'METRIC', 'max METRIC' or 'min METRIC'")
    else:
        raise NasError(f"{where}: an objective must be a metric name like 'max accuracy', got {item!r}")
    if direction is None:
        return Objective(metric, default_direction(metric))
    if str(direction).lower() not in DIRECTIONS:
        raise NasError(f"{where}: direction {direction!r} must be max or min")
    return Objective(metric, DIRECTIONS[str(direction).lower()])


def parse_constraint(item: Any, where: str) -> Constraint:
    """`METRIC <= VALUE [UNIT]` or `METRIC >= VALUE [UNIT]` (`<` and `>` read the same)."""
    if not isinstance(item, str):
        raise NasError(f"{where}: a constraint must read like 'latency@pi4-ort <= 12 ms', got {item!r}")
    match = _CONSTRAINT.match(item)
    if not match:
        raise NasError(f"{where}: constraint {item!r} must read 'METRIC <= VALUE [UNIT]' or 'METRIC >= VALUE [UNIT]'")
    metric, op, value = match.groups()
    confidence = None
    at = _CONFIDENCE.match(value)
    if at:
        value, level, percent = at.groups()
        try:
            confidence = float(level) / (100.0 if percent else 1.0)
        except ValueError:
            raise NasError(f"{where}: constraint {item!r}: confidence {level + percent!r} is not a number "
                           "(write 'at 90 %' or 'at 0.9')") from None
        if not 0.0 < confidence < 1.0:
            raise NasError(f"{where}: constraint {item!r}: confidence {level}{percent} must be between 0 and 1 "
                           "(exclusive), e.g. 'at 90 %'")
    if not _VALUE.match(value):
        raise NasError(f"{where}: constraint {item!r}: {value!r} is not a number with an optional unit (like 12 ms)")
    check_possible(value, f"{where}: constraint {item!r}")
    return Constraint(metric, op in ("<=", "<", "=<"), value, confidence=confidence)
