"""The compress step: the exported model pruned to tighter device budgets (nas.prune).

Optional (`compress:` in the experiment), after export: the export step's model is
pruned with LUT-driven rounds until the compress budgets are met, then fine-tuned with
distillation from it. The profile step's LUT is copied into this step's folder first,
so the blocks profiled on demand grow the copy and never a cached step's files. A
killed compress resumes: its rounds from their work folder, the fine-tune from its
checkpoint (both inside this step's folder).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError

if TYPE_CHECKING:
    from nas.experiment.schema import Experiment

READS = ("profile", "export")
CODE = ("nas/prune", "nas/export", "nas/hardware", "nas/space", "nas/supernet", "nas/data")
LIBRARIES = ("torch", "onnx", "onnxruntime", "safetensors", "numpy")


def inputs(exp: Experiment) -> dict[str, Any]:
    return {"compress": exp.compress.model_dump(mode="json") if exp.compress else None, "seed": exp.seed,
            "dataset": exp.dataset}


def _lut(exp: Experiment, profiled: dict[str, Any], profile_dir: Path, out: Path) -> Path:
    """This step's copy of the profile step's LUT of the device the budgets name."""
    from nas.prune.prune import budget_device
    from nas.export.budgets import parse_budgets

    device = budget_device(parse_budgets(exp.compress.budgets))
    source = (profiled.get(f"latency@{device}") or {}).get("lut")
    if source is None:
        raise NasError(f"compress: the experiment profiles no LUT of device {device}; add it under devices: "
                       f"with 'latency: {{profile: {{}}}}'")
    copy = out / "lut" / Path(source).name
    if not copy.is_file():  # a resumed compress keeps the blocks it profiled
        copy.parent.mkdir(parents=True, exist_ok=True)
        for path in (profile_dir / source, (profile_dir / source).with_suffix(".json")):
            shutil.copyfile(path, copy.parent / path.name)
    return copy


def run(exp: Experiment, out: Path, export_dir: Path, profiled: dict[str, Any], profile_dir: Path,
        progress: bool) -> dict[str, Any]:
    """Prune export_dir/model into out/model; returns what the report shows."""
    from nas.prune.prune import prune_export

    c = exp.compress
    settings = c.model_dump(exclude={"budgets"}) | {"seed": exp.seed}
    result = prune_export(export_dir / "model", list(c.budgets), out / "model", exp.dataset.get("source", "digits"),
                          settings=settings, lut=_lut(exp, profiled, profile_dir, out), force=True, progress=progress)
    card = json.loads((out / "model" / "card.json").read_text())
    return {"folder": "model", "card": card, "finetune": result.get("finetune")}
