"""A pruned network as an export folder (nas.export.bundle's layout and checks).

arch.json holds the pruned LayerSpecs as `layers` (with their hash) and `pruned`, the
parent and the rounds; `arch` stays the parent's arch, what the network was pruned
from. The card is the export card with the figures of the pruned layers: exact counts,
the LUT's prediction, the latency measured here, the budgets, and `pruning`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from nas.export.bundle import ONNX_FILE, WEIGHTS_FILE, layers_hash, staged_folder, write_record
from nas.export.card import CARD_LIBRARIES, now, write_card
from nas.export.card import SCHEMA as CARD_SCHEMA
from nas.prune.costs import NetworkCosts
from nas.prune.measured import measured_figures
from nas.provenance import library_versions
from nas.space.counters import network_counts
from nas.space.layers import LayerSpec


def write_pruned(out: Path, parent: dict[str, Any], parent_card: dict[str, Any], layers: Sequence[LayerSpec],
                 model: nn.Module, pruning: dict[str, Any], costs: NetworkCosts, force: bool, measure: bool) -> None:
    """Write the export folder `out` atomically (all of it or nothing)."""
    from nas.export.export import DEFAULT_PROTOCOL
    from nas.export.latency import measure_onnx
    from nas.export.onnx_export import write_onnx
    from nas.export.weights import save_weights

    model = model.eval()
    arch_id = f"{parent.get('arch_id', 'net')}-pruned-{layers_hash(layers)[:8]}"
    shape = tuple(parent["input"]["shape"])
    with staged_folder(out, force) as tmp:
        save_weights(model, tmp / WEIGHTS_FILE, {"space": parent["space"], "arch_id": arch_id})
        check = write_onnx(model, shape, tmp / ONNX_FILE, pruning["settings"]["seed"])
        measured = measure_onnx(tmp / ONNX_FILE, shape, DEFAULT_PROTOCOL) if measure else None
        created = now()
        record = write_record(tmp, (WEIGHTS_FILE, ONNX_FILE), space=parent["space"],
                              space_file=parent.get("space_file"), space_fingerprint=parent.get("space_fingerprint"),
                              arch=parent["arch"], arch_id=arch_id, layers=layers, input=parent["input"],
                              classes=parent["classes"], created=created,
                              pruned={k: pruning[k] for k in ("parent", "settings", "device", "lut")})
        write_card(tmp, _card(record, parent_card, layers, check.to_dict(), measured, pruning, costs))


def _card(record: dict[str, Any], parent_card: dict[str, Any], layers: Sequence[LayerSpec], onnx_check: dict,
          measured: dict | None, pruning: dict[str, Any], costs: NetworkCosts) -> dict[str, Any]:
    from nas.export.budgets import check_budgets

    figures = costs.figures([r["metric"] for r in pruning["budgets"]], layers)
    if pruning["measurement_checks"]:  # the budgets as judged: on the measurement the loop was closed on
        figures = measured_figures(costs, figures, pruning["measurement_checks"][-1]["measured_ms"])
    predicted = {"device": costs.device.name, "metric": "latency", "value": pruning["predicted_ms"], "unit": "ms",
                 "estimate": False, "source": {"kind": "lut", "file": str(costs.lut_path),
                                               "calibrated": bool(costs.lut.meta.get("calibration")),
                                               "blocks_profiled_on_demand": pruning["blocks_profiled"]}}
    seed = pruning["settings"]["seed"]
    return {
        "schema": CARD_SCHEMA, "space": record["space"], "arch_id": record["arch_id"], "arch": record["arch"],
        "input": record["input"], "classes": record["classes"], "costs": network_counts(layers),
        "onnx": {"file": ONNX_FILE, **onnx_check}, "measured_latency": measured, "predictions": [predicted],
        "skipped": [], "sources": {},
        "accuracy": {"value": pruning["rounds"][-1]["accuracy_tuned"] if pruning["rounds"] else pruning["parent"]["accuracy"],
                     "split": "val", "source": f"pruned from {pruning['parent']['folder']}, BN recalibrated on "
                                               f"{pruning['settings']['calib_images']} training images",
                     "details": {"parent_accuracy": pruning["parent"]["accuracy"]}},
        "finetune": None, "budgets": check_budgets(list(pruning["settings"]["budgets"]), figures),
        "pruning": pruning,
        "provenance": {"search_run": (parent_card.get("provenance") or {}).get("search_run"),
                       "seeds": {"prune": seed}, "weights": f"pruned from {pruning['parent']['folder']} "
                                                           f"(arch.json SHA-256 {pruning['parent']['arch_sha256']})",
                       "parent": pruning["parent"]["folder"], "parent_arch_sha256": pruning["parent"]["arch_sha256"],
                       "versions": library_versions(CARD_LIBRARIES), "created": record["created"]},
    }
