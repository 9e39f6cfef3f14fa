"""Pruning a LayerSpec network with its weights: units, specs, importance, channel slicing."""
from __future__ import annotations

import pytest
import torch

from nas.errors import ConfigError
from nas.prune.network import (
    Change,
    apply_specs,
    candidate_widths,
    importance,
    keep_channels,
    SUPPORTED_OPS,
    prune,
    sliced_block,
    units,
)
from nas.prune.rounds import minimal, scaled
from nas.space import load_space
from nas.space.builder import build_network
from nas.space.counters import network_counts
from nas.space.registry import space_from_dict

torch.set_num_threads(1)

GROUPED = {
    "name": "grouped", "input": {"channels": 3, "resolution": 8}, "classes": 10, "defaults": {"act": "relu"},
    "stem": [{"op": "conv", "out": 8, "kernel": 3}],
    "stages": [{"depth": 2, "width": 12, "stride": 1, "block": {"kernel": 3, "expand": 2, "groups": 2}}],
    "head": [{"op": "gap"}, {"op": "linear", "out": "classes", "act": "none"}],
}


@pytest.fixture(scope="module")
def net():
    space = load_space("tiny_mbconv")
    arch = space.extreme(True)
    torch.manual_seed(0)
    return space.layers(arch), space.build(arch).eval()


def _x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_units_cover_widths_expansions_squeezes_and_residual_blocks(net) -> None:
    layers, _ = net
    found, frozen = units(layers, 4)
    kinds = {k: sum(u.kind == k for u in found) for k in ("width", "mid", "se", "layer")}
    assert kinds["mid"] == sum(s.op == "mbconv" and s.mid_ch > 0 for s in layers)
    assert kinds["se"] == sum(s.se_ch > 0 for s in layers)
    assert kinds["layer"] == sum(s.residual for s in layers)
    assert kinds["width"] == 6  # stem, four stages, head conv; input and logits are fixed
    assert any("input" in f for f in frozen) and any("logits" in f for f in frozen)


@pytest.mark.parametrize("kind", ["width", "mid", "se"])
def test_keeping_every_channel_leaves_the_function_unchanged(net, kind) -> None:
    layers, model = net
    for u in [u for u in units(layers)[0] if u.kind == kind]:
        change = Change(u, u.width, tuple(range(u.width)))
        new = prune(layers, model, change, apply_specs(layers, change)).eval()
        torch.testing.assert_close(new(_x()), model(_x()))


def test_channels_no_layer_reads_are_pruned_without_changing_the_output(net) -> None:
    """Zero the weights reading some channels: pruning exactly those keeps the logits."""
    layers, model = net
    model = prune(layers, model, Change(units(layers)[0][0], 16, tuple(range(16))), list(layers)).eval()  # a copy
    mid = next(u for u in units(layers)[0] if u.kind == "mid" and layers[u.layer].se_ch)
    project = [m for m in model[mid.layer].body[-1].modules() if isinstance(m, torch.nn.Conv2d)][0]
    dropped = [3, 10, 40]
    with torch.no_grad():
        project.weight[:, dropped] = 0
    score = importance(layers, model, mid, "l1")
    keep = keep_channels(score, mid.width - len(dropped), 1)
    assert not set(dropped) & set(keep)
    change = Change(mid, mid.width - len(dropped), keep)
    new_layers = apply_specs(layers, change)
    new = prune(layers, model, change, new_layers).eval()
    torch.testing.assert_close(new(_x()), model(_x()))
    assert network_counts(new_layers)["params"] == sum(p.numel() for p in new.parameters())


def test_removing_a_residual_block_whose_branch_is_zero_keeps_the_output(net) -> None:
    layers, model = net
    layer = next(u for u in units(layers)[0] if u.kind == "layer")
    model = prune(layers, model, Change(units(layers)[0][0], 16, tuple(range(16))), list(layers)).eval()
    bn = [m for m in model[layer.layer].body[-1].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
    new_layers = apply_specs(layers, Change(layer, 0))
    assert len(new_layers) == len(layers) - 1
    torch.testing.assert_close(prune(layers, model, Change(layer, 0), new_layers).eval()(_x()), model(_x()))


def test_a_width_that_would_make_a_block_residual_is_refused(net) -> None:
    layers, _ = net
    # layer 1 is mbconv 16>24 stride 1: the 24 channels pruned to 16 would add its input to its output
    unit = next(u for u in units(layers)[0] if u.kind == "width" and 1 in u.tensors)
    assert layers[1].in_ch == 16 and apply_specs(layers, Change(unit, 16)) is None
    assert apply_specs(layers, Change(unit, 20))[1].out_ch == 20


def test_pruned_weights_match_the_builders_shapes_everywhere(net) -> None:
    layers, model = net
    for u in units(layers, 8)[0]:
        width = candidate_widths(u, 8)[-1] if u.kind != "layer" else 0
        change = Change(u, width, keep_channels(importance(layers, model, u, "l1"), width, u.group) if width else ())
        new_layers = apply_specs(layers, change)
        if new_layers is None:
            continue
        new = prune(layers, model, change, new_layers)
        built = build_network(new_layers).state_dict()
        assert {k: v.shape for k, v in new.state_dict().items()} == {k: v.shape for k, v in built.items()}


def test_grouped_convs_keep_equal_channels_per_group_and_refuse_a_breaking_multiple() -> None:
    space = space_from_dict(GROUPED, "grouped.yaml")
    arch = space.extreme(True)
    layers, model = space.layers(arch), space.build(arch).eval()
    width = next(u for u in units(layers, 2)[0] if u.kind == "width" and 0 in u.tensors)
    assert width.group == 2 and all(w % 2 == 0 for w in candidate_widths(width, 2))
    keep = keep_channels(importance(layers, model, width, "l1"), 6, 2)
    assert sum(k < 4 for k in keep) == 3  # the stem's 8 channels: 3 from each group of 4
    change = Change(width, 6, keep)
    new = prune(layers, model, change, apply_specs(layers, change)).eval()
    assert new(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="--multiple 3: .* need multiples of 2; use a multiple of 6"):
        units(layers, 3)


def test_minimal_and_uniform_networks_shrink_every_unit(net) -> None:
    layers, model = net
    smallest = minimal(list(layers), 8)
    assert not any(s.residual for s in smallest)
    assert all(s.mid_ch in (0, 8) for s in smallest if s.op == "mbconv")
    half, pruned = scaled(list(layers), 0.5, 4, model)
    assert network_counts(half)["macs"] < network_counts(layers)["macs"] / 2.5
    assert pruned(_x()).shape == (3, 10)
    assert network_counts(half)["params"] == sum(p.numel() for p in pruned.parameters())


def test_uniform_scaling_shrinks_a_width_whose_smallest_step_would_make_a_block_residual(net) -> None:
    """tiny_mbconv's stem (16) feeds a 16 -> 24 block: at one step every width is 4, which
    would make that block 4 -> 4 and residual, so its width takes the next width that is
    not (8), rather than staying at 24 while everything else is scaled to a sixth."""
    layers, _ = net
    by_tensors = {u.tensors: u.width for u in units(layers, 4)[0] if u.kind == "width"}
    for alpha in (0.0, 0.069):
        small = units(scaled(list(layers), alpha, 4)[0], 4)[0]
        widths = {u.tensors: u.width for u in small if u.kind == "width"}
        assert widths.keys() == by_tensors.keys()
        assert all(widths[t] < by_tensors[t] for t in widths), (alpha, widths)
        assert widths[(1, 2)] == 8 and widths[(0,)] == 4, (alpha, widths)
    assert network_counts(scaled(list(layers), 0.0, 4)[0])["macs"] < network_counts(minimal(list(layers), 4))["macs"] * 2


@pytest.mark.parametrize("op", sorted(SUPPORTED_OPS))
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_sliced_op_keeps_its_function_when_every_channel_is_kept(op, precision) -> None:
    from dataclasses import replace

    from nas.space.builder import build_layer
    from tests.space.test_op_conformance import EXAMPLES

    spec = replace(EXAMPLES[op], precision=precision)
    torch.manual_seed(0)
    old = build_layer(spec).eval()
    new = sliced_block(spec, old, spec, None, None).eval()
    x = torch.randn(2, spec.in_ch, spec.in_size, spec.in_size) if op != "linear" else torch.randn(2, spec.in_ch)
    torch.testing.assert_close(new(x), old(x))
