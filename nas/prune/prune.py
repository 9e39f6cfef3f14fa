"""`prune_export(PARENT, budgets, OUT)`: an export pruned to device budgets, as an export.

The parent must pass its own checks (arch.json's layer hash, the SHA-256 of its
weights) before anything is written. Budgets already met, or beyond the smallest
network pruning can reach, are refused with the figures that say why. The pruned
network is written as an export folder like `hwnas export`'s (nas.export.bundle):
its LayerSpecs are arch.json's `layers` and `pruned` records the parent (folder,
arch.json SHA-256, arch), the settings and the rounds, so the loader builds it from
its layers rather than from an arch of the space. The card carries the LUT's
prediction, the latency measured here (at export, and with the LUT's yardstick for
the prediction's check), the budgets met and the rounds. Then `hwnas finetune`'s
machinery fine-tunes it with distillation from the parent: resumable, seeded.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from nas.errors import DataError, NasError
from nas.export.budgets import Budgets, check_budgets, parse_budgets
from nas.prune.costs import NetworkCosts
from nas.prune.measured import corrected_row, measured_figures, meet_measured
from nas.prune.rounds import Evaluator, PruneSettings, WorkFolder, run_rounds, run_uniform, smallest


def _parent(parent: Path) -> tuple[dict[str, Any], dict[str, Any], list, Any]:
    """The parent's record, card, checked layers and space; one-line errors otherwise."""
    from nas.export.bundle import ARCH_FILE, checked_file, file_sha256, read_record
    from nas.export.card import read_card
    from nas.export.loader import export_layers, find_space, which_weights

    try:
        record = read_record(parent)
        card = read_card(parent)
        checked_file(parent, record, which_weights(parent, record, None))
        layers = export_layers(parent, record)
    except DataError as exc:
        raise DataError(f"parent export {parent} fails its own hash check: {exc}") from None
    space = find_space(record)
    if space is None:
        raise NasError(f"space {record['space']} of {parent} is not available here; pruning needs it for its LUT")
    record["sha256"] = file_sha256(parent / ARCH_FILE)
    return record, card, layers, space


def budget_device(constraints: list[Any]) -> str:
    from nas.export.latency import local_device

    devices = sorted({c.metric.split("@", 1)[1] for c in constraints if c.metric.startswith("latency@")})
    if len(devices) > 1:
        raise NasError(f"budgets name latency on {len(devices)} devices ({', '.join(devices)}); prune for one at a "
                       "time")
    return devices[0] if devices else local_device().name


def _format(value: float, unit: str) -> str:
    from nas.search.units import format_quantity

    return format_quantity(value, unit)


def _bound_message(costs: NetworkCosts, row: dict[str, Any], network: list, multiple: int, method: str) -> str:
    """Why a budget is unreachable by `method`: the value of `network`, the smallest the method
    reaches, and the layers that bound it."""
    from nas.prune.network import units
    from nas.space.counters import network_counts

    metric = row["metric"]
    shares = (costs.per_layer(network) if metric == costs.metric else
              [float(network_counts([s])[metric]) for s in network])
    top = sorted(range(len(network)), key=lambda i: -shares[i])[:3]
    frozen = units(network, multiple)[1]
    how = ("uniform scaling (every width at its smallest step, no block removed; --method netadapt also removes "
           "blocks)" if method == "uniform" else "pruning")
    return (f"budget {row['budget']} cannot be reached by {how}: the smallest reachable network has "
            f"{metric} {_format(costs.value(metric, network), row['unit'])}; the layers that bound it: "
            + "; ".join(f"{network[i].key} ({_format(shares[i], row['unit'])})" for i in top)
            + (f" (fixed widths: {', '.join(frozen)})" if frozen else ""))


def prune_export(parent: Path | str, budgets: Budgets, out: Path | str, data: str, *,
                 settings: dict[str, Any] | None = None, lut: Path | None = None, force: bool = False,
                 progress: bool = True, measure: bool = True) -> dict[str, Any]:
    """Prune the export `parent` until every budget is met, write the export `out`, fine-tune
    it with distillation from the parent; returns the card's `pruning` entry (+ fine-tune).

    settings: PruneSettings fields (criterion, select, step, multiple, epochs, ...).
    A rerun with the same settings resumes: the rounds from the work folder, the
    fine-tune from its checkpoint.
    """
    from nas.export.finetuning import export_dataset
    from nas.export.loader import load

    started = time.perf_counter()
    parent, out = Path(parent), Path(out)
    constraints = parse_budgets(budgets)
    if not constraints:
        raise NasError("give at least one budget, like --budgets '[\"latency@local-cpu <= 2 ms\"]'")
    s = PruneSettings(budgets=tuple(str(c) for c in constraints), data=str(data), **(settings or {}))
    s.check()
    done = _finished(out, s)
    if done is not None:
        return _finetune(out, parent, s, progress) | {"pruning": done}
    record, card, layers, space = _parent(parent)
    metrics = list(dict.fromkeys(c.metric for c in constraints))
    costs = NetworkCosts(space, budget_device(constraints), lut)
    # the method's smallest network; also refuses a multiple that breaks a group count
    units_check = smallest(layers, s.method, s.multiple)

    def check(ls: list, correction: float = 1.0, measured: float | None = None) -> list[dict[str, Any]]:
        rows = check_budgets(list(s.budgets), measured_figures(costs, costs.figures(metrics, ls), measured))
        return [corrected_row(r, c.upper, correction) if r["metric"] == costs.metric else r
                for r, c in zip(rows, constraints)]

    rows = check(layers)
    if all(r["met"] for r in rows):
        figures = "; ".join(f"{r['metric']} {_format(r['value'], r['unit'])} within {r['budget']}" for r in rows)
        raise NasError(f"every budget is already met by {parent} ({figures}): nothing to prune")
    for row in check(units_check):
        if not row["met"]:
            raise NasError(_bound_message(costs, row, units_check, s.multiple, s.method))
    initial = {r["metric"]: r["value"] for r in rows}
    data_set = export_dataset(s.data, record)
    if data_set.classes > record["classes"]:
        raise NasError(f"{s.data} has {data_set.classes} classes; {parent} predicts {record['classes']}")
    torch.manual_seed(s.seed)
    model = load(parent)
    resolution = record["input"]["resolution"]
    evaluator = Evaluator(data_set, load(parent), resolution, s)
    parent_accuracy = evaluator.accuracy(load(parent))
    work = WorkFolder(out.parent / f".{out.name}.prune", s)

    def method(budgets_check) -> tuple[list, Any, list[dict[str, Any]]]:
        if s.method == "uniform":
            return run_uniform(list(layers), model, costs, budgets_check, evaluator, s)
        return run_rounds(list(layers), model, costs, budgets_check, initial, evaluator, s, work, progress)

    checks: list[dict[str, Any]] = []
    measured_met = None
    if measure and costs.metric in metrics:  # close the loop on measurement (nas.prune.measured)
        checks = work.load_checks()
        pruned, model, history, measured_met = meet_measured(method, costs, check, checks, work.save_checks)
    else:
        pruned, model, history = method(check)
    # the budgets as judged: latency on the last measurement when the loop was closed on one
    final = check(pruned, measured=checks[-1]["measured_ms"]) if checks else check(pruned)
    pruning = {"parent": {"folder": str(parent.resolve()), "arch_sha256": record["sha256"], "arch_id": record.get("arch_id"),
                          "space": record["space"], "layers": len(layers), "accuracy": parent_accuracy,
                          "costs": costs.figures(metrics, layers)},
               "settings": asdict(s), "lut": str(costs.lut_path), "device": costs.device.name,
               "rounds": history, "budgets": final, "lut_budgets": check(pruned), "met": all(r["met"] for r in final),
               "blocks_profiled": len(costs.profiled), "layers": len(pruned),
               "predicted_ms": costs.latency(pruned), "parent_predicted_ms": costs.latency(layers),
               "measurement_checks": checks, "measured_met": measured_met}
    if measure:
        pruning["measured_lut_scale_ms"] = checks[-1]["measured_ms"] if checks else costs.measure(pruned)
    pruning["prune_seconds"] = round(time.perf_counter() - started, 3)
    from nas.prune.bundle import write_pruned

    write_pruned(out, record, card, pruned, model, pruning, costs, force, measure)
    shutil.rmtree(work.path, ignore_errors=True)
    return _finetune(out, parent, s, progress) | {"pruning": pruning}


def _finished(out: Path, s: PruneSettings) -> dict[str, Any] | None:
    """The `pruned` entry of a prune already written to `out` with these settings."""
    from nas.export.bundle import ARCH_FILE, read_record

    if not (out / ARCH_FILE).is_file():
        return None
    try:
        pruned = read_record(out).get("pruned")
    except NasError:
        return None
    if pruned and pruned.get("settings") == asdict(s) | {"budgets": list(s.budgets)}:
        return pruned
    return None


def _finetune(out: Path, parent: Path, s: PruneSettings, progress: bool) -> dict[str, Any]:
    from nas.export.finetuning import finetune

    if s.epochs < 1:
        return {"finetune": None}
    return {"finetune": finetune(out, s.data, s.epochs, seed=s.seed, distill_from=parent, lr=s.lr,
                                 batch_size=s.batch_size, progress=progress)}
