"""The search step: the experiment's objectives and budgets over the run's cost sources.

A thin adapter over nas.search.run_search: the profile step's sources (paths inside the
run), the trained supernet as the accuracy oracle, the controller and its settings
become one search config, also written to `search.yaml` so the search can be rerun or
joined by hand (`hwnas search search.yaml --storage URL --study NAME`, or the URL in $HWNAS_STORAGE_URL). The study lives
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
from nas.errors import CompatibilityWarning, NasError
from nas.redact import STORAGE_ENV, redact

if TYPE_CHECKING:
    from nas.experiment.schema import Experiment

READS = ("profile", "train")  # steps whose outputs this one uses (their keys are part of its key)
CODE = ("nas/sources.py", "nas/space", "nas/search", "nas/hardware", "nas/predictors", "nas/supernet", "nas/data")
LIBRARIES = ("optuna", "numpy", "scipy", "scikit-learn", "torch")


def inputs(exp: Experiment) -> dict[str, Any]:
    return {"space": exp.space, "seed": exp.seed, "objectives": exp.objectives, "budgets": exp.budgets,
            "accuracy": exp.accuracy.model_dump(mode="json"), "search": exp.search.model_dump(mode="json")}


def check(exp: Experiment, where: str) -> None:
    """The search config this experiment makes (storage URL, reference point): errors before any step runs."""
    from nas.search import config_from_dict

    try:
        config_from_dict(_base_config(exp, exp.space), "search")
    except NasError as exc:
        raise NasError(f"{where}: {exc}") from None


def _base_config(exp: Experiment, space: str) -> dict[str, Any]:
    s = exp.search
    data: dict[str, Any] = {"space": space, "objectives": list(exp.objectives), "constraints": list(exp.budgets),
                            "controller": s.controller.model_dump(mode="json"), "seed": exp.seed, "budget": s.budget}
    if s.storage:
        data["storage"] = s.storage  # as written: $VARIABLES are expanded when the study is opened
    if s.reference:
        data["reference"] = dict(s.reference)
    if s.verify:
        data["verify"] = list(s.verify)
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
    """Run or resume the search into `out`; returns the step's result: the search summary and,
    for a space with precision decisions, what each precision choice costs on the front
    (nas.search.precision, also written to precision.json)."""
    from nas.search import config_from_dict, run_search
    from nas.search.precision import precision_effects
    from nas.search.runner import SearchResult

    data = {**_base_config(exp, space), "sources": sources, "study": exp.search.study or study, "out": str(out)}
    config = config_from_dict(data, "search", out)
    # the file joins more workers by hand; a literal password in the URL stays out of it
    # (workers started here get the URL through the environment)
    shown = {**data, "storage": redact(data["storage"])} if "storage" in data else data
    write_atomic(out / "search.yaml", json.dumps(shown, indent=2) + "\n")
    workers = _start_workers(out, config.storage_url, config.study, exp.search.workers - 1)
    try:
        with warnings.catch_warnings():
            if any(isinstance(v, dict) and v.get("allow_mismatch") for v in sources.values()):
                # asked for (a stand-in LUT, or allow_mismatch in the config): not news at every load
                warnings.simplefilter("ignore", CompatibilityWarning)
            result = run_search(config, progress=progress)
    finally:
        _wait(workers)
    # the front as this process collected it when its own search ended
    effects = precision_effects(result.result) if isinstance(result.result, SearchResult) else None
    if effects is None:
        return {"summary": result.summary}
    write_atomic(out / "precision.json", json.dumps(effects, indent=2) + "\n")
    return {"summary": result.summary, "precision": effects}


def _start_workers(out: Path, storage: str, study: str, n: int) -> list[tuple[subprocess.Popen, Path]]:
    """n `hwnas search` processes joining the study (each logs to workers/wN.log)."""
    procs = []
    for i in range(n):
        log = out / "workers" / f"w{i + 1}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "nas.cli", "search", str(out / "search.yaml"), "--study", study,
               "--out", str(log.with_suffix("")), "--quiet"]
        env = {**os.environ, STORAGE_ENV: storage}  # never on the command line: every user can read that
        with open(log, "w") as fh:
            procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), log))
    return procs


def _wait(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    failed = []
    for proc, log in procs:
        if proc.wait() != 0:
            failed.append(log)
    if failed:
        last = (failed[0].read_text().strip().splitlines() or ["no output"])[-1]
        raise NasError(f"{len(failed)} search worker(s) failed; {failed[0]}: {last}")
