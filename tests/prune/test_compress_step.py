"""The experiment's optional compress step: config checks, the plan, and (slow) a real run
killed inside the compress step and resumed, with the pruned model in the report."""
from __future__ import annotations

import json

import pytest
import yaml

from nas.errors import ConfigError
from nas.experiment.plan import plan_lines
from nas.experiment.schema import Experiment
from nas.config import validate
from tests.experiment.test_experiment_pipeline import TINY, frozen_checkout, hwnas, only_run, run_until


def _exp(**compress) -> Experiment:
    return validate(Experiment, {**TINY, "compress": compress}, "tiny.yaml")


def test_compress_is_off_by_default_and_planned_when_given() -> None:
    assert validate(Experiment, TINY, "tiny.yaml").compress is None
    exp = _exp(budgets=["latency@local-cpu <= 0.3 ms"], epochs=1)
    assert any(line.startswith("  compress netadapt pruning of the export to latency@local-cpu <= 0.3 ms")
               for line in plan_lines(exp, __import__("pathlib").Path("tiny.yaml")))


@pytest.mark.parametrize("compress, message", [
    ({"budgets": []}, "give at least one"),
    ({"budgets": ["latency@local-cpu <= 0.3 ms"], "step": 2}, "fraction of the parent's cost"),
    ({"budgets": ["latency@local-cpu <= 0.3 ms"], "method": "magic"}, "unknown method 'magic'"),
    ({"budgets": ["latency@local-cpu <= 0.3 ms"], "score": "loss"}, "unknown selection score 'loss'"),
    ({"budgets": ["latency@local-cpu <= 0.3 ms"], "epochz": 1}, "epochz"),
])
def test_bad_compress_settings_are_one_line_config_errors(compress, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _exp(**compress)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_run_killed_in_compress_resumes_and_reports_the_pruned_model(tmp_path, monkeypatch) -> None:
    import tests.experiment.test_experiment_pipeline as pipeline

    monkeypatch.setattr(pipeline, "TIMEOUT_S", 1800)  # five steps on a shared machine
    cwd = frozen_checkout(tmp_path)
    fast = {"warmup": 1, "repeats": 20, "rounds": 2, "passes": 1, "calibrate": 0}
    config = {**TINY, "devices": {"local-cpu": {"latency": {"profile": fast}}}, "budgets": ["latency@local-cpu <= 5 ms"],
              "search": {"controller": {"name": "evolution", "population": 4, "init": 4}, "budget": 4},
              "export": {"arch": "max", "measure_latency": True},
              "compress": {"budgets": ["latency@local-cpu <= 0.9 ms"], "step": 0.15, "round_steps": 0, "select": "magnitude",
                           "calib_images": 32, "epochs": 1}}
    (cwd / "tiny.yaml").write_text(yaml.safe_dump(config))

    def one_round() -> bool:
        runs = list((cwd / "runs").glob("tiny-*")) if (cwd / "runs").is_dir() else []
        return bool(runs) and (runs[0] / "compress" / ".model.prune" / "state.json").is_file()

    run_until(cwd, cwd / "tiny.yaml", one_round, "a finished pruning round")
    run = only_run(cwd)
    rounds_before = json.loads((run / "compress" / ".model.prune" / "state.json").read_text())["history"]
    hwnas("run", cwd / "tiny.yaml", "--runs", "runs", cwd=cwd)
    step = json.loads((run / "compress" / "step.json").read_text())
    pruning = step["result"]["card"]["pruning"]
    assert pruning["met"] and pruning["rounds"][:len(rounds_before)] == rounds_before
    assert step["result"]["finetune"]["epochs"] == 1
    profile_lut = run / "profile" / "luts" / "local-cpu" / "tiny_mbconv.csv"
    assert len(profile_lut.read_text().splitlines()) < len((run / "compress" / "lut" / "tiny_mbconv.csv").read_text().splitlines())
    report = (run / "report.html").read_text()
    assert "Compressed model" in report and "blocks profiled on demand" in report
    again = hwnas("run", cwd / "tiny.yaml", "--runs", "runs", cwd=cwd)
    assert "[compress] cached" in again.stdout + again.stderr or "[compress] already done" in again.stdout + again.stderr
