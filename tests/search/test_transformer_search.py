"""Every controller and every counter budget on the digits-scale ViT and hybrid spaces
(issue 18), and the differentiable controller's cost expectation over transformer slots:
nothing in search assumes a CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.search.controllers.differentiable import DifferentiableSettings, differentiable_search
from nas.search.ledger import Ledger
from nas.search.objectives import parse_constraint, parse_objective
from nas.search.problem import Problem
from nas.search.runner import search
from nas.space import load_space
from nas.space.counters import network_counts

SPACES = ("tiny_vit", "tiny_hybrid")
COUNTERS = ("params", "peak_activation_bytes", "weight_bytes")


@pytest.mark.parametrize("controller", ["evolution", "random", "optuna-tpe", "optuna-nsga2"])
@pytest.mark.parametrize("name", SPACES)
def test_every_query_controller_searches_the_transformer_spaces_under_counter_budgets(name, controller):
    """Most MACs under params, peak-memory and weight-byte budgets, each halfway between
    the smallest and the largest arch's count (so each binds); the best arch is recounted
    on its built module."""
    space = load_space(name)
    small, large = (network_counts(space.layers(space.extreme(big))) for big in (False, True))
    bounds = {c: (small[c] + large[c]) // 2 for c in COUNTERS}
    problem = Problem.build(space, [parse_objective("max macs", "t")],
                            [parse_constraint(f"{c} <= {b}", "t") for c, b in bounds.items()])
    result = search(problem, controller, {}, 0, 12, Ledger(problem, None, "t", {}), progress=False)
    assert len(result.codes) == 12 and result.feasible.any()
    best = space.decode(result.codes[result.best()])
    counts = network_counts(space.layers(best))
    assert counts["params"] == sum(p.numel() for p in space.build(best).parameters())
    assert all(counts[c] <= b for c, b in bounds.items()) and result.values["macs"][result.best()] == counts["macs"]


def test_differentiable_search_on_the_hybrid_space_lands_on_a_macs_target():
    """Gumbel-sampled paths through conv and encoder slots, the expected MACs over the
    choice probabilities (encoder slots read embed width, heads and MLP ratio at once)."""
    torch.set_num_threads(1)
    space = load_space("tiny_hybrid")
    macs = space.table("macs")(space.sample_codes(0, 2000))
    target = float(np.percentile(macs, 30))
    problem = Problem.build(space, [parse_objective("min params", "t")],
                            [parse_constraint(f"macs <= {target:.0f}", "t")])
    settings = DifferentiableSettings(epochs=2, warmup_epochs=0, steps_per_epoch=3, batch_size=8, arch_lr=0.1,
                                      calib_images=16)
    result = differentiable_search(problem, settings, seed=0, progress=False)
    assert abs(result.error) <= settings.tolerance and 0.0 <= result.accuracy <= 1.0
    assert result.measured == network_counts(space.layers(space.decode(result.codes)))["macs"]
