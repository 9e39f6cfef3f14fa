"""The search step: the experiment's objectives and budgets over the run's cost sources.

A thin adapter over nas.search.run_search: the profile step's sources (paths inside the
run), the trained supernet as the accuracy oracle, the controller and its settings
become one search config, also written to `search.yaml` so the search can be rerun or
joined by hand (`hwnas search search.yaml --storage URL --study NAME`). The study lives
in the step folder (SQLite) unless the experiment names a storage URL; a killed search
resumes from it without repeating queries. With `workers: N` (Optuna controllers),
N-1 extra `hwnas search` processes join the same study.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.atomic import write_atomic
from nas.errors import NasError, closest

if TYPE_CHECKING:
    from nas.experiment.schema import Experiment

READS = ("profile", "train")  # steps whose outputs this one uses (their keys are part of its key)
CODE = ("nas/sources.py", "nas/space", "nas/search", "nas/hardware", "nas/predictors", "nas/supernet", "nas/data")
LIBRARIES = ("optuna", "numpy", "scipy", "scikit-learn", "torch")
SHARED_STUDY_CONTROLLERS = ("optuna-tpe", "optuna-nsga2")


def inputs(exp: Experiment) -> dict[str, Any]:
    return {"space": exp.space, "seed": exp.seed, "objectives": exp.objectives, "budgets": exp.budgets,
            "accuracy": exp.accuracy.model_dump(mode="json"), "search": exp.search.model_dump(mode="json")}


def check(exp: Experiment, where: str) -> None:
    """Controller name and settings, storage URL: errors before any step runs."""
    from nas.search import config_from_dict

    try:
        config = config_from_dict(_base_config(exp, exp.space), "search")
    except NasError as exc:
        raise NasError(f"{where}: {exc}") from None
    known = _controller_settings(config.controller)
    for key in config.settings:
        if key not in known:
            raise NasError(f"{where}: search.controller: unknown setting {key!r} of {config.controller}"
                           f"{closest(key, known)}; known: {', '.join(known) or 'none'}")
    if exp.search.workers < 1:
        raise NasError(f"{where}: search.workers must be at least 1, got {exp.search.workers}")
    if exp.search.workers > 1 and config.controller not in SHARED_STUDY_CONTROLLERS:
        raise NasError(f"{where}: search.workers > 1 shares one study between processes, which the "
                       f"{config.controller} controller does not do; use one of {', '.join(SHARED_STUDY_CONTROLLERS)}")


def _controller_settings(name: str) -> list[str]:
    if name == "differentiable":
        from nas.search.controllers.differentiable import SETTINGS

        return list(SETTINGS)
    from nas.search.controllers.optuna_backed import SAMPLER_SETTINGS

    if name in SAMPLER_SETTINGS:
        return list(SAMPLER_SETTINGS[name])
    from nas.search.runner import QUERY_CONTROLLERS

    return list(QUERY_CONTROLLERS[name].settings)


def _base_config(exp: Experiment, space: str) -> dict[str, Any]:
    s = exp.search
    data: dict[str, Any] = {"space": space, "objectives": list(exp.objectives), "constraints": list(exp.budgets),
                            "controller": s.controller, "seed": exp.seed, "budget": s.budget}
    if s.storage:
        data["storage"] = os.path.expandvars(s.storage)
    if s.reference:
        data["reference"] = dict(s.reference)
    return data


def search_sources(exp: Experiment, profiled: dict[str, Any], profile_dir: Path, train_dir: Path | None
                   ) -> dict[str, Any]:
    """The run's cost sources as the search reads them: the profile step's (read back
    through the cost-source union, paths made absolute in this run) and the trained
    supernet for accuracy; serialized, for search.yaml and the model card."""
    from nas.sources import read_source

    sources = {metric: read_source(spec, f"{profile_dir / 'step.json'}: sources.{metric}", relative_to=profile_dir)
               for metric, spec in profiled.items()}
    if exp.accuracy.kind == "supernet":
        sources["accuracy"] = exp.accuracy.trained(train_dir)
    return {metric: spec.to_dict() for metric, spec in sources.items()}


def run(exp: Experiment, space: str, out: Path, sources: dict[str, Any], study: str, progress: bool) -> dict[str, Any]:
    """Run or resume the search into `out`; returns its summary."""
    from nas.search import config_from_dict, run_search

    data = {**_base_config(exp, space), "sources": sources, "study": exp.search.study or study, "out": str(out)}
    write_atomic(out / "search.yaml", json.dumps(data, indent=2) + "\n")
    config = config_from_dict(data, "search", out)
    workers = _start_workers(out, config.storage_url, config.study, exp.search.workers - 1)
    try:
        with warnings.catch_warnings():
            if any(isinstance(v, dict) and v.get("allow_mismatch") for v in sources.values()):
                # asked for (a stand-in LUT, or allow_mismatch in the config): not news at every load
                warnings.filterwarnings("ignore", message=r"LUT for .* does not fit")
            result = run_search(config, progress=progress)
    finally:
        _wait(workers)
    return result.summary


def _start_workers(out: Path, storage: str, study: str, n: int) -> list[tuple[subprocess.Popen, Path]]:
    """n `hwnas search` processes joining the study (each logs to workers/wN.log)."""
    procs = []
    for i in range(n):
        log = out / "workers" / f"w{i + 1}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "nas.cli", "search", str(out / "search.yaml"), "--storage", storage,
               "--study", study, "--out", str(log.with_suffix("")), "--quiet"]
        with open(log, "w") as fh:
            procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), log))
    return procs


def _wait(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    failed = []
    for proc, log in procs:
        if proc.wait() != 0:
            failed.append(log)
    if failed:
        last = (failed[0].read_text().strip().splitlines() or ["no output"])[-1]
        raise NasError(f"{len(failed)} search worker(s) failed; {failed[0]}: {last}")
