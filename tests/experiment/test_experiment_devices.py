"""Experiments with devices profiled elsewhere (the kit) and searches shared by workers (PostgreSQL)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.postgres import postgres_url  # noqa: F401 - the session fixture
from tests.experiment.test_experiment_pipeline import ENV, TIMEOUT_S, frozen_checkout, hwnas

TRAIN = {"epochs": 1, "batch_size": 16, "calib_images": 16, "sampling": {"random_subnets": 0}}


def test_a_remote_device_through_the_kit_stops_then_resumes_with_its_results(tmp_path: Path) -> None:
    cwd = frozen_checkout(tmp_path)
    results = cwd / "kit-results" / "pi4.csv"
    config = cwd / "kit.yaml"
    config.write_text(yaml.safe_dump({
        "name": "kit", "space": "tiny_mbconv", "dataset": {"source": "digits", "test_fraction": 0.9},
        "devices": {"pi4-ort": {"latency": {"kit": {"results": "kit-results/pi4.csv"}, "allow_mismatch": True},
                                "energy": "analytic"}},
        "budgets": ["latency@pi4-ort <= 100 ms", "energy@pi4-ort <= 500 mJ"],
        "accuracy": {"supernet": {"calib_images": 16}}, "train": TRAIN,
        "search": {"controller": {"name": "random"}, "budget": 3}, "export": False}))
    first = hwnas("run", config, "--runs", "runs", "--quiet", cwd=cwd, check=False)
    errors = [line for line in first.stderr.splitlines() if line.startswith("hwnas: error: ")]
    assert first.returncode == 2 and len(errors) == 1 and "Traceback" not in first.stderr
    run = next((cwd / "runs").glob("kit-*"))
    kit = run / "profile" / "kits" / "pi4-ort_tiny_mbconv.zip"
    assert f"copy {kit.relative_to(cwd)}" in errors[0] and str(results) in errors[0]
    report = (run / "report.html").read_text()  # a stopped run still reports how far it got
    assert "failed" in report and "needs its kit results" in report and "has not finished" in report
    # on the "device": only the kit's own runner, numpy and onnxruntime (one thread instead of the
    # Pi's four, which allow_mismatch accepts: four threads on this shared 2-core machine crawl)
    device = tmp_path / "device"
    zipfile.ZipFile(kit).extractall(device)
    results.parent.mkdir()
    subprocess.run([sys.executable, str(device / "runner.py"), "--threads", "1", "--warmup", "1", "--repeats", "3",
                    "--rounds", "1", "--out", str(results)], cwd=device, check=True, capture_output=True,
                   timeout=TIMEOUT_S)
    hwnas("run", config, "--runs", "runs", "--quiet", cwd=cwd)
    assert [p.name for p in (cwd / "runs").glob("kit-*")] == [run.name]  # the same run, resumed
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "finished" and state["steps"]["profile"]["status"] == "finished"
    lut = json.loads((run / "profile" / "luts" / "pi4-ort" / "tiny_mbconv.json").read_text())
    assert lut["device"] == "pi4-ort" and lut["complete"] and lut["entries"] > 100
    summary = json.loads((run / "search" / "summary.json").read_text())
    assert {"latency@pi4-ort", "energy@pi4-ort"} <= set(summary["best"]["metrics"])


@pytest.mark.slow
def test_two_workers_share_one_search_on_postgresql(tmp_path: Path, postgres_url: str, benchmarks: Path) -> None:  # noqa: F811
    if not (benchmarks / "nb201").is_dir():
        pytest.skip(f"{benchmarks}/nb201 (the public benchmark tables) is not here")
    cwd = frozen_checkout(tmp_path)
    table = str(benchmarks / "nb201" / "hwnasbench_cifar10.csv")
    config = cwd / "pg.yaml"
    config.write_text(yaml.safe_dump({
        "name": "pg", "space": "nb201",
        "devices": {"edgegpu": {"latency": {"table": table, "column": "edgegpu_latency", "unit": "ms"}}},
        "accuracy": {"table": str(benchmarks / "nb201" / "cifar10_val_acc.csv"), "column": "cifar10_val_acc",
                     "unit": "%"},
        "objectives": ["max accuracy", "min latency@edgegpu"], "budgets": ["latency@edgegpu <= 8 ms"],
        "search": {"controller": "optuna-tpe", "budget": 24, "storage": "$HWNAS_TEST_STORAGE", "workers": 2},
        "export": {"measure_latency": False}}))
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "run", str(config), "--runs", "runs", "--quiet"], cwd=cwd,
                          env={**ENV, "HWNAS_TEST_STORAGE": postgres_url}, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = next((cwd / "runs").glob("pg-*"))
    summary = json.loads((run / "search" / "summary.json").read_text())
    assert summary["queries"] == 24 and summary["study"] == run.name
    import optuna

    trials = optuna.load_study(study_name=run.name, storage=postgres_url).get_trials(deepcopy=False)
    queried = [t for t in trials if t.user_attrs.get("query")]
    archs = {json.dumps(t.params, sort_keys=True) for t in queried}
    assert len(queried) == 24 and len(archs) == 24  # the budget, shared, and no arch queried twice
    assert "joined" in (run / "search" / "workers" / "w1.log").read_text() or (run / "search" / "workers" / "w1").is_dir()
    assert (run / "export" / "model" / "model.onnx").is_file()
    assert "$HWNAS_TEST_STORAGE" in (run / "experiment.json").read_text()  # the URL itself stays out of run files


@pytest.mark.slow
def test_a_learned_predictor_is_a_latency_source_and_travels_with_the_run(tmp_path: Path, benchmarks: Path) -> None:
    if not (benchmarks / "nb201").is_dir():
        pytest.skip(f"{benchmarks}/nb201 (the public benchmark tables) is not here")
    cwd = frozen_checkout(tmp_path)
    table = benchmarks / "nb201" / "hwnasbench_cifar10.csv"
    hwnas("predictor", "fit", "--table", table, "--space", "nb201", "--target", "edgegpu_latency", "--n-train", "100",
          "--seed", "0", "-o", "tx2.npz", cwd=cwd)
    config = cwd / "pred.yaml"
    config.write_text(yaml.safe_dump({
        "name": "pred", "space": "nb201", "devices": {"edgegpu": {"latency": {"predictor": "tx2.npz"}}},
        "accuracy": {"table": str(benchmarks / "nb201" / "cifar10_val_acc.csv"), "column": "cifar10_val_acc",
                     "unit": "%"},
        "budgets": ["latency@edgegpu <= 5 ms"], "search": {"controller": "random", "budget": 20}, "export": False}))
    hwnas("run", config, "--runs", "runs", "--quiet", cwd=cwd)
    run = next((cwd / "runs").glob("pred-*"))
    copied = run / "profile" / "predictors" / "edgegpu_latency.npz"
    assert copied.read_bytes() == (cwd / "tx2.npz").read_bytes()
    summary = json.loads((run / "search" / "summary.json").read_text())
    assert summary["problem"]["metrics"]["latency@edgegpu"]["unit"] == "ms"
    assert summary["best"]["metrics"]["latency@edgegpu"] <= 5
