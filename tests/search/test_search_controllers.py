"""Controllers and their parts: Pareto tools, the surrogate, evolution, random search,
Optuna samplers, the differentiable controller, and the NB201 benchmark harness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.errors import NasError
from nas.config import validate
from nas.search.controllers.differentiable import (
    DifferentiableSettings,
    _forward,
    _sample,
    differentiable_search,
)
from nas.search.equivalence import function_codes
from nas.search.ledger import Ledger
from nas.search.objectives import parse_constraint, parse_objective
from nas.search.pareto import (
    crowding,
    dominates,
    front_ranks,
    hypervolume,
    nondominated,
)
from nas.search.problem import Problem, best_value
from nas.search.runner import search
from nas.search.surrogate import GaussianProcess, expected_hvi, expected_improvement
from nas.space import load_space
from tests.conftest import benchmarks_dir
from tests.search_helpers import local_cpu_lut  # noqa: F401  (a fixture)


# ----------------------------------------------------------------------------- Pareto tools
@pytest.mark.parametrize("n", [300, 2500])
def test_nondominated_matches_the_definition(n):
    rng = np.random.default_rng(n)
    points = rng.integers(0, 30, (n, 2)).astype(float)
    points = np.vstack([points, points[:3]])  # duplicates do not dominate each other
    assert np.array_equal(nondominated(points), ~dominates(points, points).any(axis=0))
    points3 = rng.random((n // 10, 3))
    assert np.array_equal(nondominated(points3), ~dominates(points3, points3).any(axis=0))


def test_front_ranks_and_crowding():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 8, (200, 2)).astype(float)
    ranks = front_ranks(points)
    beats = dominates(points, points)
    assert all(ranks[i] < ranks[j] for i, j in zip(*np.nonzero(beats)))
    assert np.array_equal(ranks == 0, nondominated(points))
    violation = np.where(np.arange(200) % 4 == 0, 1.0 + np.arange(200) % 3, 0.0)[:, None]
    ranks = front_ranks(points, violation)
    assert ranks[violation[:, 0] > 0].min() > ranks[violation[:, 0] == 0].max()  # feasible first
    assert ranks[np.arange(200) % 4 == 0].max() - ranks[np.arange(200) % 4 == 0].min() == 2  # by violation
    d = crowding(np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]]))
    assert np.isinf(d[[0, 3]]).all() and np.allclose(d[1:3], [4 / 3, 4 / 3])


def test_hypervolume_of_a_staircase():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.5, 3.5], [5.0, 0.0]])
    assert hypervolume(points, np.array([4.0, 4.0])) == pytest.approx(1 * 1 + 1 * 2 + 1 * 3)
    assert hypervolume(np.array([[5.0, 5.0]]), np.array([4.0, 4.0])) == 0.0


# ----------------------------------------------------------------------------- surrogate
def test_expected_improvement_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean, std, best = np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.5, 2.0]), 0.3
    draws = mean + std * rng.standard_normal((400_000, 3))
    assert np.allclose(expected_improvement(mean, std, best), np.maximum(best - draws, 0).mean(0), atol=5e-3)
    assert np.allclose(expected_improvement(mean, np.zeros(3), best), np.maximum(best - mean, 0))


@pytest.mark.parametrize("k", [1, 2])
def test_expected_hvi_without_uncertainty_is_the_exact_improvement(k):
    rng = np.random.default_rng(k)
    points = rng.random((40, 1 + k))
    front = points[nondominated(points)]
    ref = np.full(1 + k, 1.2)
    candidates = rng.random((30, 1 + k))
    got = expected_hvi(candidates[:, 0], np.zeros(30), candidates[:, 1:], front, ref)
    base = hypervolume(front, ref)
    want = [hypervolume(np.vstack([front, c]), ref) - base for c in candidates]
    assert np.allclose(got, want)


def test_gaussian_process_interpolates_and_knows_its_uncertainty():
    x = np.linspace(0, 1, 25)[:, None]
    y = np.sin(6 * x[:, 0])
    gp = GaussianProcess().fit(x, y)
    mean, std = gp.predict(x)
    assert np.abs(mean - y).max() < 0.05
    _, far = gp.predict(np.array([[3.0]]))
    assert far[0] > 5 * std.mean()


def test_nb201_function_codes_drop_edges_the_output_never_sees():
    space = load_space("nb201")

    def canon(text):
        return space.to_string(space.decode(function_codes(space, space.encode(space.from_string(text))[None])[0]))

    # node 2 gets no input: the skip from it carries nothing
    assert canon("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|") == \
        "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    # node 2 feeds nothing: its inputs are dead
    assert canon("|skip_connect~0|+|avg_pool_3x3~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|") == \
        "|skip_connect~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|"
    full = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert canon(full) == full


# ----------------------------------------------------------------------------- query controllers
def cheap_problem(bound: str = "params >= 700K") -> Problem:
    """NB201, everything cheap: fewest MACs among archs with at least `bound` params."""
    space = load_space("nb201")
    return Problem.build(space, [parse_objective("min macs", "t")], [parse_constraint(bound, "t")])


def run(problem, controller, seed, budget, settings=None):
    return search(problem, controller, settings or {}, seed, budget, Ledger(problem, None, "t", {}), progress=False)


def test_evolution_finds_the_exact_optimum_of_a_cheap_problem():
    problem = cheap_problem()
    everything = np.vstack([problem.space.encode(a) for a in problem.space.enumerate()])
    values = problem.cheap(everything)
    optimum = values["macs"][values["params"] >= 700_000].min()
    found = run(problem, "evolution", 0, 40)
    assert found.values["macs"][found.best()] == optimum
    assert all(found.feasible)  # infeasible children are never proposed


def test_evolution_beats_random_search_on_a_large_space():
    """tiny_mbconv (6.5e10 archs): fewest MACs with at least 360K params (the top 10 %)."""
    problem = Problem.build(load_space("tiny_mbconv"), [parse_objective("min macs", "t")],
                            [parse_constraint("params >= 360K", "t")])
    for seed in (0, 1):
        evolved, rand = run(problem, "evolution", seed, 60), run(problem, "random", seed, 60)
        assert evolved.feasible.all() and rand.feasible.all()
        assert evolved.values["macs"][evolved.best()] < rand.values["macs"][rand.best()]


def test_same_seed_same_search_other_seed_other_search():
    problem = Problem.build(load_space("nb201"), [parse_objective("max proxy", "t")],
                            [parse_constraint("params <= 600K", "t")], {"proxy": {"counter": "macs", "queried": True}})
    a, b, c = (run(problem, "evolution", s, 25) for s in (3, 3, 4))
    assert np.array_equal(a.codes, b.codes) and not np.array_equal(a.codes, c.codes)
    t1, t2 = (run(problem, "optuna-tpe", 3, 15) for _ in range(2))
    assert np.array_equal(t1.codes, t2.codes)


def test_optuna_follows_a_known_network_with_a_fresh_neighbour():
    """A converged sampler proposes queried networks again and again; each such trial is
    answered from the study and the next trial is a network nobody has queried."""
    problem = Problem.build(load_space("nb201"), [parse_objective("max proxy", "t"), parse_objective("min params", "t")],
                            [], {"proxy": {"counter": "macs", "queried": True}})
    ledger = Ledger(problem, None, "t", {})
    result = search(problem, "optuna-tpe", {}, 0, 300, ledger, progress=False)
    kinds = ["known" if t.user_attrs.get("skipped") == "known" else "query" for t in ledger.study.get_trials()]
    assert result.stats["known"] > 20 and result.stats["neighbours"] == result.stats["known"]
    assert all(after == "query" for before, after in zip(kinds, kinds[1:]) if before == "known")
    assert kinds.count("query") == 300 and len(np.unique(result.codes, axis=0)) == 300


@pytest.mark.parametrize("controller", ["evolution", "random", "optuna-tpe", "optuna-nsga2"])
def test_a_problem_with_only_queried_metrics_runs(controller):
    """No cheap metric at all (accuracy only, no budget): every arch passes the cheap filter."""
    problem = Problem.build(load_space("nb201"), [parse_objective("max proxy", "t")], [],
                            {"proxy": {"counter": "macs", "queried": True}})
    result = run(problem, controller, 0, 12)
    assert len(result.codes) == 12 and result.feasible.all()


def test_multi_objective_evolution_returns_a_pareto_front():
    problem = Problem.build(load_space("nb201"), [parse_objective("max proxy", "t"), parse_objective("min params", "t")],
                            [], {"proxy": {"counter": "macs", "queried": True}})
    result = run(problem, "evolution", 0, 40)
    front = result.front()
    points = problem.objective_matrix(result.values)
    assert len(front) >= 3
    assert not dominates(points, points[front]).any()
    assert result.hypervolume(np.array([0.0, points[:, 1].max()])) > 0


def test_controller_settings_are_checked():
    problem = cheap_problem()
    with pytest.raises(NasError, match="unknown setting 'pop'"):
        run(problem, "evolution", 0, 5, {"pop": 3})
    with pytest.raises(NasError, match="surrogate must be gp or none"):
        run(problem, "evolution", 0, 5, {"surrogate": "forest"})
    with pytest.raises(NasError, match="unknown setting 'popsize' .*population_size"):
        run(problem, "optuna-nsga2", 0, 5, {"popsize": 3})
    with pytest.raises(NasError, match="unknown controller"):
        run(problem, "annealing", 0, 5)


def test_a_tiny_feasible_set_ends_the_search_early():
    problem = cheap_problem("params >= 1.5M")  # only the largest few archs qualify
    result = run(problem, "evolution", 0, 50)
    value, _ = best_value(problem.space, problem.metrics["params"], minimize=False)
    assert len(result.codes) < 50 and result.stats["exhausted"] == 1
    assert result.values["params"].max() == value


def test_a_registered_controller_is_one_class_and_runs_through_the_config(tmp_path):
    """Adding a controller: one class (its settings model and `ask`) and `register`. It is
    then a valid `controller:` of a search config, with its settings checked, and runs
    through run_search like the built-ins (seeded, recorded in the study)."""
    from typing import Literal

    from pydantic import Field

    from nas.search.config import config_from_dict
    from nas.search.controllers import controller_names, register, unregister
    from nas.search.controllers.base import AskTellController, ControllerSettings
    from nas.search.run import run_search

    class CheapestSettings(ControllerSettings):
        name: Literal["cheapest"] = "cheapest"
        pool: int = Field(64, ge=1)

    class Cheapest(AskTellController):
        """The fewest-params archs among `pool` random feasible ones."""

        name = "cheapest"
        Settings = CheapestSettings

        def ask(self, n):
            codes, cheap = self.random_candidates(self.settings.pool)
            return codes[np.argsort(cheap["params"], kind="stable")[:n]]

    config = {"space": "nb201", "objectives": ["max proxy"], "constraints": ["params <= 600K"], "budget": 12,
              "sources": {"proxy": {"counter": "macs", "queried": True}}, "controller": {"name": "cheapest", "pool": 32},
              "out": str(tmp_path / "a")}
    register(Cheapest)
    try:
        assert "cheapest" in controller_names()
        run = run_search(config, progress=False)
        assert run.summary["controller"] == "cheapest" and run.summary["queries"] == 12
        assert (tmp_path / "a" / "archs.csv").is_file() and run.result.feasible.all()
        again = run_search({**config, "out": str(tmp_path / "b")}, progress=False)
        assert np.array_equal(run.result.codes, again.result.codes)
        with pytest.raises(NasError, match="unknown setting 'pol' .*did you mean 'pool'"):
            config_from_dict({**config, "controller": {"name": "cheapest", "pol": 3}})
    finally:
        unregister("cheapest")
    with pytest.raises(NasError, match="unknown controller 'cheapest'"):
        config_from_dict(config)


# ----------------------------------------------------------------------------- differentiable
def tiny_problem(target: str = "params <= 150K") -> Problem:
    space = load_space("tiny_mbconv")
    return Problem.build(space, [parse_objective("min params", "t")], [parse_constraint(target, "t")])


def check_settings(settings: dict) -> DifferentiableSettings:
    return validate(DifferentiableSettings, settings, "controller differentiable")


def test_differentiable_settings_and_targets_are_checked():
    with pytest.raises(NasError, match="penalty must be one of"):
        check_settings({"penalty": "square"})
    with pytest.raises(NasError, match="warmup_epochs"):
        check_settings({"epochs": 2, "warmup_epochs": 2})
    with pytest.raises(NasError, match="unknown setting 'tau'"):
        check_settings({"tau": 1})
    with pytest.raises(NasError, match="steps_per_epoch must be a positive integer"):
        check_settings({"steps_per_epoch": 0})
    with pytest.raises(NasError, match="target 'macs' is not a constrained metric"):
        differentiable_search(tiny_problem(), DifferentiableSettings(target="macs"), progress=False)
    space = load_space("nb201")
    acc = Problem.build(space, [parse_objective("min params", "t")], [parse_constraint("proxy <= 5", "t")],
                        {"proxy": {"table": str(benchmarks_dir() / "nb201" / "cifar10_val_acc.csv"),
                                   "column": "cifar10_val_acc"}}) if (benchmarks_dir() / "nb201").is_dir() else None
    if acc is not None:
        with pytest.raises(NasError, match="no differentiable expectation"):
            differentiable_search(acc, DifferentiableSettings(), progress=False)


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gradients_reach_every_decision_of_the_sampled_path(one_thread):
    from nas.supernet import Supernet

    space = load_space("tiny_mbconv")
    net = Supernet(space, seed=0)
    alphas = [torch.zeros(int(r), requires_grad=True) for r in space.radices]
    codes, hard = _sample(alphas, 1.0, torch.Generator().manual_seed(0))
    assert [float(h[c].detach()) for h, c in zip(hard, codes)] == [1.0] * len(codes)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # not the global stream: other tests move it
    logits = _forward(net, x, codes, hard)
    logits.square().mean().backward()
    active = space.active_mask(codes[None])[0]
    assert not active.all()  # this sample skips layers (seeded), whose choices must get no gradient
    for a, shapes in zip(alphas, active):
        assert (a.grad is not None and float(a.grad.abs().sum()) > 0) if shapes else a.grad is None


def test_differentiable_search_lands_on_its_latency_target(local_cpu_lut, one_thread):  # noqa: F811
    """tiny_mbconv, a local-cpu LUT: the target is the 30th percentile of random archs' LUT
    latency, which the untrained (uniform) distribution misses by more than 10 %; after a
    short joint training both the distribution's expected latency and the derived arch's
    LUT latency are within 10 % of it."""
    space = load_space("tiny_mbconv")
    sources = {"latency@local-cpu": {"lut": str(local_cpu_lut)}}
    lut = Problem.build(space, [parse_objective("min latency@local-cpu", "t")], [], sources).metrics["latency@local-cpu"]
    target = float(np.percentile(lut.model.predict(space.sample_codes(0, 5000)), 30))
    uniform = [torch.full((int(r),), 1.0 / int(r), dtype=torch.float64) for r in space.radices]
    assert float(lut.model.expected(uniform)) > 1.1 * target
    problem = Problem.build(space, [parse_objective("min latency@local-cpu", "t")],
                            [parse_constraint(f"latency@local-cpu <= {target:.6f} ms", "t")], sources)
    settings = {"epochs": 3, "warmup_epochs": 0, "steps_per_epoch": 4, "batch_size": 8, "arch_lr": 0.1,
                "calib_images": 32}
    result = differentiable_search(problem, DifferentiableSettings(**settings), seed=0, progress=False)
    assert abs(result.expected / result.target - 1) <= 0.10
    assert abs(result.error) <= 0.10
    assert result.measured == pytest.approx(float(lut.model.predict(result.codes[None, :])[0]))
    assert len(result.history) == 3 and 0.0 <= result.accuracy <= 1.0


# ----------------------------------------------------------------------------- benchmark harness
def nb201_tables():
    folder = benchmarks_dir() / "nb201"
    if not (folder / "cifar10_val_acc.csv").is_file():
        pytest.skip(f"benchmark tables not found in {folder} (set HWNAS_BENCHMARKS)")
    return folder


@pytest.mark.slow
def test_bench_search_command_reports_regret_and_hypervolume_ratio(capsys):
    """`hwnas bench search --json` on the real NB201 tables: the optimum under the budget and
    the per-controller keys, checked against the tables read here with csv."""
    import csv
    import json

    from nas.cli import main

    folder = nb201_tables()
    with open(folder / "cifar10_val_acc.csv") as fh:
        acc = {r["arch_str"]: float(r["cifar10_val_acc"]) for r in csv.DictReader(fh)}
    with open(folder / "hwnasbench_cifar10.csv") as fh:
        cost = {r["arch_str"]: float(r["fpga_latency"]) for r in csv.DictReader(fh)}
    budget = float(np.percentile(list(cost.values()), 30))
    argv = ["bench", "search", "--acc-table", str(folder / "cifar10_val_acc.csv"), "--cost-table",
            str(folder / "hwnasbench_cifar10.csv"), "--cost-column", "fpga_latency", "--queries", "15", "--seeds", "1",
            "--controllers", "evolution,random", "--json", "--quiet"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    column = report["columns"]["fpga_latency"]
    assert column["budget"] == pytest.approx(budget)
    assert column["optimum"] == max(a for s, a in acc.items() if cost[s] <= budget)
    for name in ("evolution", "random"):
        row = report["summary"][name]
        assert 0 <= row["regret_median"] <= column["optimum"] and 0 < row["hv_ratio_median"] <= 1


@pytest.mark.slow
def test_bench_constrained_task_on_one_device():
    from nas.search.bench import bench_search

    folder = nb201_tables()
    report = bench_search(folder / "cifar10_val_acc.csv", [folder / "hwnasbench_cifar10.csv"], ["pixel3_latency"],
                          seeds=3, controllers=["evolution", "random"], tasks=["constrained"], progress=False)
    rows = report["columns"]["pixel3_latency"]["controllers"]
    assert rows["evolution"]["regret_median"] <= 0.2
    assert rows["evolution"]["regret_median"] < rows["random"]["regret_median"]


@pytest.mark.slow
def test_bench_front_task_on_one_device():
    from nas.search.bench import bench_search

    folder = nb201_tables()
    report = bench_search(folder / "cifar10_val_acc.csv", [folder / "help_latency.csv"], ["gold_6226_latency"],
                          seeds=2, controllers=["evolution"], tasks=["front"], progress=False)
    assert report["summary"]["evolution"]["hv_ratio_median"] >= 0.99


@pytest.mark.slow
def test_differentiable_search_resumes_after_a_kill(tmp_path):
    """Killed after its first epoch's checkpoint, the rerun ends where an uninterrupted
    search does: the same derived arch and history length, and the same distribution up
    to float noise (the checkpoint is written by another process, whose CPU kernels may
    round differently in the last bits; resuming within one process is bit-exact)."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from nas.search.run import run_search

    config = {"space": "tiny_mbconv", "objectives": ["max accuracy"], "constraints": ["params <= 150K"],
              "controller": {"name": "differentiable", "epochs": 3, "warmup_epochs": 1, "batch_size": 64,
                             "steps_per_epoch": 10}, "seed": 0}
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(cfg), "--out", str(tmp_path / "a"), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (tmp_path / "a" / "differentiable.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_search(config | {"out": str(tmp_path / "a")}, progress=False)
    reference = run_search(config | {"out": str(tmp_path / "b")}, progress=False)
    for a, b in zip(resumed.summary["probs"], reference.summary["probs"]):
        assert np.allclose(a, b, atol=2e-3)
    assert resumed.summary["arch"] == reference.summary["arch"]
    assert [h["epoch"] for h in resumed.summary["history"]] == [h["epoch"] for h in reference.summary["history"]]
