"""Which budgets an exported arch meets, in the search's own budget language.

Budgets are written as a search config writes constraints ('latency@local-cpu <= 5 ms',
'params <= 2M', 'accuracy >= 90 %'), as a list of such strings or as a mapping of
metric -> bound ('5 ms'; '<= 5 ms' and '>= 0.9' also work; a bare bound is an upper
one for costs and a lower one for accuracy). They are checked against the card's
figures under the search's metric names.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nas.errors import NasError

Budgets = Mapping[str, Any] | Sequence[str]


def parse_budgets(budgets: Budgets | None) -> list[Any]:
    """Constraints (nas.search.objectives.Constraint) from either form; errors name the entry."""
    from nas.search.objectives import default_direction, parse_constraint

    if not budgets:
        return []
    if isinstance(budgets, Mapping):
        items = []
        for metric, bound in budgets.items():
            text = str(bound).strip()
            if not text.startswith(("<", ">", "=")):
                text = ("<= " if default_direction(metric) == "minimize" else ">= ") + text
            items.append(f"{metric} {text}")
    elif isinstance(budgets, (list, tuple)):
        items = list(budgets)
    else:
        raise NasError(f"budgets must be a mapping of metric -> bound or a list of 'METRIC <= VALUE' strings, "
                       f"got {type(budgets).__name__}")
    return [parse_constraint(item, "budgets") for item in items]


def check_budgets(budgets: Budgets | None, metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per budget: the card's value (with its unit and source) and whether it is met
    (None when the card has no figure for that metric)."""
    from nas.search.units import parse_quantity

    rows = []
    for constraint in parse_budgets(budgets):
        figure = metrics.get(constraint.metric)
        row: dict[str, Any] = {"budget": str(constraint), "metric": constraint.metric}
        if figure is None:
            row.update(met=None, reason=f"the card has no {constraint.metric!r}; known: {', '.join(sorted(metrics))}")
        else:
            bound = parse_quantity(constraint.text, figure["unit"], f"budget {constraint}")
            value = figure["value"]
            row.update(value=value, unit=figure["unit"], bound=bound, source=figure["source"],
                       met=bool(value <= bound if constraint.upper else value >= bound))
        rows.append(row)
    return rows
