"""Experiments: one YAML file -> profile -> train -> search -> export -> report.

    load_experiment(path)      the validated config (nas.experiment.schema)
    run_experiment(path)       run or resume it, returns its Run folder (nas.experiment.runner)
    write_report(run)          runs/<id>/report.html (nas.experiment.report)
    find_run(root, ref)        a run by id, prefix or folder (nas.experiment.rundir)

Steps are cached by a content hash of their inputs (nas.experiment.cache) and each run
lives in its own folder (nas.experiment.rundir); `hwnas runs` reads them back
(nas.experiment.runs). Names load on first use, so other `hwnas` commands do not pay
for pydantic.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"load_experiment": "nas.experiment.schema", "run_experiment": "nas.experiment.runner",
            "write_report": "nas.experiment.report", "find_run": "nas.experiment.rundir"}
__all__ = ["find_run", "load_experiment", "run_experiment", "write_report"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.experiment' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
