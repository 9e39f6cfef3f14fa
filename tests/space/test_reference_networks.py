"""Published reference networks written as one-architecture chain spaces.

Each file in search_spaces/reference/ is a network from a paper (MobileNetV2/V3,
ProxylessNAS, FBNet, MnasNet; DeiT-Ti/S and ViT-B/16) with no decisions. Its counted parameters and MACs must
agree with the figures the paper publishes (the YAML's `reference:` mapping) within
3 %, and the torch module built from it must agree exactly with the analytic counters.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.space import load_space

NAMES = (
    "mobilenetv2",
    "mobilenetv3_large",
    "mobilenetv3_small",
    "proxylessnas_mobile",
    "fbnet_a",
    "fbnet_b",
    "fbnet_c",
    "mnasnet_a1",
    "deit_tiny",
    "deit_small",
    "vit_base_16",
)
TOLERANCE = 0.03

# Published figures that no public definition of the network reproduces; the YAML
# keeps the paper's number and says why under reference.known_discrepancy.
KNOWN_PARAM_GAPS = {
    "fbnet_b": "FBNet paper Table 3 says 4.5M params; its published layer list has 4.81M",
}
KNOWN_MAC_GAPS = {
    "deit_tiny": "the published 1.3G MACs is 1.254G rounded to one decimal (3.6 % above the count)",
}


@functools.lru_cache(maxsize=None)
def _measure(name: str) -> dict:
    """Counters of the single arch and one forward pass of its torch module (cached)."""
    space = load_space(name)
    arch = space.arch({})
    model = space.build(arch).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(torch.randn(1, space.in_channels, space.resolution(arch), space.resolution(arch)))
    return {
        "space": space,
        "counts": space.counts(arch),
        "torch_params": sum(p.numel() for p in model.parameters()),
        "torch_flops": counter.get_total_flops(),
        "out_shape": tuple(out.shape),
    }


def _published(name: str, key: str) -> float:
    reference = _measure(name)["space"].reference
    assert isinstance(reference, dict) and reference.get("source"), f"{name}: reference needs figures and a source"
    return float(reference[key])


@pytest.mark.parametrize("name", NAMES)
def test_one_architecture_at_imagenet_size(name):
    m = _measure(name)
    space = m["space"]
    assert space.name == name
    assert space.size == 1 and len(space.decisions) == 0
    assert space.classes == 1000 and space.in_channels == 3
    assert m["counts"]["resolution"] == 224
    assert m["out_shape"] == (1, 1000)


@pytest.mark.parametrize("name", NAMES)
def test_torch_module_matches_counters(name):
    m = _measure(name)
    assert m["torch_params"] == m["counts"]["params"]
    assert m["torch_flops"] == 2 * m["counts"]["macs"]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_PARAM_GAPS[n])) if n in KNOWN_PARAM_GAPS else n
    for n in NAMES
])
def test_params_match_published(name):
    ours, published = _measure(name)["counts"]["params"], _published(name, "params")
    assert abs(ours / published - 1) <= TOLERANCE, f"{name}: {ours} params vs published {published:.0f}"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MAC_GAPS[n])) if n in KNOWN_MAC_GAPS else n
    for n in NAMES
])
def test_macs_match_published(name):
    ours, published = _measure(name)["counts"]["macs"], _published(name, "macs")
    assert abs(ours / published - 1) <= TOLERANCE, f"{name}: {ours} MACs vs published {published:.0f}"
