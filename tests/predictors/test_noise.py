"""Measurement noise from isomorphic NB201 twins, and the predictor ceiling it implies:
recovered on synthetic columns of known noise, and read off the public tables."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nas.cli import main
from nas.errors import NasError
from nas.predictors.noise import BAND, NoiseModel, ceiling, column_noise, fit_noise, twin_rows
from nas.predictors.tables import read_table, read_tables
from nas.space import load_space



@pytest.fixture(scope="module")
def nb201():
    return load_space("nb201")


def _mixture_draws(rng, n, sds, weights):
    return rng.normal(0.0, np.asarray(sds)[rng.choice(len(sds), n, p=weights)])


def test_fit_noise_recovers_a_heavy_tailed_mixture():
    rng = np.random.default_rng(0)
    sds, weights = (0.02, 0.3), (0.85, 0.15)
    d = _mixture_draws(rng, 3000, sds, weights) - _mixture_draws(rng, 3000, sds, weights)
    noise = fit_noise(d)
    true_sd = np.sqrt(np.dot(weights, np.square(sds)))
    true_within = sum(w * (2 * stats.norm.cdf(BAND / s) - 1) for s, w in zip(sds, weights))
    assert noise.sd == pytest.approx(true_sd, rel=0.15)
    assert noise.share_within(BAND) == pytest.approx(true_within, abs=0.03)
    # one normal fitted to the same differences would misstate the share within 10 %
    assert abs(2 * stats.norm.cdf(BAND / (d.std() / np.sqrt(2))) - 1 - true_within) > 0.05


def test_fit_noise_needs_pairs():
    with pytest.raises(NasError, match="too few"):
        fit_noise(np.zeros(5))


def test_ceiling_of_a_noiseless_column_is_perfect_and_falls_with_noise():
    rng = np.random.default_rng(1)
    values = np.round(np.exp(rng.normal(2.0, 0.4, 3000)), 1)  # ties, as a simulator's column has
    none = NoiseModel(np.array([1e-6]), np.array([1.0]))
    assert ceiling(values, none, whole=False) == {"spearman_rho": 1.0, "kendall_tau": 1.0, "within_10": 1.0}
    noisy = ceiling(values, NoiseModel(np.array([0.08]), np.array([1.0])), whole=False)
    assert noisy["spearman_rho"] < 0.99
    assert noisy["within_10"] == pytest.approx(2 * stats.norm.cdf(BAND / 0.08) - 1, abs=0.02)
    # on a column in whole milliseconds, +-1 ms also counts: short latencies are easier
    whole = ceiling(values / 5, NoiseModel(np.array([0.08]), np.array([1.0])), whole=True)
    assert whole["within_10"] > noisy["within_10"]


@pytest.fixture(scope="module")
def synthetic(nb201, tmp_path_factory):
    """Every NB201 arch with a latency: a noise-free cost shared by twins (MACs plus a
    per-class effect) times lognormal noise of sd 0.05, drawn per arch."""
    rng = np.random.default_rng(2)
    codes = nb201.encode_batch(list(nb201.enumerate()))
    _, cls = np.unique(nb201.isomorphic_codes(codes), axis=0, return_inverse=True)
    truth = nb201.table("macs")(codes) / 1e6 * np.exp(rng.normal(0, 0.2, cls.max() + 1))[cls.ravel()]
    latency = truth * np.exp(rng.normal(0, 0.05, len(codes)))
    path = tmp_path_factory.mktemp("noise") / "synthetic.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["arch_str", "toy_latency"])
        for code, value in zip(codes, latency):
            writer.writerow([nb201.to_string(nb201.decode(code)), f"{value:.6f}"])
    return path


def test_bench_noise_recovers_known_noise(synthetic, tmp_path, capsys):
    out = tmp_path / "noise.json"
    assert main(["bench", "noise", str(synthetic), "--bootstrap", "3", "--out", str(out)]) == 0
    assert "toy_latency" in capsys.readouterr().out
    data = json.loads(out.read_text())
    (report,) = data["columns"]
    assert data["schema"] == "hwnas.noise/1" and report["pairs"] == 680 and not report["whole_ms"]
    assert report["noise_sd"] == pytest.approx(0.05, rel=0.15)
    expected = 2 * stats.norm.cdf(BAND / 0.05) - 1
    assert report["ceiling"]["within_10"] == pytest.approx(expected, abs=0.02)
    assert report["twin_within_10"] < report["ceiling"]["within_10"]  # a second measurement carries two noises
    low, high = report["ceiling_90"]["within_10"]
    assert low <= high and low - 0.03 <= expected <= high + 0.03


def test_bench_noise_refuses_a_bootstrap_of_zero(synthetic, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "noise", str(synthetic), "--bootstrap", "0"])
    assert exit_.value.code == 2 and "--bootstrap" in capsys.readouterr().err


def test_a_space_without_twins_is_a_one_line_error(tmp_path, capsys):
    fbnet = load_space("fbnet_cifar")
    rng = np.random.default_rng(3)
    path = tmp_path / "fbnet.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["arch", "toy_latency"])
        for code in fbnet.sample_codes(rng, 30):
            writer.writerow(["-".join(str(v) for v in fbnet.decode(code).values()), f"{rng.uniform(1, 2):.3f}"])
    assert len(twin_rows(read_table(path, fbnet))) == 0
    out = tmp_path / "noise.json"
    assert main(["bench", "noise", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no two archs of the table are one network" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _public(benchmarks: Path) -> list[Path]:
    paths = [benchmarks / "nb201" / "hwnasbench_cifar10.csv", benchmarks / "nb201" / "help_latency.csv"]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"public NB201 tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    return paths


def test_public_twins_show_no_noise_on_simulators_and_noise_on_phones(nb201, benchmarks):
    table = read_tables(_public(benchmarks), nb201)
    simulator = column_noise(table, "fpga_latency")
    assert simulator["noise_sd"] < 1e-4 and simulator["ceiling"]["within_10"] == 1.0
    phone = column_noise(table, "samsung_s7_latency")
    assert phone["whole_ms"] and phone["noise_sd"] > 0.05
    assert phone["ceiling"]["spearman_rho"] < simulator["ceiling"]["spearman_rho"]
