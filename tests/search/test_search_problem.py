"""Search problems: units, objectives, configs, sources, budget checks and NaN reports."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nas.cli import main
from nas.errors import NasError
from nas.search.config import config_from_dict, load_search_config
from nas.search.objectives import parse_constraint, parse_objective
from nas.search.problem import Problem, best_value
from nas.search.run import run_search
from nas.sources import Metric, resolve_metrics
from nas.search.units import format_quantity, parse_quantity
from nas.space import load_space
from tests.search_helpers import local_cpu_lut  # noqa: F401  (a fixture)


@pytest.mark.parametrize("text, unit, value", [
    ("12 ms", "ms", 12.0), ("1.5 s", "ms", 1500.0), ("250 us", "ms", 0.25), ("30 mJ", "mJ", 30.0),
    ("0.2 J", "mJ", 200.0), ("256 KiB", "bytes", 262144.0), ("1 MB", "bytes", 1e6), ("2M", "count", 2e6),
    ("2M params", "count", 2e6), ("300K", "count", 3e5), ("70 %", "fraction", 0.7), ("70 %", "%", 70.0),
    ("0.7", "fraction", 0.7), (5, "ms", 5.0),
])
def test_quantities_convert_to_the_source_unit(text, unit, value):
    assert parse_quantity(text, unit, "test") == pytest.approx(value)


@pytest.mark.parametrize("text, unit, message", [
    ("12 MiB", "ms", "does not measure time"), ("3 ms", "bytes", "does not measure bytes"),
    ("fast", "ms", "is not a number"), ("12 parsecs", "ms", "does not measure time"),
])
def test_quantities_with_the_wrong_unit_are_refused(text, unit, message):
    with pytest.raises(NasError, match=message):
        parse_quantity(text, unit, "test")


def test_format_quantity_reads_naturally():
    assert format_quantity(262144.0, "bytes") == "256 KiB"
    assert format_quantity(2.5e6, "count") == "2.5M"
    assert format_quantity(12.0, "ms") == "12 ms"


def test_objectives_and_constraints_parse():
    assert parse_objective("accuracy", "x").direction == "maximize"
    assert parse_objective("latency@pi4-ort", "x").direction == "minimize"
    assert parse_objective("min accuracy", "x").direction == "minimize"
    assert parse_objective({"metric": "params", "direction": "max"}, "x").direction == "maximize"
    c = parse_constraint("latency@pi4-ort <= 12 ms", "x")
    assert (c.metric, c.upper, c.text) == ("latency@pi4-ort", True, "12 ms")
    assert not parse_constraint("accuracy >= 70 %", "x").upper
    for bad in ("latency 12 ms", "<= 12", 12):
        with pytest.raises(NasError, match="constraint"):
            parse_constraint(bad, "x")
    with pytest.raises(NasError, match="objective"):
        parse_objective("fastest latency ever", "x")


BASE = {"space": "nb201", "objectives": ["min params"], "constraints": ["macs <= 100M"], "budget": 10}


@pytest.mark.parametrize("change, message", [
    ({"objectivs": ["min params"]}, "unknown key 'objectivs' .*did you mean 'objectives'"),
    ({"objectives": None}, "objectives is required"),
    ({"controller": "evolutoin"}, "unknown controller 'evolutoin' .*did you mean 'evolution'"),
    ({"budget": 0}, "budget must be a positive integer"),
    ({"budget": "many"}, "budget must be a positive integer"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"storage": "study.db"}, "must be a database URL"),
    ({"constraints": ["macs < > 3"]}, "constraint"),
])
def test_bad_configs_are_one_line_errors(change, message):
    with pytest.raises(NasError, match=message):
        config_from_dict({**BASE, **change})


def test_unknown_controller_settings_are_refused_before_any_work(tmp_path):
    config = {**BASE, "controller": {"name": "evolution", "populaton": 5}, "out": str(tmp_path / "out")}
    with pytest.raises(NasError, match="unknown setting 'populaton' .*did you mean 'population'"):
        run_search(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_metric_lists_the_known_ones():
    space = load_space("nb201")
    with pytest.raises(NasError, match="unknown metric 'parmas' .*did you mean 'params'.*known: params, macs"):
        resolve_metrics(space, ["parmas"], {})


def test_unknown_device_lists_the_known_ones():
    space = load_space("nb201")
    with pytest.raises(NasError, match="unknown device 'pi5'.*known devices: .*local-cpu"):
        resolve_metrics(space, ["latency@pi5"], {})


def test_sources_are_validated():
    space = load_space("nb201")
    with pytest.raises(NasError, match="unknown key 'colum'"):
        resolve_metrics(space, ["acc"], {"acc": {"table": "x.csv", "colum": "a"}})
    with pytest.raises(NasError, match="exactly one source kind"):
        resolve_metrics(space, ["acc"], {"acc": {"column": "a"}})
    with pytest.raises(NasError, match="unknown counter 'flops'"):
        resolve_metrics(space, ["acc"], {"acc": {"counter": "flops"}})
    metric = resolve_metrics(space, ["size"], {"size": {"counter": "params", "queried": True}})["size"]
    assert metric.queried and metric.unit == "count"


def test_impossible_budget_names_the_smallest_achievable_value():
    space = load_space("tiny_mbconv")
    smallest = space.counts(space.extreme(largest=False))["peak_activation_bytes"]
    problem = Problem.build(space, [parse_objective("min macs", "x")], [parse_constraint("peak_memory <= 1 KiB", "x")])
    with pytest.raises(NasError, match=f"smallest achievable peak_memory is {format_quantity(smallest, 'bytes')}"):
        problem.check_budgets()
    big = space.counts(space.extreme(largest=True))["params"]
    problem = Problem.build(space, [parse_objective("min macs", "x")], [parse_constraint(f"params >= {2 * big}", "x")])
    with pytest.raises(NasError, match="largest achievable params"):
        problem.check_budgets()
    Problem.build(space, [parse_objective("min macs", "x")], [parse_constraint("params <= 2M", "x")]).check_budgets()


def test_budgets_that_cannot_hold_together_are_refused():
    space = load_space("nb201")
    params = resolve_metrics(space, ["params"], {})["params"]
    low, _ = best_value(space, params, minimize=True)
    high, _ = best_value(space, params, minimize=False)
    assert low < high
    problem = Problem.build(space, [parse_objective("min macs", "x")],
                            [parse_constraint(f"params <= {low}", "x"), parse_constraint(f"params >= {high}", "x")])
    with pytest.raises(NasError, match="at once"):
        problem.check_budgets()


def test_best_value_is_exact_on_small_spaces_and_close_by_descent_on_large_ones():
    nb201 = load_space("nb201")
    params = resolve_metrics(nb201, ["params"], {})["params"]
    value, codes = best_value(nb201, params)
    every = np.vstack([nb201.encode(a) for a in nb201.enumerate()])
    assert value == params.model.predict(every).min() == params.model.predict(codes[None, :])[0]
    tiny = load_space("tiny_mbconv")
    macs = resolve_metrics(tiny, ["macs"], {})["macs"]
    value, _ = best_value(tiny, macs)
    assert value <= macs.model.predict(tiny.sample_codes(0, 20000)).min()


def test_latency_budget_below_the_cheapest_arch_is_refused(tmp_path, local_cpu_lut):  # noqa: F811
    """The smallest achievable LUT latency is found from the cheapest arch and named."""
    space = load_space("tiny_mbconv")
    sources = {"latency@local-cpu": {"lut": str(local_cpu_lut)}}
    latency = resolve_metrics(space, ["latency@local-cpu"], sources)["latency@local-cpu"]
    smallest, codes = best_value(space, latency)
    assert smallest <= latency.model.predict(space.sample_codes(0, 20000)).min()
    assert smallest == latency.model.predict(codes[None, :])[0]
    config = {"space": "tiny_mbconv", "objectives": ["min params"], "constraints": ["latency@local-cpu <= 1 us"],
              "sources": sources, "out": str(tmp_path / "out")}
    with pytest.raises(NasError, match=f"smallest achievable latency@local-cpu is {smallest:.4g} ms "
                                       f"\\(arch {space.decode(codes).arch_id}\\)"):
        run_search(config, progress=False)
    assert not (tmp_path / "out").exists()


def nb201_table(path, rows: int, seed: int = 0) -> None:
    """A per-arch table of `rows` NB201 archs with a made-up accuracy (more params: better)."""
    space = load_space("nb201")
    codes = space.sample_codes(seed, rows * 2)
    codes = np.unique(codes, axis=0)[:rows]
    params = resolve_metrics(space, ["params"], {})["params"].model.predict(codes)
    lines = ["arch_str,acc"] + [f"{space.to_string(space.decode(c))},{50 + 40 * p / params.max():.3f}"
                                for c, p in zip(codes, params)]
    path.write_text("\n".join(lines) + "\n")


def test_nan_costs_are_reported_not_dropped(tmp_path, capsys):
    """A cheap metric that is NaN for some archs (a table lacking them) keeps those archs out
    and is counted; a queried metric that is NaN is recorded and reported."""
    nb201_table(tmp_path / "acc.csv", 400)
    nb201_table(tmp_path / "lat.csv", 1500, seed=1)
    text = (tmp_path / "lat.csv").read_text().replace("arch_str,acc", "arch_str,lat")
    (tmp_path / "lat.csv").write_text(text)
    config = {"space": "nb201", "objectives": ["max acc"], "constraints": ["lat <= 1000 ms"], "budget": 40,
              "controller": "random", "out": str(tmp_path / "out"),
              "sources": {"acc": {"table": str(tmp_path / "acc.csv"), "column": "acc", "unit": "%"},
                          "lat": {"table": str(tmp_path / "lat.csv"), "column": "lat", "unit": "ms"}}}
    run = run_search(config, progress=False)
    assert run.summary["nan"]["lat"] > 0  # archs missing from the cost table were seen and skipped
    assert run.summary["nan_queried"]["acc"] > 0  # queried archs missing from the accuracy table
    assert run.summary["queries"] == 40
    rows = (tmp_path / "out" / "archs.csv").read_text().splitlines()
    assert len(rows) == 41
    missing = [r for r in rows[1:] if r.split(",")[3] == ""]
    assert len(missing) == run.summary["nan_queried"]["acc"]
    assert all(r.endswith("False,False") for r in missing)  # NaN accuracy: neither feasible nor on the front
    # the CLI says so on stderr
    cfg = tmp_path / "nan.yaml"
    cfg.write_text(json.dumps({**config, "out": str(tmp_path / "out2")}))
    assert main(["search", str(cfg), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "lat had no value (NaN)" in err and "acc had no value (NaN)" in err


def test_cli_bad_input_is_one_line_with_exit_2_and_no_files(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("space: nb201\nobjectives: [min params]\nconstraints: ['params <= 1 KiB']\n")
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(cfg), "--out", str(tmp_path / "o")],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "params <= 1 KiB" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_config_file_defaults(tmp_path):
    cfg = tmp_path / "my-search.yaml"
    cfg.write_text("space: nb201\nobjectives: max acc\nsources: {acc: {counter: macs, queried: true}}\n")
    config = load_search_config(cfg, {"budget": 7})
    assert config.study == "my-search" and config.budget == 7 and config.controller.name == "evolution"
    assert config.storage_url.startswith("sqlite:///") and config.storage_url.endswith("runs/search/my-search/study.db")


def test_python_api_accepts_cost_models():
    space = load_space("nb201")
    from nas.costs import CounterCost

    metrics = resolve_metrics(space, ["proxy"], {"proxy": Metric("proxy", CounterCost(space, "macs"), True)})
    assert metrics["proxy"].queried and metrics["proxy"].unit == "count"


def test_a_learned_predictor_is_a_cost_source(tmp_path):
    """A predictor file (nas.predictors) serves a metric by name, cheap by default."""
    from nas.predictors.predictor import Predictor, fit_predictor
    from nas.predictors.tables import read_table

    nb201_table(tmp_path / "acc.csv", 300)
    fit_predictor(read_table(tmp_path / "acc.csv", load_space("nb201")), "acc", seed=0).save(tmp_path / "acc.npz")
    config = {"space": "nb201", "objectives": ["max acc", "min params"], "budget": 12, "controller": "random",
              "sources": {"acc": {"predictor": str(tmp_path / "acc.npz")}}, "out": str(tmp_path / "out")}
    run = run_search(config, progress=False)
    predictor = Predictor.load(tmp_path / "acc.npz")
    assert not run.result.problem.metrics["acc"].queried
    assert np.allclose(run.result.values["acc"], predictor.predict(run.result.codes))


def test_hypervolume_reference_from_the_config(tmp_path):
    base = {"space": "nb201", "objectives": ["max proxy", "min params"], "budget": 8, "controller": "random",
            "sources": {"proxy": {"counter": "macs", "queried": True}}, "out": str(tmp_path / "o")}
    with pytest.raises(NasError, match="reference must map objective metrics"):
        config_from_dict({**base, "reference": {"macs": 0}})
    run = run_search({**base, "reference": {"proxy": 0, "params": "2M"}}, progress=False)
    assert run.summary["hypervolume"]["reference"] == [0.0, 2e6]
    front = run.result.front()
    points = np.c_[-run.result.values["proxy"][front], run.result.values["params"][front]]
    from nas.search.pareto import hypervolume

    assert run.summary["hypervolume"]["value"] == pytest.approx(hypervolume(points, np.array([0.0, 2e6])))


def test_shipped_predictors_serve_devices_without_a_profile():
    """latency@edgegpu and energy@edgegpu resolve to the shipped predictors (no device
    profile exists for the public tables' devices); `{predictor: NAME}` names a shipped file."""
    from nas import catalog
    from nas.predictors.predictor import Predictor

    space = load_space("nb201")
    metrics = resolve_metrics(space, ["latency@edgegpu", "energy@edgegpu", "acc"],
                              {"acc": {"predictor": "accuracy/nb201_cifar10"}})
    codes = space.sample_codes(0, 50)
    for name, file in (("latency@edgegpu", "edgegpu/nb201_latency.npz"), ("energy@edgegpu", "edgegpu/nb201_energy.npz"),
                       ("acc", "accuracy/nb201_cifar10.npz")):
        assert not metrics[name].queried
        assert np.array_equal(metrics[name].model.predict(codes), Predictor.load(catalog.find_predictor(file)).predict(codes))
    assert (metrics["latency@edgegpu"].unit, metrics["energy@edgegpu"].unit) == ("ms", "mJ")
    with pytest.raises(NasError, match="predictor edgegpu/nb201_latncy does not exist.*shipped for nb201: .*"
                                       "edgegpu/nb201_latency"):
        resolve_metrics(space, ["lat"], {"lat": {"predictor": "edgegpu/nb201_latncy"}})
    with pytest.raises(NasError, match="unknown device 'edgegppu'.*did you mean 'edgegpu'"):
        resolve_metrics(space, ["latency@edgegppu"], {})


def test_budgets_on_several_devices_at_once(tmp_path):
    """Latency and energy budgets on two devices plus a memory budget, in their own units:
    every queried arch meets all of them, and every metric lands in the results table."""
    space = load_space("nb201")
    names = ["latency@edgegpu", "energy@edgegpu", "latency@raspi4", "peak_memory"]
    sample = {n: m.model.predict(space.sample_codes(1, 2000)) for n, m in resolve_metrics(space, names, {}).items()}
    kib = np.percentile(sample["peak_memory"], 70) / 1024
    constraints = [f"latency@edgegpu <= {np.percentile(sample['latency@edgegpu'], 70):.4f} ms",
                   f"energy@edgegpu <= {np.percentile(sample['energy@edgegpu'], 70) / 1000:.6f} J",
                   f"latency@raspi4 <= {np.percentile(sample['latency@raspi4'], 70) / 1000:.6f} s",
                   f"peak_memory <= {kib:.3f} KiB"]
    config = {"space": "nb201", "objectives": ["max proxy"], "constraints": constraints, "budget": 12, "seed": 0,
              "sources": {"proxy": {"counter": "macs", "queried": True}}, "out": str(tmp_path / "out")}
    run = run_search(config, progress=False)
    problem = run.result.problem
    bounds = {c.metric: c.bound for c in problem.constraints}
    assert bounds["peak_memory"] == pytest.approx(kib * 1024) and bounds["energy@edgegpu"] > 1  # converted to mJ
    for name in names:
        assert np.all(run.result.values[name] <= bounds[name])
        assert np.allclose(run.result.values[name], problem.metrics[name].model.predict(run.result.codes), rtol=1e-6)
    header = (tmp_path / "out" / "archs.csv").read_text().splitlines()[0].split(",")
    assert header == ["query", "arch_id", "arch", "proxy", *names, "feasible", "front"]
    assert (tmp_path / "out" / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"archs.csv", "front.csv", "front.png", "summary.json", "study.db"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temp file left behind


def test_a_searchs_trials_and_front_as_dataframes_are_its_csv_files(tmp_path):
    """trials_dataframe / front_dataframe (like Optuna's study.trials_dataframe()) hold the
    rows of archs.csv / front.csv, with numbers as numbers, ready for pandas queries."""
    import pandas as pd

    from nas.search.results import front_dataframe, trials_dataframe

    config = {"space": "nb201", "objectives": ["max proxy", "min params"], "constraints": ["proxy <= 50M"],
              "budget": 16, "controller": "random", "sources": {"proxy": {"counter": "macs", "queried": True}},
              "out": str(tmp_path / "o")}
    result = run_search(config, progress=False).result
    trials, front = trials_dataframe(result), front_dataframe(result)
    pd.testing.assert_frame_equal(trials, pd.read_csv(tmp_path / "o" / "archs.csv"))
    pd.testing.assert_frame_equal(front, pd.read_csv(tmp_path / "o" / "front.csv"))
    assert trials["query"].tolist() == list(range(1, 17)) and trials["params"].dtype == np.float64
    for name in result.problem.metrics:
        assert np.array_equal(trials[name].to_numpy(), result.values[name], equal_nan=True)
    assert trials["feasible"].tolist() == result.feasible.tolist() and 0 < trials["feasible"].sum() < 16
    ids = [result.problem.space.decode(c).arch_id for c in result.codes[result.front()]]
    assert front["arch_id"].tolist() == ids and front["front"].all() and front["feasible"].all()
    best = trials[trials.feasible].sort_values("proxy", ascending=False).iloc[0]
    assert best["arch_id"] == result.problem.space.decode(result.codes[result.best()]).arch_id


def test_stand_ins_and_analytic_energy_resolve_through_the_source_they_name(local_cpu_lut):  # noqa: F811
    """{like: DEVICE} is that device's source for the metric (the same cost model);
    {analytic: true}, and energy@DEVICE by name, are the power model over latency@DEVICE
    as the config resolves it."""
    from nas.hardware.devices import load_device
    from nas.hardware.energy import AnalyticEnergy
    from nas.hardware.lut import LUT, LUTCost

    space = load_space("tiny_mbconv")
    sources = {"latency@local-cpu": {"lut": str(local_cpu_lut)}, "latency@pi4-ort": {"like": "local-cpu"},
               "energy@pi4-ort": {"analytic": True}}
    metrics = resolve_metrics(space, ["latency@pi4-ort", "energy@pi4-ort", "energy@local-cpu"], sources)
    from nas.sources import Resolver

    resolver = Resolver(space, sources)
    assert resolver.model("latency@pi4-ort") is resolver.model("latency@local-cpu")  # one model, not a copy
    codes = space.sample_codes(0, 300)
    lut = LUTCost(LUT.load(local_cpu_lut), space, device=load_device("local-cpu"))
    assert np.array_equal(metrics["latency@pi4-ort"].model.predict(codes), lut.predict(codes))
    for device in ("pi4-ort", "local-cpu"):
        want = AnalyticEnergy(space, load_device(device), lut).predict(codes)
        assert np.array_equal(metrics[f"energy@{device}"].model.predict(codes), want)
        assert not metrics[f"energy@{device}"].queried and metrics[f"energy@{device}"].unit == "mJ"
    assert metrics["energy@pi4-ort"].model.device.name == "pi4-ort"
    with pytest.raises(NasError, match="latency@pi4-ort -> latency@local-cpu -> latency@pi4-ort stand in for each other"):
        resolve_metrics(space, ["latency@pi4-ort"], {"latency@pi4-ort": {"like": "local-cpu"},
                                                     "latency@local-cpu": {"like": "pi4-ort"}})
    with pytest.raises(NasError, match="an analytic source serves energy@DEVICE, not 'latency@pi4-ort'"):
        resolve_metrics(space, ["latency@pi4-ort"], {"latency@pi4-ort": {"analytic": True}})


def test_a_serialized_source_reads_back_as_the_same_source(tmp_path, local_cpu_lut):  # noqa: F811
    """The union's serialized form (sources.json, search.yaml, card.json) is read back by
    the same models; relative paths are read from the folder of the step that wrote them."""
    from nas.errors import ConfigError
    from nas.sources import LutSource, read_source

    specs = [{"counter": "params", "queried": True}, {"lut": str(local_cpu_lut), "allow_mismatch": True},
             {"table": str(local_cpu_lut), "column": "median", "unit": "ms"}, {"predictor": "edgegpu/nb201_latency"},
             {"analytic": True}, {"like": "local-cpu"}, {"supernet": str(tmp_path), "split": "test", "calib_images": 8}]
    for spec in specs:
        source = read_source(spec, "t")
        assert source.to_dict() == spec and read_source(source.to_dict(), "t") == source
    step = local_cpu_lut.parent
    source = read_source({"lut": local_cpu_lut.name}, "step.json", relative_to=step)
    assert isinstance(source, LutSource) and source.lut == str(local_cpu_lut.resolve())
    with pytest.raises(ConfigError, match=r"^step.json: sources.x: lut: nope.csv does not exist"):
        read_source({"lut": "nope.csv"}, "step.json: sources.x", relative_to=step)
    with pytest.raises(ConfigError, match="give exactly one source kind of .*; got lut, like"):
        read_source({"lut": str(local_cpu_lut), "like": "local-cpu"}, "t")


def test_budget_at_a_confidence_holds_for_the_interval_bound(tmp_path):
    """`latency@edgegpu <= X ms at 90 %`: every arch found has the upper end of its 90 %
    interval within X, a tighter set than the point predictions allow."""
    space = load_space("nb201")
    model = resolve_metrics(space, ["latency@edgegpu"], {})["latency@edgegpu"].model
    limit = float(np.percentile(model.predict(space.sample_codes(1, 2000)), 60))
    config = {"space": "nb201", "objectives": ["max proxy"], "constraints": [f"latency@edgegpu <= {limit:.4f} ms at 90 %"],
              "budget": 12, "seed": 0, "sources": {"proxy": {"counter": "macs", "queried": True}},
              "out": str(tmp_path / "out")}
    run = run_search(config, progress=False)
    problem = run.result.problem
    (c,) = problem.constraints
    assert c.metric == "latency@edgegpu at 90 %" and c.confidence == 0.9 and str(c).endswith("at 90 %")
    _, upper = model.interval(run.result.codes, 0.9)
    assert len(upper) and np.all(upper <= limit * (1 + 1e-6))
    assert np.all(model.predict(run.result.codes) < upper)


@pytest.mark.parametrize("text, message", [
    ("latency@edgegpu <= 5 ms at 150 %", "confidence 150% must be between 0 and 1"),
    ("latency@edgegpu <= 5 ms at 0", "confidence 0 must be between 0 and 1"),
    ("latency@edgegpu <= 5 ms at 1", "confidence 1 must be between 0 and 1"),
    ("latency@edgegpu <= 5 ms at most", "confidence 'most' is not a number"),
])
def test_confidence_outside_zero_one_is_refused(text, message):
    with pytest.raises(NasError, match=message):
        parse_constraint(text, "x")
    assert parse_constraint("latency@edgegpu <= 5 ms at 0.95", "x").confidence == 0.95


def test_confidence_needs_a_source_with_intervals():
    space = load_space("nb201")
    with pytest.raises(NasError, match="a confidence needs a cost source with intervals.*proxy is queried"):
        Problem.build(space, [parse_objective("min macs", "x")], [parse_constraint("proxy <= 5 at 90 %", "x")],
                      {"proxy": {"counter": "macs", "queried": True}})
    exact = Problem.build(space, [parse_objective("min params", "x")], [parse_constraint("macs <= 100M at 90 %", "x")])
    codes = space.sample_codes(0, 5)
    assert np.array_equal(exact.cheap(codes)["macs at 90 %"], exact.cheap(codes)["macs"])  # counters are exact


def test_best_breaks_a_tie_on_the_first_objective_by_the_others():
    """Two archs equally good on the first objective: the one the second objective prefers
    is best (the other is dominated), whatever their query order."""
    from nas.search.runner import SearchResult

    space = load_space("tiny_mbconv")
    problem = Problem.build(space, [parse_objective("min params", "x"), parse_objective("min macs", "x")], [])
    codes = space.sample_codes(3, 1)
    for order in ([0, 1, 2], [1, 0, 2]):
        values = {"params": np.array([5.0, 5.0, 9.0])[order], "macs": np.array([8.0, 3.0, 1.0])[order]}
        result = SearchResult(problem, codes, values)
        assert result.best() == order.index(1)
