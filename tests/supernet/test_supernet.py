"""Supernets: extraction into the builder's own modules, elastic kernels, channel sorting, sampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NasError
from nas.space import load_space
from nas.space.builder import build_layer
from nas.space.cell import NB201Space
from nas.supernet.elastic import ConvUnit
from nas.supernet.sampling import SubnetSampler, dimension
from nas.supernet.sorting import sort_channels
from nas.supernet.supernet import Supernet
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)


RESEARCH_SPACES = ("ofa_mbv3", "proxyless", "fbnet", "fbnet_cifar")


def perturbed(space, seed: int = 0) -> Supernet:
    """A supernet whose every weight, kernel transformation and BN statistic is off its
    initial value, so equivalence cannot hold by accident (identity transforms, unit stats)."""
    torch.manual_seed(seed)
    net = Supernet(space, seed=seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return net.eval()


def assert_extraction_matches(space, net: Supernet, archs, batch: int = 2) -> None:
    for arch in archs:
        r = space.resolution(arch)
        x = torch.randn(batch, space.in_channels, r, r)
        net.set_active(arch)
        sub = net.extract(arch)
        reference = space.build(arch)
        assert [type(m) for m in sub.modules()] == [type(m) for m in reference.modules()]
        assert sub.state_dict().keys() == reference.state_dict().keys()
        assert not sub.training
        with torch.no_grad():
            diff = (net(x) - sub(x)).abs().max().item()
        assert diff <= 1e-5, f"{space.name} arch {arch.arch_id}: max abs diff {diff}"


@pytest.mark.parametrize("name", ["tiny_mbconv", "nb201"])
def test_extraction_is_numerically_identical_for_50_random_archs(name):
    space = load_space(name)
    net = perturbed(space)
    archs = [space.extreme(True), space.extreme(False)] + [space.sample(i) for i in range(48)]
    assert_extraction_matches(space, net, archs)


@pytest.mark.parametrize("name", RESEARCH_SPACES)
def test_extraction_at_real_resolution_on_research_spaces(name):
    space = load_space(name)
    archs = [space.extreme(False)] + [space.sample(i) for i in range(4)]  # 50 each in the slow test below
    assert_extraction_matches(space, perturbed(space), archs, batch=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", RESEARCH_SPACES)
def test_extraction_for_50_random_archs_on_research_spaces(name):
    space = load_space(name)
    assert_extraction_matches(space, perturbed(space), [space.sample(100 + i) for i in range(50)], batch=1)


def test_extracted_weights_are_copies_and_train_mode_matches_too():
    space = load_space("tiny_mbconv")
    net = perturbed(space).train()
    arch = space.sample(3)
    net.set_active(arch)
    sub = net.extract(arch)
    assert sub.training
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(net(x), sub(x), atol=1e-5)  # batch statistics in both
    with torch.no_grad():
        for p in sub.parameters():
            p.zero_()
    net.eval()
    assert net(x).abs().sum() > 0


def test_gradients_reach_only_the_shared_weights_a_subnet_uses():
    space = load_space("tiny_mbconv")
    net = Supernet(space)
    small = space.extreme(False)
    net.set_active(small)
    F.cross_entropy(net(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    unit = net.blocks[1].families["mbconv-g1-direct"]  # s1.0: expand 1, no expansion conv
    assert unit.project.weight.grad is not None
    rows, cols = unit.project.weight.grad.nonzero(as_tuple=True)[:2]
    spec = net._specs[1]
    assert rows.max() < spec.out_ch and cols.max() < spec.in_ch  # only the leading channels
    assert net.blocks[2].families["mbconv-g1-expand"].project.weight.grad is None  # s1.1 is inactive at depth 1


def test_smaller_kernels_are_transformed_centres_of_larger_ones():
    unit = ConvUnit(4, 1, [3, 5, 7])
    with torch.no_grad():
        unit.weight.normal_()
        for m in unit.kernel_transforms.values():
            m.add_(0.1 * torch.randn_like(m))
    w7 = unit.weight
    w5 = (w7[:, :, 1:6, 1:6].reshape(-1, 25) @ unit.kernel_transforms["7to5"]).reshape(4, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(-1, 9) @ unit.kernel_transforms["5to3"]).reshape(4, 1, 3, 3)
    assert torch.equal(unit.kernel_weight(4, 1, 7), w7)
    assert torch.allclose(unit.kernel_weight(4, 1, 5), w5, atol=1e-5)
    assert torch.allclose(unit.kernel_weight(2, 1, 3), w3[:2], atol=1e-5)
    identity = ConvUnit(2, 1, [3, 5])
    with torch.no_grad():
        identity.weight.normal_()  # a bare unit's weight is torch.empty (the supernet initialises it): NaN garbage would fail equal
    assert torch.equal(identity.kernel_weight(2, 1, 3), identity.weight[:, :, 1:4, 1:4])  # at start: plain centre


def test_set_active_rejects_archs_of_other_spaces():
    net = Supernet(load_space("tiny_mbconv"))
    with pytest.raises(NasError, match="not 'tiny_mbconv'"):
        net.set_active(load_space("nb201").sample(0))


def test_nb201_one_shot_cell_holds_every_op_on_every_edge():
    space = NB201Space({"channels": 4, "cells_per_stage": 2, "resolution": 16})
    net = Supernet(space)
    cells = [b for b in net.blocks if "nb201_cell" in b.families]
    assert len(cells) == 6  # own weights per cell position
    units = cells[0].families["nb201_cell"].edges
    assert len(units) == 6 and all(set(u) == {"nor_conv_1x1", "nor_conv_3x3"} for u in units)
    assert units[0]["nor_conv_1x1"].weight is not cells[1].families["nb201_cell"].edges[0]["nor_conv_1x1"].weight
    arch = space.from_string("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
    assert_extraction_matches(space, perturbed(space), [arch, space.extreme(False)])


# ----------------------------------------------------------------------------- channel sorting
def _largest_output(net: Supernet, x: torch.Tensor) -> torch.Tensor:
    net.set_active(net.space.extreme(True))
    with torch.no_grad():
        return net.eval()(x)


def test_sorting_keeps_the_largest_network_and_puts_important_channels_first():
    space = load_space("tiny_mbconv")
    net = perturbed(space)
    x = torch.randn(3, 3, 32, 32)
    small = space.extreme(False)
    before, before_small = _largest_output(net, x), None
    net.set_active(small)
    with torch.no_grad():
        before_small = net(x)
    counts = sort_channels(net)
    assert counts == {"blocks": 10, "widths": 3}  # s1.width feeds a residual from the stem: left alone
    assert torch.allclose(_largest_output(net, x), before, atol=1e-5)
    net.set_active(small)
    with torch.no_grad():
        assert not torch.allclose(net(x), before_small, atol=1e-3)
    for block in net.blocks:
        for family in block.families.values():
            if getattr(family, "expand", None) is not None:
                importance = family.project.in_importance()
                assert torch.all(importance[:-1] >= importance[1:])


def test_sorting_moves_optimizer_momentum_with_the_weights():
    """SGD with momentum commutes with a channel permutation only if the momentum moves too."""
    space = load_space("tiny_mbconv")
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    nets = [perturbed(space, seed=1) for _ in range(2)]
    opts = [torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9) for n in nets]

    def sgd_step(net, opt):
        net.train().set_active(space.extreme(True))
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for net, opt in zip(nets, opts):
        sgd_step(net, opt)
    sort_channels(nets[0], opts[0])
    for net, opt in zip(nets, opts):
        sgd_step(net, opt)
    probe = torch.randn(2, 3, 32, 32)
    assert torch.allclose(_largest_output(nets[0], probe), _largest_output(nets[1], probe), atol=1e-4)


# ----------------------------------------------------------------------------- sampling
def test_decision_dimensions_follow_their_names():
    assert [dimension(n) for n in ("s2.0.kernel", "s3.depth", "s2.1.expand", "s4.width", "resolution",
                                   "s3.0.se", "s2.op", "1<-0")] == \
        ["kernel", "depth", "expand", "expand", "resolution", "other", "other", "other"]


def test_sandwich_rule_trains_largest_smallest_and_random_subnets():
    space = load_space("tiny_mbconv")
    sampler = SubnetSampler(space, "sandwich", 2)
    archs = sampler.step(0, np.random.default_rng(0))
    assert archs[:2] == [space.extreme(True), space.extreme(False)] and len(archs) == 4
    assert archs[2] != archs[3]
    assert sampler.step(5, np.random.default_rng(0)) == archs
    uniform = SubnetSampler(space, "uniform", 3).step(0, np.random.default_rng(1))
    assert len(uniform) == 3 and space.extreme(True) not in uniform


def test_progressive_shrinking_frees_kernel_then_depth_then_everything():
    space = load_space("tiny_mbconv")
    phases = [["kernel"], ["kernel", "depth"], ["kernel", "depth", "expand"]]
    sampler = SubnetSampler(space, "sandwich", 8, phases, [1, 2, 1])
    largest = space.extreme(True)
    assert [sampler.phase(e) for e in range(4)] == [0, 1, 1, 2]
    assert [sampler.phase_start(e) for e in range(4)] == [False, True, False, True]
    for epoch, free in ((0, {"kernel"}), (1, {"kernel", "depth"}), (3, {"kernel", "depth", "expand", "other"})):
        archs = sampler.step(epoch, np.random.default_rng(epoch))
        changed = {dimension(d) for a in archs for d in a if a[d] != largest[d]}
        assert changed == free
    assert sampler.smallest(0)["s2.0.kernel"] == 3 and sampler.smallest(0)["s2.depth"] == 3
    assert sampler.smallest(3) == space.extreme(False)


def test_sampler_rejects_unknown_rules_and_dimensions():
    space = load_space("tiny_mbconv")
    with pytest.raises(NasError, match="unknown sampling rule"):
        SubnetSampler(space, "greedy", 2)
    with pytest.raises(NasError, match="unknown dimension 'kernal'"):
        SubnetSampler(space, "sandwich", 2, [["kernal"]], [1])


def test_slot_templates_are_the_builders_modules():
    space = load_space("tiny_mbconv")
    net = Supernet(space)
    spec = space.layers(space.extreme(False))[1]
    template, names = net.blocks[1]._template(spec)
    real = build_layer(spec)
    assert type(template) is type(real)
    assert names == [n for n, _ in real.named_parameters()] + [n for n, _ in real.named_buffers()]
    assert all(p.device.type == "meta" for p in template.parameters())
    assert isinstance(net.extract(space.extreme(False)), nn.Sequential)
