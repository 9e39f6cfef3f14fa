"""An experiment that searches precision, end to end on a micro space: profile int8 and float
blocks, train quantization-aware, search, export, and the report's Precision section."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas.cli import main
from tests.supernet.test_qat import MICRO_INT8
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[2]


def micro_int8_experiment(root: Path) -> Path:
    (root / "micro_int8.yaml").write_text(MICRO_INT8)
    config = {
        "name": "micro_int8", "seed": 0, "threads": 1, "space": str(root / "micro_int8.yaml"),
        "dataset": {"source": "digits", "test_fraction": 0.8},
        "devices": {"local-cpu": {"latency": {"profile": {"warmup": 2, "repeats": 100, "rounds": 2, "passes": 1,
                                                          "calibrate": 0}},
                                  "energy": "analytic"}},
        "objectives": ["max accuracy", "min latency@local-cpu"],
        "budgets": ["energy@local-cpu <= 100 mJ", "peak_memory <= 1 MiB"],
        "accuracy": {"supernet": {"split": "val", "calib_images": 32}},
        "train": {"epochs": 2, "batch_size": 32, "calib_images": 32, "qat": {"start_epoch": 1},
                  "sampling": {"random_subnets": 1}},
        "search": {"controller": {"name": "evolution", "population": 6, "init": 6}, "budget": 12},
        "export": {"arch": "best"},
    }
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_experiment_searches_precision_and_reports_what_each_choice_costs(tmp_path, capsys) -> None:
    config = micro_int8_experiment(tmp_path)
    assert main(["run", str(config), "--runs", str(tmp_path / "runs"), "--quiet"]) == 0, capsys.readouterr().err
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert (run / "train" / "config.json").is_file()
    assert json.loads((run / "train" / "config.json").read_text())["config"]["qat"] == {"start_epoch": 1}
    effects = json.loads((run / "search" / "precision.json").read_text())
    step = json.loads((run / "search" / "step.json").read_text())
    assert step["result"]["precision"] == effects
    assert [e["decision"] for e in effects["effects"]] == ["s1.precision", "s2.precision", "head0.precision"]
    assert effects["front"] and all(e["archs"] >= 1 for e in effects["effects"])
    # flipping the head conv to int8 saves memory on the front (its input and output are stored as bytes)
    head = next(e for e in effects["effects"] if e["decision"] == "head0.precision")
    assert head["int8_minus_fp32"]["peak_memory"] <= 0
    report = (run / "report.html").read_text()
    assert "<h2>Precision</h2>" in report and "int8 minus fp32" in report and "s2.precision" in report
    best = effects["best"]["arch_id"]
    assert f"{best}</code> (exported" in report  # on the front or not, the exported arch's precisions are shown


def test_the_shipped_int8_quickstart_is_valid() -> None:
    assert main(["run", str(REPO / "experiments" / "quickstart_int8.yaml"), "--check"]) == 0
