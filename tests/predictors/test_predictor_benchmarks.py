"""What the predictors reach on the public device tables: a quick check of a few columns
in the default run, and the whole benchmark of docs/benchmarks.md (issue 4's goals) under -m slow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.predictors.bench import bench_predictors
from nas.predictors.predictor import evaluate, fit_predictor
from nas.predictors.tables import read_tables
from nas.predictors.transfer import transfer_predictor
from nas.space import load_space

NB201 = ("nb201/hwnasbench_cifar10.csv", "nb201/help_latency.csv")
FBNET = ("fbnet/help_latency.csv",)


def _paths(benchmarks: Path, names) -> list[Path]:
    paths = [benchmarks / n for n in names]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    return paths


@pytest.fixture(scope="module")
def nb201(benchmarks):
    return read_tables(_paths(benchmarks, NB201), load_space("nb201"))


@pytest.mark.parametrize("column, rho, within_10", [
    ("edgegpu_latency", 0.95, 0.7),  # Jetson TX2: noisy, and dominated by the number of kernels
    ("gold_6226_latency", 0.98, 0.9),
    ("samsung_a50_latency", 0.97, 0.85),  # whole milliseconds only
])
def test_one_hundred_measurements_rank_nb201(nb201, column, rho, within_10):
    predictor = fit_predictor(nb201, column, 100, seed=0)
    report = evaluate(predictor, nb201, column)
    assert report["excluded"] == 100 and report["n"] == 15525
    assert report["spearman_rho"] > rho and report["within_10"] > within_10, report


def test_twenty_measurements_of_a_left_out_device(nb201):
    sources = [c for c in nb201.value_columns if c.endswith(("_latency", "_energy")) and not c.startswith("titan")]
    predictor = transfer_predictor(nb201, sources, "titan_rtx_32_latency", 20, seed=0, n_pretrain=500,
                                   use_shipped_reference=False)
    report = evaluate(predictor, nb201, "titan_rtx_32_latency")
    assert report["excluded"] == 20 and report["spearman_rho"] > 0.97, report
    _, std = predictor.predict(nb201.codes[:100], return_std=True)
    assert np.all(std >= 0) and std.max() < 0.5


@pytest.mark.slow
def test_issue_goals_on_unseen_nb201_devices(benchmarks):
    """hwnas bench predictors on the NB201 tables, leave one device out (one seed; the
    figures in docs/benchmarks.md use three)."""
    results = bench_predictors(_paths(benchmarks, NB201), (100,), (20,), 1, log=lambda s: None, progress=False)
    run = results["loo"]["nb201"]
    assert len(run["columns"]) == 19 and len(set(run["groups"].values())) == 14
    fit, few = run["summary"]["fit 100"], run["summary"]["transfer 20"]
    assert fit["spearman_rho"]["mean"] >= 0.97 and few["spearman_rho"]["mean"] >= 0.95
    assert fit["spearman_rho"]["worst"] <= fit["spearman_rho"]["mean"]
    assert 0.85 <= fit["coverage_90"]["mean"] <= 0.97 and 0.85 <= few["coverage_90"]["mean"] <= 0.97
    for timing in results["timing"].values():
        assert timing["fit_cpu_seconds"] < 10 and timing["predict_cpu_seconds"] < 1, timing
