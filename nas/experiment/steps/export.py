"""The export step: the search's best arch as a standalone model, verified ONNX and model card.

A thin adapter over nas.export: the arch (the search's best feasible one unless the
experiment names one), the trained supernet for inherited weights and recalibrated BN
statistics, the experiment's budgets with the cost sources the search scored them with
(the card re-checks every one from the same sources and says met or not met) and the
run id (provenance) go in; the export folder `model/` comes out. Export is quick, so a killed
export simply runs again; nas.export writes the folder atomically.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError

if TYPE_CHECKING:
    from nas.experiment.schema import Experiment

READS = ("profile", "train", "search")  # steps whose outputs this one uses (their keys are part of its key)
CODE = ("nas/sources.py", "nas/space", "nas/export", "nas/supernet", "nas/data", "nas/hardware")
LIBRARIES = ("torch", "onnx", "onnxruntime", "safetensors", "numpy")


def inputs(exp: Experiment) -> dict[str, Any]:
    return {"export": exp.export.model_dump(mode="json") if exp.export else None, "budgets": exp.budgets,
            "seed": exp.seed, "space": exp.space}


def chosen_arch(exp: Experiment, summary: dict[str, Any]) -> str:
    """The arch to export, as text (canonical JSON, or an NB201 string): the search's best,
    or with `search.verify` the best front arch that meets every budget when measured."""
    if exp.export.arch != "best":
        return exp.export.arch
    if not summary.get("best"):
        raise NasError("the search found no arch that meets every budget, so there is nothing to export; "
                       "loosen the budgets or raise search.budget")
    verified = summary.get("verified")
    if verified is None:
        return summary["best"]["arch"]
    if verified["best"] is None:
        raise NasError(f"none of the {len(verified['front'])} front arch(s) meets every budget when its "
                       f"{', '.join(verified['metrics'])} is measured (search/front_verified.csv), so there is "
                       "nothing to export; loosen the latency budget or validate the LUT (hwnas lut validate)")
    return verified["best"]["arch"]


def run(exp: Experiment, space: str, out: Path, summary: dict[str, Any], supernet: Path | None, run_id: str,
        sources: dict[str, Any]) -> dict[str, Any]:
    """Export into out/model; returns the card for the report. sources: the search's
    (nas.experiment.steps.search.search_sources), so the card predicts and checks the
    budgets from what the search used."""
    from nas.export import export_arch

    split = exp.accuracy.supernet.split if exp.accuracy.kind == "supernet" else "val"
    best = summary.get("best") or {}
    arch = chosen_arch(exp, summary)
    verified = (summary.get("verified") or {}).get("best") or {}
    provenance = {"search_run": run_id, "seeds": {"experiment": exp.seed},
                  "search_metrics": best.get("metrics") if best.get("arch") == arch else None,
                  "verified_latency": verified.get("latency") if verified.get("arch") == arch else None}
    model_dir = export_arch(space, arch, out / "model", supernet=supernet,
                            budgets=list(exp.budgets), provenance=provenance, seed=exp.seed, split=split,
                            latency_protocol=None if not exp.export.measure_latency else _protocol(), force=True,
                            sources=sources)
    card = json.loads((model_dir / "card.json").read_text())
    return {"arch_id": card.get("arch_id"), "folder": "model", "card": card}


def _protocol():
    from nas.hardware.measure import Protocol

    return Protocol()
