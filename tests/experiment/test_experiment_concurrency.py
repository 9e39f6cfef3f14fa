"""Two `hwnas run` of one config at the same time: each run's export is its own search's best.

A step's work is claimed per (step, key): the second run waits while the first computes
it and then takes it from the cache, and keys follow what upstream steps produced, so
no run can pair its own upstream outputs with another run's downstream ones.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.experiment.test_experiment_pipeline import ENV, TIMEOUT_S, TINY, frozen_checkout


def _finished(run: Path, step: str) -> dict:
    return json.loads((run / step / "step.json").read_text())


def test_two_concurrent_runs_of_one_config_each_export_their_own_best(tmp_path: Path) -> None:
    cwd = frozen_checkout(tmp_path)
    config = cwd / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "search": {**TINY["search"], "budget": 6}}))
    cmd = [sys.executable, "-m", "nas.cli", "run", str(config), "--runs", "runs", "--new", "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-2000:]
    runs = sorted(p for p in (cwd / "runs").iterdir() if not p.name.startswith("."))
    assert len(runs) == 2
    for run in runs:
        best = json.loads(_finished(run, "search")["result"]["summary"]["best"]["arch"])
        card = json.loads((run / "export" / "model" / "card.json").read_text())
        assert card["arch"] == best
        exported = json.loads((run / "export" / "model" / "arch.json").read_text())
        assert exported["arch"] == best
    # each step's work was done once: one run computed it, the other waited and took it from the cache
    steps = [json.loads((r / "run.json").read_text())["steps"] for r in runs]
    for step in ("profile", "train", "search", "export"):
        assert sorted(s[step]["status"] for s in steps) == ["cached", "finished"], (step, steps)
