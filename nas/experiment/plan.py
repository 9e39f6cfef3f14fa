"""`hwnas run --check`: what a valid experiment will do, step by step, without doing it."""
from __future__ import annotations

from pathlib import Path

from nas.experiment.schema import Experiment


def plan_lines(exp: Experiment, config: Path) -> list[str]:
    data = f", dataset {exp.dataset.get('source', 'digits')}" if exp.uses_supernet else ""
    lines = [f"{config}: valid (experiment {exp.name}, settings digest {exp.digest()})",
             f"  space {exp.space}{data}, seed {exp.seed}"]
    for name, dev in exp.devices.items():
        if dev.latency is not None:
            lines.append(f"  profile  latency@{name}: {_latency(dev.latency)}")
        if dev.energy is not None:
            lines.append(f"  profile  energy@{name}: {_energy(dev.energy)}")
    if exp.uses_supernet:
        lines.append(f"  train    supernet, {exp.train.epochs} epochs, accuracy on the "
                     f"{exp.accuracy.supernet.split} split")
    else:
        source = getattr(exp.accuracy, exp.accuracy.kind)
        lines.append(f"  train    skipped (accuracy from {source})")
    s = exp.search
    lines.append(f"  search   {s.controller.name}, {s.budget} queries" + (f", {s.workers} workers" if s.workers > 1 else "")
                 + (f", storage {s.storage}" if s.storage else ""))
    lines.append(f"           objectives: {', '.join(map(str, exp.objectives))}")
    lines.append(f"           budgets: {'; '.join(exp.budgets) or 'none'}")
    if exp.export is None:
        lines.append("  export   off")
    else:
        lines.append(f"  export   {exp.export.arch} arch: weights, ONNX verified with onnxruntime, model card")
    if exp.compress is None or exp.export is None:
        lines.append("  compress off")
    else:
        c = exp.compress
        lines.append(f"  compress {c.method} pruning of the export to {'; '.join(c.budgets)}, then {c.epochs} epochs "
                     "of distillation from it")
    return lines


def _latency(spec) -> str:
    kind = spec.kind
    if kind == "profile":
        return f"profile a LUT on this machine ({spec.profile.calibrate} calibration archs)"
    if kind == "kit":
        state = "results present" if Path(spec.kit.results).is_file() else "results missing: the run writes the kit and stops"
        return f"import kit results {spec.kit.results} ({state})"
    if kind == "like":
        return f"the LUT of {spec.like} as a stand-in"
    if kind == "table":
        return f"table {spec.table}, column {spec.column}"
    return f"{kind} {getattr(spec, kind)}"


def _energy(spec) -> str:
    if spec.kind == "analytic":
        return "analytic estimate (the device's power model over its latency)"
    if spec.kind == "table":
        return f"table {spec.table}, column {spec.column}"
    return f"predictor {spec.predictor}"
