"""Which budgets an exported arch meets, in the search's own budget language.

Budgets are written as a search config writes constraints ('latency@local-cpu <= 5 ms',
'params <= 2M', 'accuracy >= 90 %'), as a list of such strings or as a mapping of
metric -> bound ('5 ms'; '<= 5 ms' and '>= 0.9' also work; a bare bound is an upper
one for costs and a lower one for accuracy). Each budget's metric is evaluated for the
arch with the cost-source resolver (nas.sources) over the sources the arch was searched
under, so the card re-checks exactly what the search checked: an experiment's LUTs,
stand-ins, estimates, tables, predictors and supernet. A metric those sources cannot
give (an export without a search) falls back to what the card measured itself: the
latency on this machine, the accuracy inherited from the supernet.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nas.errors import NasError

if TYPE_CHECKING:
    from nas.sources import Resolver
    from nas.space.arch import Arch

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


def card_budgets(budgets: Budgets | None, resolver: Resolver, arch: Arch,
                 measured: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """check_budgets over the arch's figures from the resolver's sources, else from
    `measured` (the card's own measurements), else with the resolver's reason."""
    figures: dict[str, Mapping[str, Any]] = {}
    for constraint in parse_budgets(budgets):
        try:
            model = resolver.model(constraint.metric)
            figures[constraint.metric] = {"value": float(model.predict([arch])[0]), "unit": model.unit,
                                          "source": resolver.label(constraint.metric)}
        except NasError as exc:
            figures[constraint.metric] = measured.get(constraint.metric) or {"reason": str(exc)}
    return check_budgets(budgets, figures)


def check_budgets(budgets: Budgets | None, metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per budget: the figure's value (with its unit and source) and whether it is
    met (None when there is no figure for that metric, with the reason)."""
    from nas.search.units import parse_quantity

    rows = []
    for constraint in parse_budgets(budgets):
        figure = metrics.get(constraint.metric)
        row: dict[str, Any] = {"budget": str(constraint), "metric": constraint.metric}
        if figure is None or "value" not in figure:
            known = ", ".join(sorted(k for k, f in metrics.items() if "value" in f))
            row.update(met=None, reason=(figure or {}).get("reason") or f"no figure for {constraint.metric!r}; "
                                                                           f"known: {known}")
        else:
            bound = parse_quantity(constraint.text, figure["unit"], f"budget {constraint}")
            value = figure["value"]
            row.update(value=value, unit=figure["unit"], bound=bound, source=figure["source"],
                       met=bool(value <= bound if constraint.upper else value >= bound))
        rows.append(row)
    return rows
