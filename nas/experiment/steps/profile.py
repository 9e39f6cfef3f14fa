"""The profile step: every device's cost sources, gathered into the run.

Per device and metric, by kind of source:
    profile    build a latency LUT on this machine (resumes a partial build after a kill)
    kit        import the results of `hwnas lut kit` run on the device; without them, write
               the kit into the run and stop with what to do next (rerun resumes)
    lut        copy the given LUT (and its provenance JSON) into the run
    predictor  copy the learned predictor file into the run
    table      referenced where it is (public tables are large and read-only); hashed
    like       another device's LUT as a stand-in (resolved by the search step)
    analytic   the device's power model over its latency LUT (resolved by the search step)

The result, `sources.json`, maps each metric to its source with paths relative to the
step folder, so a cached copy of the step works in any run folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.atomic import atomic_path
from nas.errors import NasError

if TYPE_CHECKING:
    from nas.experiment.schema import Experiment
    from nas.space.base import SearchSpace

READS = ()  # steps whose outputs this one uses (their keys are part of its key)
CODE = ("nas/space", "nas/hardware")
LIBRARIES = ("onnx", "onnxruntime", "numpy")


def inputs(exp: Experiment) -> dict[str, Any]:
    """The device and source settings (file contents are hashed separately by the cache)."""
    return {"space": exp.space, "seed": exp.seed, "accuracy": exp.accuracy.model_dump(mode="json"),
            "devices": {n: d.model_dump(mode="json") for n, d in exp.devices.items()}}


def input_files(exp: Experiment) -> list[str]:
    """Files whose contents the step's results depend on (kit results once they exist)."""
    files = []
    for dev in exp.devices.values():
        lat, energy = dev.latency, dev.energy
        if lat is not None:
            files += [f for f in (lat.lut, lat.predictor, lat.table) if f]
            if lat.lut:
                files.append(str(Path(lat.lut).with_suffix(".json")))
            if lat.kit is not None and Path(lat.kit.results).is_file():
                files.append(lat.kit.results)
        if energy is not None:
            files += [f for f in (energy.predictor, energy.table) if f]
    acc = exp.accuracy
    return files + [f for f in (acc.predictor, acc.table) if f]


def host(exp: Experiment) -> dict[str, Any]:
    """This machine's CPU when a LUT is profiled here (a LUT belongs to its machine)."""
    if not any(d.latency is not None and d.latency.kind == "profile" for d in exp.devices.values()):
        return {}
    from nas.hardware.devices import host_facts

    facts = host_facts()
    return {"cpu": facts["cpu"], "cores": facts["cores"]}


def run(exp: Experiment, space: SearchSpace, out: Path, progress: bool) -> dict[str, Any]:
    """Gather every source into `out`; returns {metric: source spec} (paths relative to `out`)."""
    sources: dict[str, Any] = {}
    for name, dev in exp.devices.items():
        if dev.latency is not None:
            sources[f"latency@{name}"] = _latency(exp, space, name, out)
        if dev.energy is not None:
            sources[f"energy@{name}"] = _energy(exp, name, out)
    if exp.accuracy.table is not None:
        sources["accuracy"] = exp.accuracy.table_source()
    elif exp.accuracy.predictor:
        sources["accuracy"] = {"predictor": _copy(Path(exp.accuracy.predictor), out / "predictors" / "accuracy.npz", out)}
    return sources


def _latency(exp: Experiment, space: SearchSpace, name: str, out: Path) -> dict[str, Any]:
    from nas.hardware.devices import load_device

    spec = exp.devices[name].latency
    lut_path = out / "luts" / name / f"{space.name}.csv"
    if spec.kind == "profile":
        from nas.hardware.measure import Protocol
        from nas.hardware.profiling import build_lut

        p = spec.profile
        build_lut(space, load_device(name), p.resolution or [None], lut_path, Protocol(p.warmup, p.repeats, p.rounds, p.passes),
                  p.calibrate, exp.seed)
    elif spec.kind == "kit":
        _kit(space, name, spec.kit, spec.allow_mismatch, lut_path, out)
    elif spec.kind == "lut":
        _copy_lut(Path(spec.lut), lut_path)
    elif spec.kind == "predictor":
        return {"predictor": _copy(Path(spec.predictor), out / "predictors" / f"{name}_latency.npz", out)}
    elif spec.kind == "table":
        return spec.table_source()
    else:  # like: the other device's LUT, resolved by the search step
        return {"like": spec.like}
    return {"lut": str(lut_path.relative_to(out)), "allow_mismatch": spec.allow_mismatch}


def _energy(exp: Experiment, name: str, out: Path) -> dict[str, Any]:
    spec = exp.devices[name].energy
    if spec.kind == "analytic":
        return {"analytic": True}
    if spec.kind == "predictor":
        return {"predictor": _copy(Path(spec.predictor), out / "predictors" / f"{name}_energy.npz", out)}
    return spec.table_source()


def _kit(space: SearchSpace, name: str, kit: Any, allow_mismatch: bool, lut_path: Path, out: Path) -> None:
    from nas.hardware.devices import load_device
    from nas.hardware.kit import import_results, write_kit

    results = Path(kit.results)
    if results.is_file():
        import_results(results, space, load_device(name), lut_path, allow_mismatch)
        return
    zip_path = out / "kits" / f"{name}_{space.name}.zip"
    if not zip_path.is_file():
        write_kit(space, zip_path, kit.resolution or [None], kit.batch)
    raise NasError(f"device {name} needs its kit results: copy {zip_path} to the device, run 'unzip "
                   f"{zip_path.name} -d kit && python3 kit/runner.py --out results.csv' there, bring results.csv back "
                   f"as {results}, then rerun this experiment (it resumes)")


def _copy_lut(src: Path, dst: Path) -> None:
    from nas.hardware.lut import LUT

    for a, b in zip(LUT.paths(src), LUT.paths(dst)):
        if not a.is_file():
            raise NasError(f"LUT {src}: {a.name} is missing (a LUT is a CSV and its provenance JSON)")
        _copy_file(a, b)


def _copy(src: Path, dst: Path, out: Path) -> str:
    _copy_file(src, dst)
    return str(dst.relative_to(out))


def _copy_file(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
