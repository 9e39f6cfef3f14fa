"""The research search spaces shipped as YAML: OFA-MobileNetV3, ProxylessNAS, FBNet, FBNet-CIFAR.

Sizes and decision counts follow the papers' definitions; the FBNet-CIFAR space must
read every architecture string of HELP's FBNet latency table (HW-NAS-Bench's space).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.space import load_space

FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
PROXYLESS_OPS = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6")
OFA_RESOLUTIONS = tuple(range(128, 225, 4))


def benchmarks_dir() -> Path:
    env = os.environ.get("HWNAS_BENCHMARKS")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "benchmarks"


# ----------------------------------------------------------------------------- sizes

def test_ofa_mbv3_size():
    s = load_space("ofa_mbv3")
    names = [d.name for d in s.decisions]
    # resolution + 5 stages x (depth + 4 layers x (kernel, expand)) = 46 decisions
    assert len(s.decisions) == 1 + 5 * (1 + 4 * 2)
    assert s.decisions[0].name == "resolution" and s.decisions[0].choices == OFA_RESOLUTIONS
    assert {d.choices for d in s.decisions if d.name.endswith(".depth")} == {(2, 3, 4)}
    assert {d.choices for d in s.decisions if d.name.endswith(".kernel")} == {(3, 5, 7)}
    assert {d.choices for d in s.decisions if d.name.endswith(".expand")} == {(3, 4, 6)}
    assert sum(n.endswith(".depth") for n in names) == 5
    # The code space counts the kernel/expand of inactive layers too ...
    assert s.size == len(OFA_RESOLUTIONS) * 3**5 * 9**20
    # ... the paper's count of distinct subnets, ((3x3)^2 + (3x3)^3 + (3x3)^4)^5 ~ 2e19,
    # is the same space with inactive layers' choices collapsed.
    distinct = (9**2 + 9**3 + 9**4) ** 5
    assert 2.1e19 < distinct < 2.2e19


def test_proxyless_size():
    s = load_space("proxyless")
    assert len(s.decisions) == 21  # 4+4+4+4+4+1 searchable layers
    firsts = [d for d in s.decisions if d.name.endswith(".0.op") or d.name == "s6.op"]
    assert len(firsts) == 6 and all(d.choices == PROXYLESS_OPS for d in firsts)
    others = [d for d in s.decisions if d not in firsts]
    assert len(others) == 15 and all(d.choices == PROXYLESS_OPS + ("zero",) for d in others)
    assert s.size == 6**6 * 7**15


@pytest.mark.parametrize("name", ["fbnet", "fbnet_cifar"])
def test_fbnet_sizes(name):
    s = load_space(name)
    assert len(s.decisions) == 22
    assert all(d.choices == FBNET_OPS for d in s.decisions)
    assert s.size == 9**22


def test_fbnet_a_matches_paper():
    """FBNet-A (mobile-vision fbnet_modeldef_cls.py) in the fbnet space: paper Table 3 says 249M MACs, 4.3M params."""
    s = load_space("fbnet")
    ops = ("skip k3_e3 k3_e1 skip skip k5_e6 k3_e3 k5_e1 k3_e3 k5_e6 k5_e3 k5_e1_g2 k5_e6 "
           "k3_e6 k5_e1_g2 k5_e3 k3_e1_g2 k5_e6 k5_e6 k5_e3 k5_e6 k5_e6").split()
    counts = s.counts(s.arch(dict(zip([d.name for d in s.decisions], ops))))
    assert 245e6 <= counts["macs"] <= 255e6 and 4.25e6 <= counts["params"] <= 4.35e6, counts


def test_fbnet_cifar_skeleton():
    """SOURCES.md: stem 16/1, widths 16..352, first strides 1,1,2,2,1,2,1, head 1504, 100 classes."""
    s = load_space("fbnet_cifar")
    assert s.classes == 100
    arch = s.arch({d.name: "k3_e3" for d in s.decisions})
    layers = s.layers(arch)
    assert s.resolution(arch) == 32
    stem, blocks, head = layers[0], layers[1:23], layers[23:]
    assert (stem.op, stem.out_ch, stem.kernel, stem.stride) == ("conv", 16, 3, 1)
    widths = [b.out_ch for b in blocks]
    assert widths == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    firsts = [0, 1, 5, 9, 13, 17, 21]
    assert [blocks[i].stride for i in firsts] == [1, 1, 2, 2, 1, 2, 1]
    assert all(b.stride == 1 for i, b in enumerate(blocks) if i not in firsts)
    assert all(b.mid_ch == 3 * b.in_ch and b.act == "relu" for b in blocks)
    assert [(h.op, h.out_ch) for h in head] == [("conv", 1504), ("gap", 1504), ("linear", 100)]
    # e1 keeps its 1x1 expansion conv; g2 groups both 1x1 convs and shuffles
    g2 = s.layers(s.arch({d.name: "k5_e1_g2" for d in s.decisions}))[1:23]
    assert all(b.mid_ch == b.in_ch and b.groups == 2 and b.shuffle and b.kernel == 5 for b in g2)
    skips = s.layers(s.arch({d.name: "skip" for d in s.decisions}))[1:23]
    assert [b.is_identity for b in skips] == [i not in firsts[1:] for i in range(22)]


def test_fbnet_cifar_decisions_in_network_order():
    s = load_space("fbnet_cifar")
    first_slot = {}
    for i, slot in enumerate(s.slots()):
        for dep in slot.deps:
            first_slot.setdefault(dep, i)
    order = [first_slot[d.name] for d in s.decisions]
    assert order == sorted(order) and len(set(order)) == 22


# ----------------------------------------------------------------------------- HELP table

def test_help_fbnet_arch_strings_parse():
    path = benchmarks_dir() / "fbnet" / "help_latency.csv"
    if not path.is_file():
        pytest.skip(f"HELP FBNet table not found at {path} (set HWNAS_BENCHMARKS to the benchmarks folder)")
    s = load_space("fbnet_cifar")
    names = [d.name for d in s.decisions]
    with open(path, newline="") as fh:
        strings = [row["arch"] for row in csv.DictReader(fh)]
    assert len(strings) == 5000
    archs = []
    for text in strings:
        ops = text.split("-")
        assert len(ops) == 22, text
        archs.append(s.arch(dict(zip(names, ops))))
    assert len(set(archs)) == len(archs)
    codes = s.encode_batch(archs)
    assert codes.shape == (5000, 22) and set(np.unique(codes)) == set(range(9))


# ----------------------------------------------------------------------------- OFA extremes

# Our counts at 224x224 (params include BN affine parameters; MACs of convs + linears):
#   largest (d=4, k=7, e=6): 7.66M params, 566M MACs  (OFA's supernet: ~7.7M params)
#   smallest (d=2, k=3, e=3): 3.41M params, 121M MACs (41M MACs at 128x128)
OFA_RANGES = {
    True: {"params": (7.5e6, 7.8e6), "macs": (540e6, 600e6)},
    False: {"params": (3.3e6, 3.5e6), "macs": (110e6, 130e6)},
}


def ofa_make_divisible(v: float, divisor: int) -> int:
    """once-for-all ofa/utils/pytorch_modules.py make_divisible (min_val = divisor)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@pytest.mark.parametrize("largest", [True, False])
def test_ofa_mbv3_extremes(largest):
    s = load_space("ofa_mbv3")
    arch = s.extreme(largest)
    depth, kernel, expand = (4, 7, 6) if largest else (2, 3, 3)
    assert all(arch[d.name] == depth for d in s.decisions if d.name.endswith(".depth"))
    for d in s.decisions:
        stage, _, field = d.name.partition(".")
        if field.endswith(("kernel", "expand")) and int(field.split(".")[0]) < arch[f"{stage}.depth"]:
            assert arch[d.name] == (kernel if field.endswith("kernel") else expand), d.name
    assert arch["resolution"] == (224 if largest else 128)
    counts = s.counts(arch, resolution=224)
    for key, (lo, hi) in OFA_RANGES[largest].items():
        assert lo <= counts[key] <= hi, (key, counts[key])


def test_ofa_mbv3_blocks():
    """OFA rules: mid = make_divisible(in*e, 8), SE squeeze make_divisible(mid/4, 8), hsigmoid gate."""
    s = load_space("ofa_mbv3")
    arch = s.extreme(True)
    layers = s.layers(arch)
    first = layers[1]
    assert (first.op, first.in_ch, first.out_ch, first.mid_ch, first.se_ch) == ("mbconv", 16, 16, 0, 0)
    blocks = layers[2:22]
    assert [b.out_ch for b in blocks] == [24] * 4 + [40] * 4 + [80] * 4 + [112] * 4 + [160] * 4
    assert [b.stride for b in blocks[::4]] == [2, 2, 2, 1, 2]
    assert [b.act for b in blocks[::4]] == ["relu", "relu", "hswish", "hswish", "hswish"]
    for b in blocks:
        assert b.mid_ch == ofa_make_divisible(6 * b.in_ch, 8)
        has_se = b.out_ch in (40, 112, 160)
        assert b.se_ch == (ofa_make_divisible(b.mid_ch // 4, 8) if has_se else 0)
        assert not has_se or b.se_gate == "hsigmoid"
    assert [(h.op, h.out_ch, h.act) for h in layers[22:]] == [
        ("conv", 960, "hswish"), ("gap", 960, "none"), ("linear", 1280, "hswish"), ("linear", 1000, "none")]
    assert not layers[24].bias and layers[25].bias


# ----------------------------------------------------------------------------- builds

@pytest.mark.parametrize("name", ["ofa_mbv3", "proxyless", "fbnet", "fbnet_cifar"])
def test_research_space_builds_and_runs(name):
    s = load_space(name)
    arch = s.sample(np.random.default_rng(0))
    model = s.build(arch).eval()
    r = s.resolution(arch)
    with torch.no_grad():
        out = model(torch.randn(1, s.in_channels, r, r))
    assert out.shape == (1, s.classes)
    assert sum(p.numel() for p in model.parameters()) == s.counts(arch)["params"]
    assert math.isfinite(float(out.abs().sum()))
