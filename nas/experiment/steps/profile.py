"""The profile step: every device's cost sources, gathered into the run.

Per device and metric, by kind of source:
    profile    build a latency LUT on this machine (resumes a partial build after a kill)
    kit        import the results of `hwnas lut kit` run on the device; without them, write
               the kit into the run and stop with what to do next (rerun resumes)
    lut        copy the given LUT (and its provenance JSON) into the run
    predictor  copy the learned predictor file into the run
    table      referenced where it is (public tables are large and read-only); hashed
    like       another device's LUT as a stand-in (kept as is: the resolver follows it)
    analytic   the device's power model over its latency (kept as is)

The result, `sources.json`, maps each metric to its source in the serialized form of
the cost-source union (nas.sources: profile and kit become lut sources), with paths
relative to the step folder, so a cached copy of the step works in any run folder; the
search step reads it back through the same union.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.atomic import atomic_path
from nas.errors import NasError

if TYPE_CHECKING:
    from nas.experiment.schema import Experiment
    from nas.sources import Source
    from nas.space.base import SearchSpace

READS = ()  # steps whose outputs this one uses (their keys are part of its key)
CODE = ("nas/sources.py", "nas/space", "nas/hardware")
LIBRARIES = ("onnx", "onnxruntime", "numpy")


def inputs(exp: Experiment) -> dict[str, Any]:
    """The device and source settings (file contents are hashed separately by the cache)."""
    return {"space": exp.space, "seed": exp.seed, "accuracy": exp.accuracy.model_dump(mode="json"),
            "devices": {n: d.model_dump(mode="json") for n, d in exp.devices.items()}}


def input_files(exp: Experiment) -> list[str]:
    """Files whose contents the step's results depend on (kit results once they exist)."""
    from nas.sources import KitSource, LutSource, PredictorSource, TableSource

    files = []
    for spec in [s for d in exp.devices.values() for s in (d.latency, d.energy)] + [exp.accuracy]:
        if isinstance(spec, LutSource):
            files += [spec.lut, str(Path(spec.lut).with_suffix(".json"))]
        elif isinstance(spec, TableSource):
            files.append(spec.table)
        elif isinstance(spec, PredictorSource) and Path(spec.predictor).is_file():
            files.append(spec.predictor)
        elif isinstance(spec, KitSource) and Path(spec.kit.results).is_file():
            files.append(spec.kit.results)
    return files


def host(exp: Experiment) -> dict[str, Any]:
    """This machine's CPU when a LUT is profiled here (a LUT belongs to its machine)."""
    if not any(d.latency is not None and d.latency.kind == "profile" for d in exp.devices.values()):
        return {}
    from nas.hardware.devices import host_facts

    facts = host_facts()
    return {"cpu": facts["cpu"], "cores": facts["cores"]}


def run(exp: Experiment, space: SearchSpace, out: Path, progress: bool) -> dict[str, Any]:
    """Gather every source into `out`; returns {metric: serialized source} (paths relative to `out`)."""
    sources: dict[str, Source] = {}
    for name, dev in exp.devices.items():
        if dev.latency is not None:
            sources[f"latency@{name}"] = _gathered(exp, space, name, "latency", dev.latency, out)
        if dev.energy is not None:
            sources[f"energy@{name}"] = _gathered(exp, space, name, "energy", dev.energy, out)
    if exp.accuracy.kind != "supernet":  # the supernet is the train step's
        sources["accuracy"] = _gathered(exp, space, "accuracy", "accuracy", exp.accuracy, out)
    return {metric: spec.to_dict() for metric, spec in sources.items()}


def _gathered(exp: Experiment, space: SearchSpace, name: str, metric: str, spec: Source, out: Path) -> Source:
    """The source as the search will read it: a LUT built, imported or copied into the run,
    a predictor file copied in; tables (large, read-only), stand-ins and estimates as given."""
    from nas.hardware.devices import load_device
    from nas.sources import KitSource, LutSource, PredictorSource, ProfileSource

    lut_path = out / "luts" / name / f"{space.name}.csv"
    if isinstance(spec, ProfileSource):
        from nas.hardware.measure import Protocol
        from nas.hardware.profiling import build_lut

        p = spec.profile
        build_lut(space, load_device(name), p.resolution or [None], lut_path, Protocol(p.warmup, p.repeats, p.rounds, p.passes, p.statistic),
                  p.calibrate, exp.seed)
    elif isinstance(spec, KitSource):
        _kit(space, name, spec.kit, spec.allow_mismatch, lut_path, out)
    elif isinstance(spec, LutSource):
        _copy_lut(Path(spec.lut), lut_path)
    elif isinstance(spec, PredictorSource) and Path(spec.predictor).is_file():
        file = f"{name}_{metric}.npz" if metric != "accuracy" else "accuracy.npz"
        return spec.model_copy(update={"predictor": _copy(Path(spec.predictor), out / "predictors" / file, out)})
    else:
        return spec
    mismatch = getattr(spec, "allow_mismatch", False)
    return LutSource.model_construct(lut=str(lut_path.relative_to(out)), allow_mismatch=mismatch, queried=spec.queried)


def _kit(space: SearchSpace, name: str, kit: Any, allow_mismatch: bool, lut_path: Path, out: Path) -> None:
    from nas.hardware.devices import load_device
    from nas.hardware.kit import KitPending, import_results, write_kit

    results = Path(kit.results)
    if results.is_file():
        import_results(results, space, load_device(name), lut_path, allow_mismatch)
        return
    zip_path = out / "kits" / f"{name}_{space.name}.zip"
    if not zip_path.is_file():
        write_kit(space, zip_path, kit.resolution or [None], kit.batch)
    raise KitPending(f"device {name} needs its kit results: copy {zip_path} to the device, run 'unzip "
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
