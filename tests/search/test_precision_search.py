"""Search over architecture and precision: every controller on tiny_mbconv_int8 with
latency, energy and memory budgets priced by a real int8 LUT, and a LUT of the wrong
precision refused in one line through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nas.cli import main
from nas.hardware.devices import load_device
from nas.hardware.profiling import build_lut
from nas.search.controllers import controller_names
from nas.search.objectives import parse_constraint, parse_objective
from nas.search.problem import Problem
from nas.space import load_space
from tests.hw_helpers import FAST
from tests.search_helpers import local_cpu_lut  # noqa: F401  (a fixture)

SPACE = "tiny_mbconv_int8"


@pytest.fixture(scope="module")
def int8_lut(tmp_path_factory) -> Path:
    """A real LUT of tiny_mbconv_int8 on this machine (fast protocol, no calibration)."""
    out = tmp_path_factory.mktemp("lut8") / f"{SPACE}.csv"
    build_lut(load_space(SPACE), load_device("local-cpu"), out=out, protocol=FAST, calibrate=0)
    return out


def problem(lut: Path, budget_ms: float) -> Problem:
    """max a cheap stand-in for accuracy (MACs, queried) under latency, energy and memory budgets."""
    space = load_space(SPACE)
    sources = {"latency@local-cpu": {"lut": str(lut)}, "proxy": {"counter": "macs", "queried": True}}
    constraints = [parse_constraint(c, "t") for c in (f"latency@local-cpu <= {budget_ms:.6f} ms",
                                                      "energy@local-cpu <= 10 mJ", "peak_memory <= 1 MiB")]
    return Problem.build(space, [parse_objective("max proxy", "t")], constraints, sources)


def test_the_int8_lut_prices_int8_layers_below_their_float_selves(int8_lut) -> None:
    space = load_space(SPACE)
    cost = problem(int8_lut, 1.0).metrics["latency@local-cpu"].model
    precisions = [d.name for d in space.decisions if d.name.endswith("precision")]
    base = space.decode_batch(space.sample_codes(0, 20))
    fp32 = [space.arch({**dict(a), **{p: "fp32" for p in precisions}}) for a in base]
    int8 = [space.arch({**dict(a), **{p: "int8" for p in precisions}, "stem0.precision": "fp32"}) for a in base]
    assert np.median(cost.predict(int8) / cost.predict(fp32)) < 0.95  # the research note: ~0.8 on whole nets


@pytest.mark.parametrize("controller", [c for c in controller_names() if c != "differentiable"])
def test_every_controller_searches_precision_under_budgets(int8_lut, controller) -> None:
    from nas.search.ledger import Ledger
    from nas.search.runner import search

    space = load_space(SPACE)
    lut_cost = problem(int8_lut, 1.0).metrics["latency@local-cpu"].model
    budget = float(np.percentile(lut_cost.predict(space.sample_codes(1, 400)), 40))
    prob = problem(int8_lut, budget)
    result = search(prob, controller, {}, 0, 24, Ledger(prob, None, "t", {}), progress=False)
    assert len(result.codes) == 24 and result.feasible.any()
    archs = space.decode_batch(result.codes)
    layers = [space.layers(a) for a in archs]
    assert any(s.precision == "int8" for net in layers for s in net)  # precision is searched
    feasible = result.codes[result.feasible]
    assert np.all(lut_cost.predict(feasible) <= budget + 1e-9)  # the precision-aware cost is the budget's


def test_differentiable_search_moves_precision_through_the_luts_expected(int8_lut) -> None:
    """The expected latency of the relaxed distribution has a gradient on every precision decision."""
    space = load_space(SPACE)
    cost = problem(int8_lut, 1.0).metrics["latency@local-cpu"].model
    probs = [torch.full((int(r),), 1.0 / int(r), dtype=torch.float64, requires_grad=True) for r in space.radices]
    cost.expected(probs).backward()
    for d, p in zip(space.decisions, probs):
        if d.name.endswith("precision"):
            assert p.grad is not None and float(p.grad[1] - p.grad[0]) != 0.0, d.name


@pytest.mark.slow
def test_differentiable_controller_runs_on_the_int8_space(int8_lut) -> None:
    from nas.search.controllers.differentiable import DifferentiableSettings, differentiable_search

    torch.set_num_threads(1)
    space = load_space(SPACE)
    sources = {"latency@local-cpu": {"lut": str(int8_lut)}}
    cost = Problem.build(space, [parse_objective("min latency@local-cpu", "t")], [], sources).metrics["latency@local-cpu"]
    target = float(np.percentile(cost.model.predict(space.sample_codes(0, 2000)), 30))
    prob = Problem.build(space, [parse_objective("min latency@local-cpu", "t")],
                         [parse_constraint(f"latency@local-cpu <= {target:.6f} ms", "t")], sources)
    settings = {"epochs": 2, "warmup_epochs": 0, "steps_per_epoch": 3, "batch_size": 8, "arch_lr": 0.1, "calib_images": 32}
    result = differentiable_search(prob, DifferentiableSettings(**settings), seed=0, progress=False)
    assert result.measured == pytest.approx(float(cost.model.predict(result.codes[None, :])[0]))


def _search_cli(tmp_path: Path, space: str, lut: Path, capsys) -> tuple[int, str]:
    config = {"space": space, "objectives": ["min latency@local-cpu"], "controller": "random", "budget": 4,
              "sources": {"latency@local-cpu": {"lut": str(lut)}}, "out": str(tmp_path / "out")}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["search", str(path), "--quiet"])
    return code, capsys.readouterr().err


def test_an_int8_lut_for_a_float_search_and_a_float_lut_for_a_precision_search_are_one_line_errors(
        int8_lut, local_cpu_lut, tmp_path, capsys) -> None:  # noqa: F811
    code, err = _search_cli(tmp_path, "tiny_mbconv", int8_lut, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "int8 LUT for a float-only search" in err and "tiny_mbconv" in err
    code, err = _search_cli(tmp_path, SPACE, local_cpu_lut, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "float-only LUT cannot price a search over precision" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_precision_effects_are_paired_flips_of_each_decision_on_the_front(int8_lut) -> None:
    from nas.search.ledger import Ledger
    from nas.search.precision import precision_decisions, precision_effects
    from nas.search.runner import search

    space = load_space(SPACE)
    sources = {"latency@local-cpu": {"lut": str(int8_lut)}, "proxy": {"counter": "macs", "queried": True}}
    prob = Problem.build(space, [parse_objective("max proxy", "t"), parse_objective("min latency@local-cpu", "t")],
                         [], sources)
    result = search(prob, "evolution", {}, 0, 30, Ledger(prob, None, "t", {}), progress=False)
    effects = precision_effects(result, max_archs=4)
    decisions = precision_decisions(space)
    assert decisions == [d.name for d in space.decisions if d.name.endswith("precision")] and len(decisions) == 8
    assert [e["decision"] for e in effects["effects"]] == decisions
    assert 2 <= len(effects["front"]) <= 4 and effects["queries"] == sum(e["archs"] for e in effects["effects"])
    # recompute one decision's latency effect by hand: LUT(int8) - LUT(fp32) per front arch, median
    lut = prob.metrics["latency@local-cpu"].model
    front = [space.decode(result.codes[i]) for i in result.front()]
    by_id = {a.arch_id: a for a in front}
    archs = [by_id[r["arch_id"]] for r in effects["front"]]
    for e in effects["effects"]:
        d = e["decision"]
        flips = [(space.arch({**dict(a), d: "int8"}), space.arch({**dict(a), d: "fp32"})) for a in archs]
        flips = [(i, f) for i, f in flips if space.layers(i) != space.layers(f)]
        assert e["archs"] == len(flips)
        want = np.median([lut.predict([i])[0] - lut.predict([f])[0] for i, f in flips])
        assert e["int8_minus_fp32"]["latency@local-cpu"] == pytest.approx(want, rel=1e-6, abs=1e-9)
        assert e["int8_minus_fp32"]["proxy"] == 0.0  # MACs do not depend on precision
    # the front's int8 layers are the ones the decisions make int8
    row = effects["front"][0]
    layers = space.layers(archs[0])
    assert row["int8_layers"] == [i for i, s in enumerate(layers) if s.precision == "int8"]
    assert set(row["decisions"]) == set(decisions)
