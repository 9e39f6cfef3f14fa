"""Calibrated intervals, the leave-one-device-out protocol and bad input, on tables made
from the space's own counters (three synthetic 'devices' that weigh MACs, parameters
and activations differently, with log-normal measurement noise)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.costs import CounterCost
from nas.errors import NasError
from nas.predictors.loo import Protocol, World, device_groups, score
from nas.predictors.predictor import Predictor, evaluate, fit_predictor
from nas.predictors.tables import read_table
from nas.predictors.transfer import transfer_predictor
from nas.space import load_space

DEVICES = {"alpha_latency": (1.0, 0.2, 0.1), "beta_latency": (0.6, 0.8, 0.3), "gamma_latency": (0.3, 0.1, 1.0),
           "delta_1_latency": (0.8, 0.5, 0.2), "delta_32_latency": (0.9, 0.4, 0.4)}


def _table(path: Path, n: int = 1200, noise: float = 0.05, seed: int = 0, columns=DEVICES) -> Path:
    space = load_space("nb201")
    rng = np.random.default_rng(seed)
    codes = np.unique(space.sample_codes(rng, n), axis=0)
    parts = [CounterCost(space, m).predict(codes) for m in ("macs", "params", "peak_activation_bytes")]
    parts = [p / p.mean() for p in parts]
    archs = space.decode_batch(codes)
    values = {c: (1.0 + sum(w * p for w, p in zip(ws, parts))) * np.exp(noise * rng.standard_normal(len(codes)))
              for c, ws in columns.items()}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", *columns])
        for i, arch in enumerate(archs):
            w.writerow([arch.to_json(), *(f"{values[c][i]:.6g}" for c in columns)])
    return path


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    return _table(tmp_path_factory.mktemp("intervals") / "devices.csv")


@pytest.fixture(scope="module")
def table(table_path):
    return read_table(table_path, load_space("nb201"))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model", ["ridge", "gbt"])
def test_ninety_percent_intervals_cover_about_ninety_percent(table, model):
    predictor = fit_predictor(table, "beta_latency", 300, seed=0, model=model)
    report = evaluate(predictor, table, "beta_latency")
    assert 0.85 <= report["coverage_90"] <= 0.97, report
    method = predictor.meta["calibration"]["method"]
    assert method == ("leave-one-out" if model == "ridge" else "5-fold cross-validation")
    lower, upper = predictor.interval(table.codes[:50], 0.5)
    wide_lower, wide_upper = predictor.interval(table.codes[:50], 0.99)
    assert np.all(wide_lower < lower) and np.all(wide_upper > upper)


def test_noisier_device_gets_wider_intervals(tmp_path):
    space = load_space("nb201")
    widths = []
    for noise in (0.02, 0.15):
        t = read_table(_table(tmp_path / f"n{noise}.csv", 400, noise), space)
        p = fit_predictor(t, "alpha_latency", 200, seed=0)
        lower, upper = p.interval(t.codes, 0.9)
        widths.append(np.median(upper / lower))
    assert widths[1] > 3 * widths[0] - 2, widths


def test_transfer_interval_survives_its_file(table, tmp_path):
    sources = ["alpha_latency", "beta_latency", "gamma_latency"]
    predictor = transfer_predictor(table, sources, "delta_1_latency", 20, seed=0, n_pretrain=300,
                                   use_shipped_reference=False, heads=("shared", "direct", "mix"))
    predictor.save(tmp_path / "t.npz")
    loaded = Predictor.load(tmp_path / "t.npz")
    np.testing.assert_allclose(loaded.interval(table.codes[:30]), predictor.interval(table.codes[:30]))
    assert 0.75 <= evaluate(loaded, table, "delta_1_latency")["coverage_90"] <= 1.0


def test_transfer_heads_auto_are_chosen_on_the_sources_alone(table):
    from nas.predictors.loo import TRANSFER_VARIANTS

    sources = ["alpha_latency", "beta_latency", "gamma_latency", "delta_1_latency"]
    predictor = transfer_predictor(table, sources, "delta_32_latency", 10, seed=0, n_pretrain=300,
                                   use_shipped_reference=False, heads="auto")
    meta = predictor.meta["transfer"]
    choice = meta["heads_choice"]
    assert set(choice["mean_spearman"]) == set(TRANSFER_VARIANTS)
    assert tuple(meta["heads"]) == TRANSFER_VARIANTS[choice["variant"]]
    assert choice["mean_spearman"][choice["variant"]] == max(choice["mean_spearman"].values())
    # two source devices leave nothing to choose on: the default heads
    few = transfer_predictor(table, sources[:2], "delta_32_latency", 10, seed=0, n_pretrain=300,
                             use_shipped_reference=False, heads="auto")
    assert few.meta["transfer"]["heads"] == ["shared", "direct"] and "heads_choice" not in few.meta["transfer"]


def test_counters_are_exact_intervals():
    space = load_space("nb201")
    lower, upper = CounterCost(space, "macs").interval(space.sample_codes(0, 5), 0.9)
    np.testing.assert_array_equal(lower, upper)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_confidence_outside_zero_one_is_refused(table, level, tmp_path, capsys):
    predictor = fit_predictor(table, "alpha_latency", 50, seed=0)
    with pytest.raises(NasError, match="between 0 and 1"):
        predictor.interval(table.codes[:3], level)
    predictor.save(tmp_path / "a.npz")
    archs = tmp_path / "archs.jsonl"
    archs.write_text(load_space("nb201").sample(0).to_json() + "\n")
    code, out, err = run(capsys, "predictor", "predict", tmp_path / "a.npz", "--archs", archs, "--interval", level)
    assert code == 2 and err.count("\n") == 1 and "between 0 and 1" in err and not out


def test_predict_writes_interval_columns(table, tmp_path, capsys):
    fit_predictor(table, "alpha_latency", 100, seed=0).save(tmp_path / "a.npz")
    archs = tmp_path / "archs.jsonl"
    archs.write_text("".join(load_space("nb201").sample(s).to_json() + "\n" for s in range(3)))
    code, out, _ = run(capsys, "predictor", "predict", tmp_path / "a.npz", "--archs", archs, "--interval", 0.9)
    rows = list(csv.DictReader(out.splitlines()))
    assert code == 0 and len(rows) == 3
    for r in rows:
        assert float(r["lower_90"]) < float(r["latency_ms"]) < float(r["upper_90"])


def test_eval_reports_coverage(table_path, tmp_path, capsys):
    model = tmp_path / "b.npz"
    assert run(capsys, "predictor", "fit", "--table", table_path, "--space", "nb201", "--target", "beta_latency",
               "--n-train", 200, "-o", model)[0] == 0
    code, out, _ = run(capsys, "predictor", "eval", model, "--table", table_path, "--target", "beta_latency", "--json")
    assert code == 0 and 0.8 < json.loads(out)["coverage_90"] <= 1.0


@pytest.mark.parametrize("rows, argv, message", [
    ("constant", ["--target", "flat_latency"], r"flat_latency .* is constant \(3 in all"),
    ("missing", ["--target", "gone_latency"], r"column gone_latency has no values \(\d+ rows, all missing\)"),
    ("plain", ["--target", "alpha_latency", "--model", "gbt", "--n-train", "8"],
     "model gbt needs at least 10 measurements, got 8"),
    ("plain", ["--target", "alpha_latency", "--n-train", "3", "--model", "ridge"],
     "model ridge needs at least 5 measurements, got 3 of alpha_latency; measure more archs$"),
    ("plain", ["--target", "alpha_latency", "--n-train", "3"], "model transfer needs at least 5 measurements"),
])
def test_bad_device_columns_are_one_line_errors(table_path, tmp_path, capsys, rows, argv, message):
    path = tmp_path / "t.csv"
    with open(table_path) as src, open(path, "w") as dst:
        for i, line in enumerate(src):
            extra = ("flat_latency,gone_latency" if i == 0 else "3,") if rows != "plain" else ""
            dst.write(line.rstrip("\n") + ("," + extra if extra else "") + "\n")
    code, _, err = run(capsys, "predictor", "fit", "--table", path, "--space", "nb201", *argv, "-o", tmp_path / "x.npz")
    assert code == 2 and err.count("\n") == 1 and re.search(message, err.strip()), err
    assert not (tmp_path / "x.npz").exists()


def test_device_groups_keep_batch_sizes_of_one_gpu_together():
    groups = device_groups(["1080ti_1_latency", "1080ti_32_latency", "gold_6226_latency", "titan_rtx_32_latency",
                            "silver_4114_latency", "silver_4210r_latency", "edgegpu_latency", "edgegpu_energy"])
    assert groups == {"1080ti_1_latency": "1080ti", "1080ti_32_latency": "1080ti", "gold_6226_latency": "gold_6226",
                      "titan_rtx_32_latency": "titan_rtx_32", "silver_4114_latency": "silver_4114",
                      "silver_4210r_latency": "silver_4210r", "edgegpu_latency": "edgegpu",
                      "edgegpu_energy": "edgegpu"}


def test_whole_ms_columns_count_one_ms_as_close():
    measured = np.array([5.0, 6.0, 30.0, 31.0])
    predicted = np.array([5.9, 5.2, 32.9, 31.0])
    assert score(predicted, measured, whole=True)["within_10"] == 1.0
    assert score(predicted, measured, whole=False)["within_10"] == 0.5


def test_nested_choice_never_reads_the_unseen_device(table_path, tmp_path):
    """Replacing the left-out device's values by noise changes nothing the choice reads."""
    space = load_space("nb201")
    world = World(read_table(table_path, space), list(DEVICES), n_pretrain=300)
    choice = Protocol(world, (0,)).choose(["ridge", "transfer", "transfer_all"], "gamma", "transfer", 10)
    scrambled = {**DEVICES, "gamma_latency": (0.0, 0.0, 0.0)}
    other = World(read_table(_table(tmp_path / "scrambled.csv", noise=0.05, columns=scrambled), space),
                  list(DEVICES), n_pretrain=300)
    # gamma's column is now flat noise; every other column is identical
    assert Protocol(other, (0,)).choose(["ridge", "transfer", "transfer_all"], "gamma", "transfer", 10) == choice
    results = Protocol(world, (0,)).run([50], [10], ["ridge", "transfer"], ["transfer"], log=lambda s: None,
                                        progress=False)
    assert {r["device"] for r in results["results"]} == {"alpha", "beta", "gamma", "delta"}
    assert results["summary"]["transfer 10"]["spearman_rho"]["worst"] <= results["summary"]["transfer 10"][
        "spearman_rho"]["mean"]
    assert all(r["chosen"] in ("ridge", "transfer") for r in results["results"] if r["setting"] == "fit")


def test_bench_predictors_prints_protocol_mean_and_worst(table_path, tmp_path, capsys):
    out = tmp_path / "loo.json"
    code, text, err = run(capsys, "bench", "predictors", table_path, "--n-train", "50", "--k", "10", "--seeds", "1",
                          "--models", "ridge,transfer", "--variants", "transfer,transfer_mix", "--n-pretrain", "300",
                          "--out", out)
    assert code == 0, err
    assert "protocol: leave one device out" in text and "Nested" in text
    assert re.search(r"nb201 fit n=50 .*Spearman \d\.\d{3} \(worst \d\.\d{3} \w+\)", text)
    assert re.search(r"nb201 transfer K=10 .*within ±10 % \d\.\d{3} \(worst", text)
    results = json.loads(out.read_text())["loo"]["nb201"]
    assert {r["device"] for r in results["results"]} == {"alpha", "beta", "gamma", "delta"}


def test_bench_predictors_bad_input(table_path, tmp_path, capsys):
    code, _, err = run(capsys, "bench", "predictors", table_path, "--models", "ridge,lasso")
    assert code == 2 and "unknown or no name(s) lasso" in err and err.count("\n") == 1
    one = _table(tmp_path / "one.csv", 300, columns={"solo_latency": (1.0, 0.2, 0.1)})
    code, _, err = run(capsys, "bench", "predictors", one)
    assert code == 2 and "leaving a device out needs two or more" in err and err.count("\n") == 1


def test_transfer_with_the_simplex_heads_from_the_cli(table_path, tmp_path, capsys):
    out = tmp_path / "simplex.npz"
    base = ["predictor", "transfer", "--table", table_path, "--space", "nb201", "--source",
            "alpha_latency,beta_latency,gamma_latency", "--target", "delta_1_latency", "--n-pretrain", 300]
    code, text, err = run(capsys, *base, "--k", 10, "--heads", "simplex,mix,shared", "-o", out)
    assert code == 0, err
    loaded = Predictor.load(out)
    assert loaded.meta["transfer"]["heads"] == ["simplex", "mix", "shared"]
    weights = loaded.model.models_["simplex"].weights_
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    table = read_table(table_path, load_space("nb201"))
    assert evaluate(loaded, table, "delta_1_latency")["spearman_rho"] > 0.8
    for k, message in ((1, "--k 1 must be at least 2"), (100_000, "--k 100000 must be at least 2 and at most")):
        code, text, err = run(capsys, *base, "--k", k, "--heads", "simplex,shared", "-o", tmp_path / "bad.npz")
        assert code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "bad.npz").exists()
    code, _, err = run(capsys, *base, "--k", 10, "--heads", "simplex,median", "-o", tmp_path / "bad.npz")
    assert code == 2 and "shared, direct, mix, simplex" in err and err.count("\n") == 1
