"""`hwnas predictor ...` end to end on the public FBNet table, and one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.predictors.predictor import Predictor
from nas.predictors.reference import load_reference
from nas.space import load_space

EVAL_KEYS = {"rmse", "rmspe", "within_5", "within_10", "within_15", "kendall_tau", "spearman_rho", "n"}


@pytest.fixture(scope="module")
def fbnet_csv(benchmarks) -> Path:
    path = benchmarks / "fbnet" / "help_latency.csv"
    if not path.is_file():
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_eval_predict(fbnet_csv, tmp_path, capsys):
    model = tmp_path / "pi.npz"
    code, out, _ = run(capsys, "predictor", "fit", "--table", fbnet_csv, "--space", "fbnet_cifar", "--target",
                       "raspi4_latency", "--n-train", 100, "--seed", 1, "-o", model)
    assert code == 0 and "trained on 100 archs" in out
    code, out, _ = run(capsys, "predictor", "eval", model, "--table", fbnet_csv, "--target", "raspi4_latency", "--json")
    report = json.loads(out)
    assert code == 0 and EVAL_KEYS <= set(report) and report["n"] == 4900 and report["excluded"] == 100
    assert report["spearman_rho"] > 0.97 and report["within_10"] > 0.95
    archs = tmp_path / "archs.jsonl"
    space = load_space("fbnet_cifar")
    archs.write_text("".join(json.dumps(space.sample(s).to_dict()) + "\n" for s in range(3)))
    code, out, _ = run(capsys, "predictor", "predict", model, "--archs", archs)
    rows = list(csv.DictReader(out.splitlines()))
    assert code == 0 and [r["arch_id"] for r in rows] == [space.sample(s).arch_id for s in range(3)]
    direct = Predictor.load(model).predict([space.sample(s) for s in range(3)])
    np.testing.assert_allclose([float(r["latency_ms"]) for r in rows], direct, rtol=1e-5)
    code, out, _ = run(capsys, "predictor", "show", model)
    assert code == 0 and json.loads(out)["training"]["arch_ids"] == "100 arch ids"


def test_transfer_lists_its_rows(fbnet_csv, tmp_path, capsys):
    model = tmp_path / "gold.npz"
    code, out, _ = run(capsys, "predictor", "transfer", "--table", fbnet_csv, "--space", "fbnet_cifar", "--source",
                       "eyeriss_latency,raspi4_latency", "--target", "gold_6226_latency", "--k", 20, "--seed", 0,
                       "--n-pretrain", 500, "-o", model)
    assert code == 0 and "adapted on 20 archs" in out
    meta = Predictor.load(model).meta
    assert len(meta["transfer"]["adapt_arch_ids"]) == 20 and meta["transfer"]["sources"] == ["eyeriss_latency",
                                                                                               "raspi4_latency"]
    code, out, _ = run(capsys, "predictor", "eval", model, "--table", fbnet_csv, "--target", "gold_6226_latency",
                       "--json")
    report = json.loads(out)
    assert report["excluded"] == 20 and report["spearman_rho"] > 0.9


def test_reference_command_writes_a_nested_design(tmp_path, capsys):
    out_file = tmp_path / "ref.json"
    code, out, _ = run(capsys, "predictor", "reference", "--space", "tiny_mbconv", "-n", 12, "-o", out_file)
    assert code == 0
    archs = load_reference(load_space("tiny_mbconv"), out_file)
    assert len(archs) == len(set(archs)) == 12
    shipped = load_reference(load_space("nb201"))
    assert shipped is not None and len(shipped) >= 50


@pytest.mark.parametrize("argv, message", [
    (["--target", "raspi4"], "no column 'raspi4'.*did you mean 'raspi4_latency'"),
    (["--target", "raspi4_latency", "--n-train", "6000"], "--n-train 6000 must be between 2 and the 5000 rows"),
    (["--target", "raspi4_latency", "--model", "lut_residual"], "lut_residual needs a LUT"),
])
def test_fit_errors_are_one_line(fbnet_csv, tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "predictor", "fit", "--table", fbnet_csv, "--space", "fbnet_cifar", *argv,
                       "-o", tmp_path / "x.npz")
    assert code == 2 and err.count("\n") == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "x.npz").exists()


def test_bad_table_error_names_the_row(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("arch_str,lat\n|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,1.5\n"
                   "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|,n/a?\n")
    code, _, err = run(capsys, "predictor", "fit", "--table", bad, "--space", "nb201", "--target", "lat",
                       "-o", tmp_path / "x.npz")
    assert code == 2 and f"{bad}:3: lat = 'n/a?' is not a number" in err
