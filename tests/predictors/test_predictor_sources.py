"""Training tables from our own measurements (`hwnas measure`, a LUT as a feature),
from analytic energy estimates, and from JSON lists such as supernet evaluations."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.errors import NasError
from nas.hardware.devices import load_device
from nas.hardware.measure import Protocol
from nas.hardware.profiling import build_lut
from nas.predictors.energy import ESTIMATE_COLUMN, ColumnCost, energy_table
from nas.predictors.measure import measure_table
from nas.predictors.predictor import Predictor, evaluate, fit_predictor
from nas.predictors.reference import load_reference
from nas.predictors.tables import read_table
from nas.space import load_space



@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """24 tiny_mbconv archs timed end to end on this machine (a short protocol)."""
    out = tmp_path_factory.mktemp("measure") / "tiny.csv"
    assert measure_table(load_space("tiny_mbconv"), "local-cpu", 24, 0, out, Protocol(2, 8, 2, 1)) == 24
    return out


def test_measure_writes_a_training_table(measured):
    table = read_table(measured, load_space("tiny_mbconv"))
    rows, values, _ = table.rows("measured_ms", positive=True)
    assert len(rows) == 24 and np.all(values > 0)
    p10, p90 = table.column("p10_ms").values, table.column("p90_ms").values
    assert np.all(p10 <= values) and np.all(values <= p90)
    meta = json.loads(measured.with_suffix(".json").read_text())
    assert meta["device"] == "local-cpu" and meta["runtime"]["threads"] == 1 and meta["n"] == 24


def test_lut_residual_learns_the_lut_correction(measured, tmp_path, capsys):
    lut = tmp_path / "tiny_mbconv.csv"
    build_lut(load_space("tiny_mbconv"), load_device("local-cpu"), out=lut, protocol=Protocol(1, 6, 2, 1), calibrate=0)
    out = tmp_path / "res.npz"
    code = main(["predictor", "fit", "--table", str(measured), "--space", "tiny_mbconv", "--target", "measured_ms",
                 "--n-train", "16", "--model", "lut_residual", "--lut", str(lut), "--device", "local-cpu",
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    loaded = Predictor.load(out)
    assert loaded.featurizer.names[0] == "net.lut_sum" and loaded.meta["lut"]["values"]
    report = evaluate(loaded, read_table(measured, loaded.space), "measured_ms")
    assert report["n"] == 8 and report["excluded"] == 16 and np.isfinite(report["rmspe"])
    codes = loaded.space.sample_codes(np.random.default_rng(0), 50)
    assert np.array_equal(loaded.predict(codes), Predictor.load(out).predict(codes))


def test_energy_table_from_latency(benchmarks, tmp_path):
    path = benchmarks / "fbnet" / "help_latency.csv"
    if not path.is_file():
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    space = load_space("fbnet_cifar")
    table = read_table(path, space)
    device = load_device("pi4-ort")
    out = tmp_path / "energy.csv"
    assert energy_table(table, "raspi4_latency", device, out) == 5000
    energy = read_table(out, space)
    rows, e, _ = energy.rows(ESTIMATE_COLUMN)
    latency = ColumnCost(table, "raspi4_latency").predict(energy.subset(rows))
    assert np.all(e > device.power["idle_w"] * latency)  # idle power plus the dynamic terms
    assert json.loads(out.with_suffix(".json").read_text())["estimate"] is True
    predictor = fit_predictor(energy, ESTIMATE_COLUMN, 100, device="pi4-ort")
    assert predictor.metric == "energy" and predictor.unit == "mJ" and predictor.meta["device"] == "pi4-ort"
    assert evaluate(predictor, energy, ESTIMATE_COLUMN)["spearman_rho"] > 0.97


def test_json_table_of_supernet_style_rows(tmp_path):
    space = load_space("tiny_mbconv")
    archs = [space.sample(s) for s in range(30)]
    rows = [{"arch_id": a.arch_id, "arch": dict(a), "accuracy": 50 + i} for i, a in enumerate(archs)]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(rows))
    table = read_table(path, space)
    assert table.arch_ids == [a.arch_id for a in archs]
    predictor = fit_predictor(table, "accuracy", 20)
    assert predictor.metric == "accuracy" and predictor.unit == "%"
    rows[3]["accuracy"] = "high"
    path.write_text(json.dumps(rows))
    with pytest.raises(NasError, match=r"eval\.json:4: accuracy = 'high' is not a number"):
        read_table(path, space).column("accuracy")


def test_new_device_workflow(benchmarks, tmp_path, capsys):
    """Measure the first reference archs on this machine, then transfer from public devices."""
    table = benchmarks / "nb201" / "hwnasbench_cifar10.csv"
    if not table.is_file():
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    mine = tmp_path / "mine.csv"
    assert measure_table(load_space("nb201"), "local-cpu", 8, 0, mine, Protocol(1, 4, 1, 1), reference=True) == 8
    out = tmp_path / "mine.npz"
    code = main(["predictor", "transfer", "--table", str(table), "--table", str(mine), "--space", "nb201",
                 "--source", "edgegpu_latency,raspi4_latency,pixel3_latency", "--target", "measured_ms", "--k", "8",
                 "--n-pretrain", "300", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    predictor = Predictor.load(out)
    assert predictor.meta["transfer"]["adapted_on"].startswith("first 8 archs of the reference set")
    reference = [a.arch_id for a in load_reference(load_space("nb201"))[:8]]
    assert predictor.meta["transfer"]["adapt_arch_ids"] == reference
    assert np.all(predictor.predict(predictor.space.sample_codes(np.random.default_rng(0), 20)) > 0)
