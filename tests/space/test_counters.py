"""The analytic counters against torch, the vectorised tables against the counters, and
the peak-memory model on small cases worked out by hand.

For every shipped space (discovered at run time) 50 seeded archs, the two extremes
among them, are built as torch modules: the parameter count must equal the built
module's, the MACs must be half of torch's FlopCounterMode total for a batch-1 forward
at the arch's own resolution, and the deployed weight count (each BatchNorm folded
into the conv that feeds it) must equal one read off the module by forward hooks.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.errors import NasError
from nas.space import LayerSpec, load_space
from nas.space.builder import build_network
from nas.space.counters import (
    dtype_bytes,
    layer_macs,
    layer_params,
    layer_peak_elements,
    network_counts,
)
from nas.space.registry import space_from_dict

N_ARCHS = 50  # per space, as the issue demands; a forward at 224 px takes ~0.1 s on one core
METRICS = ("params", "macs", "peak_activation_bytes", "weight_bytes")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # batch-1 forwards of small nets gain little from threads, and with another job
    # on the 2 cores two threads spin-wait and run several times slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sample_archs(space, n=N_ARCHS, seed=0):
    """All archs of a small space, else the two extremes and seeded random ones."""
    if space.size <= n:
        return list(space.enumerate())
    archs = [space.extreme(True), space.extreme(False)]
    rng = np.random.default_rng(seed)
    while len(archs) < n:
        arch = space.decode(space.sample_codes(rng, 1)[0])
        if arch not in archs:
            archs.append(arch)
    return archs


# ----------------------------------------------------------------------------- torch

def deployed_weights(model: nn.Module, x: torch.Tensor) -> int:
    """Weights an inference runtime stores: conv/linear tensors, plus for each BatchNorm
    the per-channel bias it leaves when folded into the conv whose output it reads
    (nothing extra if that conv already has a bias); a BatchNorm that does not read a
    conv's output directly keeps its scale and shift; layer norms, class tokens and
    position embeddings are stored as they are. Found by running the model."""
    conv_outputs: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}  # keeps outputs alive: ids stay unique
    total = 0

    def on_conv(module, inputs, output):
        conv_outputs[id(output)] = (module, output)

    def on_bn(module, inputs, output):
        nonlocal total
        conv, _ = conv_outputs.get(id(inputs[0]), (None, None))
        if conv is None:
            total += module.weight.numel() + module.bias.numel()
        elif conv.bias is None:
            total += module.num_features

    hooks = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            total += sum(p.numel() for p in module.parameters(recurse=False))
            if isinstance(module, nn.Conv2d):
                hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(on_bn))
        elif isinstance(module, nn.LayerNorm):  # nothing to fold it into: deployed as is
            total += module.weight.numel() + module.bias.numel()
        elif type(module).__name__ == "PatchEmbed":  # class token and position embedding
            total += sum(p.numel() for p in module.parameters(recurse=False))
        elif not list(module.children()):
            assert not list(module.parameters(recurse=False)), f"unexpected parameters in {module}"
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total


def test_counters_match_torch(shipped_space_name):
    space = load_space(shipped_space_name)
    archs = sample_archs(space)
    assert len(archs) == min(N_ARCHS, space.size)
    torch.manual_seed(0)
    for arch in archs:
        counts = space.counts(arch)
        model = space.build(arch).eval()
        where = f"{space.name} arch {arch.to_json()}"
        assert counts["params"] == sum(p.numel() for p in model.parameters()), where
        r = space.resolution(arch)
        assert counts["resolution"] == r
        x = torch.randn(1, space.in_channels, r, r)
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            y = model(x)
        assert 2 * counts["macs"] == flops.get_total_flops(), where
        assert y.shape == (1, space.classes) and torch.isfinite(y).all(), where
        # the torch module is the float one at every precision (int8 bytes: tests/test_precision.py)
        layers = space.layers(arch)
        float_layers = [replace(s, precision="fp32", in_precision="fp32") for s in layers]
        assert network_counts(float_layers)["weight_bytes"] == 4 * deployed_weights(model, x), where
        if not any(s.quantized for s in layers):
            assert counts["weight_bytes"] == 4 * deployed_weights(model, x), where


# ----------------------------------------------------------------------------- tables

@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_tables_match_counts(shipped_space_name, dtype):
    space = load_space(shipped_space_name)
    archs = sample_archs(space, n=200, seed=1)
    codes = space.encode_batch(archs)
    per_arch = [space.counts(a, dtype=dtype) for a in archs]
    for metric in METRICS:
        table = space.table(metric, dtype=dtype)
        got = table(codes)
        assert got.shape == (len(archs),)
        np.testing.assert_array_equal(got, [c[metric] for c in per_arch], err_msg=f"{space.name} {metric}")
        assert table(codes[0]) == per_arch[0][metric]  # one code vector gives a scalar


def test_tables_match_counts_at_other_resolution(shipped_space_name):
    """A resolution override reaches the tables the same way it reaches counts()."""
    space = load_space(shipped_space_name)
    archs = sample_archs(space, n=20, seed=2)
    codes = space.encode_batch(archs)
    resolution = 2 * max(space.resolution(a) for a in archs)
    per_arch = [space.counts(a, resolution=resolution) for a in archs]
    assert all(c["resolution"] == resolution for c in per_arch)
    for metric in ("macs", "peak_activation_bytes"):
        np.testing.assert_array_equal(space.table(metric, resolution=resolution)(codes), [c[metric] for c in per_arch])
    # the convolutions' MACs grow with the input area; nothing shrinks
    assert np.all(space.table("macs", resolution=resolution)(codes) > space.table("macs")(codes))


# ----------------------------------------------------------------------------- peak memory by hand

def test_peak_of_plain_conv():
    # input and output are alive while the conv runs
    assert layer_peak_elements(LayerSpec("conv", 3, 8, 16, kernel=3)) == 3 * 16 * 16 + 8 * 16 * 16
    assert layer_peak_elements(LayerSpec("conv", 8, 16, 16, kernel=3, stride=2)) == 8 * 16 * 16 + 16 * 8 * 8


def test_peak_of_residual_mbconv():
    spec = LayerSpec("mbconv", 16, 16, 8, kernel=3, mid_ch=48)
    assert spec.residual
    x, expanded, dw, projected = 16 * 64, 48 * 64, 48 * 64, 16 * 64
    # the input stays alive for the residual add through every step
    steps = [
        x + expanded,              # 1x1 expansion
        x + expanded + dw,         # depthwise reads the expanded tensor
        x + dw + projected,        # 1x1 projection
        x + projected + projected,  # the add writes a new tensor
    ]
    assert layer_peak_elements(spec) == max(steps) == 7168


def test_peak_of_strided_mbconv_frees_its_input():
    spec = LayerSpec("mbconv", 16, 24, 8, kernel=5, stride=2, mid_ch=48)
    assert not spec.residual
    x, expanded, dw, out = 16 * 64, 48 * 64, 48 * 16, 24 * 16
    assert layer_peak_elements(spec) == max(x + expanded, expanded + dw, dw + out) == 4096


def test_peak_of_mbconv_with_squeeze_excite():
    # 2x2 maps make the SE vectors matter: in 16ch, mid 64ch, squeeze 16
    spec = LayerSpec("mbconv", 16, 16, 2, kernel=3, mid_ch=64, se_ch=16)
    x, expanded, dw, out = 16 * 4, 64 * 4, 64 * 4, 16 * 4
    pooled, reduced, gate, scaled = 64, 16, 64, 64 * 4
    steps = [
        x + expanded,
        x + expanded + dw,
        x + dw + pooled,            # global pool
        x + dw + pooled + reduced,  # reduce conv
        x + dw + reduced + gate,    # expand conv + gate
        x + dw + gate + scaled,     # scale: reads dw and gate, writes a new tensor
        x + scaled + out,           # projection
        x + out + out,              # residual add
    ]
    assert layer_peak_elements(spec) == max(steps) == 640


def test_peak_of_nb201_cells():
    node = 16 * 32 * 32
    none = LayerSpec("nb201_cell", 16, 16, 32, edges=("none",) * 6)
    # nothing reads the input; each node is a fresh tensor of zeros, one at a time
    assert layer_peak_elements(none) == node
    assert layer_macs(none) == 0 and layer_params(none) == 0
    convs = LayerSpec("nb201_cell", 16, 16, 32, edges=("nor_conv_3x3",) * 6)
    # node 3 = conv(n0) + conv(n1) + conv(n2): n0, n1, n2, the partial sum and one conv output
    assert layer_peak_elements(convs) == 5 * node


def test_peak_of_nb201_networks():
    space = load_space("nb201")
    node = 16 * 32 * 32
    none = space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    # the first reduction block is the peak: input x (16@32) held for the shortcut
    # while conv_a and conv_b outputs (32@16) are alive
    assert space.counts(none)["peak_activation_bytes"] == 4 * (node + 2 * 32 * 16 * 16)
    convs = space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
                              "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert space.counts(convs)["peak_activation_bytes"] == 4 * 5 * node


def _tiny_chain(**stem_fields):
    stem = {"op": "conv", "out": 8, "kernel": 3, **stem_fields}
    return space_from_dict({
        "name": "tiny_by_hand", "input": {"channels": 3, "resolution": 8}, "classes": 10,
        "stem": [stem], "head": [{"op": "gap"}, {"op": "linear", "out": "classes"}],
    })


def test_network_peak_and_dtypes():
    space = _tiny_chain()
    arch = space.arch({})
    conv_peak = 3 * 64 + 8 * 64  # > gap (8*64 + 8) > linear (8 + 10)
    weights = 3 * 3 * 3 * 8 + 8 + 8 * 10 + 10  # conv with its BN folded to a bias; linear with bias
    params = 3 * 3 * 3 * 8 + 2 * 8 + 8 * 10 + 10
    for dtype, nbytes in [("float32", 4), ("float16", 2), ("bfloat16", 2), ("int8", 1)]:
        counts = space.counts(arch, dtype=dtype)
        assert counts["peak_activation_bytes"] == conv_peak * nbytes
        assert counts["weight_bytes"] == weights * nbytes
        assert counts["params"] == params and counts["macs"] == 3 * 3 * 3 * 8 * 64 + 80
        assert space.table("peak_activation_bytes", dtype=dtype)(space.encode(arch)) == conv_peak * nbytes
        assert dtype_bytes(dtype) == nbytes


def test_unknown_dtype_is_a_clear_error():
    space = _tiny_chain()
    with pytest.raises(NasError, match=r"unknown dtype 'float8'.*float32"):
        space.counts(space.arch({}), dtype="float8")
    with pytest.raises(NasError, match=r"unknown dtype"):
        space.table("params", dtype="fp32")
    with pytest.raises(NasError, match=r"unknown counter 'parms'.*did you mean 'params'"):
        space.table("parms")


# ----------------------------------------------------------------------------- extremes

def test_extremes_bound_random_archs_and_are_local_optima(shipped_space_name):
    space = load_space(shipped_space_name)
    macs = space.table("macs")
    sampled = macs(space.sample_codes(3, 2000))
    for largest, sign in ((True, 1), (False, -1)):
        codes = space.encode(space.extreme(largest))
        best = macs(codes)
        assert np.all(sign * sampled <= sign * best)
        for d, radix in enumerate(space.radices):  # no single change does better
            options = np.repeat(codes[None, :], radix, axis=0)
            options[:, d] = np.arange(radix)
            assert np.all(sign * macs(options) <= sign * best), space.decisions[d].name


@pytest.mark.parametrize("resolution", [52, 100])
def test_resolution_override_counts_the_module_at_that_size(shipped_space_name, resolution):
    """counts(arch, resolution=R) is what torch runs when the same module gets R px:
    every shipped network ends in global pooling, so it takes any input size (52 and
    100 are not multiples of the total stride: the 'same' padding rounds sizes up)."""
    space = load_space(shipped_space_name)
    if any(s.op == "patch_embed" for s in space.layers(space.extreme(True))):
        _check_token_space_at_other_resolution(space, resolution)
        return
    for arch in sample_archs(space, n=3, seed=4):
        counts = space.counts(arch, resolution=resolution)
        model = space.build(arch).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            model(torch.randn(1, space.in_channels, resolution, resolution))
        assert 2 * counts["macs"] == flops.get_total_flops(), f"{space.name} at {resolution}: {arch.to_json()}"
        assert counts["params"] == space.counts(arch)["params"]


def _check_token_space_at_other_resolution(space, resolution):
    """A transformer's position embedding holds one vector per token, so another resolution
    is another network: where the patches tile it, counts(arch, resolution=R) is the module
    built from the layers at R; where they do not, it is refused naming the patch."""
    for arch in sample_archs(space, n=3, seed=4):
        try:
            layers = space.layers(arch, resolution)
        except NasError as exc:
            assert "does not tile" in str(exc) and "patch" in str(exc)
            continue
        counts = space.counts(arch, resolution=resolution)
        model = build_network(layers).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            model(torch.randn(1, space.in_channels, resolution, resolution))
        assert 2 * counts["macs"] == flops.get_total_flops(), f"{space.name} at {resolution}: {arch.to_json()}"
        assert counts["params"] == sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- LayerSpec as data

def test_layer_specs_round_trip_through_json(shipped_space_name):
    space = load_space(shipped_space_name)
    for arch in sample_archs(space, n=10, seed=5):
        for spec in space.layers(arch):
            again = LayerSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
            assert again == spec and again.key == spec.key and hash(again) == hash(spec)


@pytest.mark.parametrize("fields, message", [
    ({"kernel": 3.0}, "kernel must be an integer, got 3.0"),
    ({"stride": True}, "stride must be an integer, got True"),
    ({"bn": 1}, "bn must be true or false, got 1"),
    ({"groups": 5}, "groups 5 must divide in_ch 8 and out_ch 16"),
    ({"kernel": 2}, "kernel 2 must be odd"),
    ({"act": "mish"}, "unknown activation 'mish'"),
    ({"op": "conv3d"}, "unknown op 'conv3d'"),
    ({"in_size": 0}, "must be positive"),
])
def test_invalid_layer_specs_are_refused(fields, message):
    with pytest.raises(NasError, match=message):
        LayerSpec(**{"op": "conv", "in_ch": 8, "out_ch": 16, "in_size": 8, **fields})
    with pytest.raises(NasError, match="unknown LayerSpec field"):
        LayerSpec.from_dict({"op": "conv", "in_ch": 8, "out_ch": 16, "in_size": 8, "kernal": 3})


def test_peak_of_encoder_holds_the_attention_map():
    # 4 patches and a class token, embed 16, 2 heads of 8, MLP 32
    spec = LayerSpec("encoder", 16, 16, 2, mid_ch=32, heads=2, cls_token=True)
    t, c, heads = 5, 16, 2
    x, qkv, attn_map, heads_out = t * c, 3 * t * c, heads * t * t, t * c
    # the input waits for the first residual add; scores and softmax write one map, read with V
    assert layer_peak_elements(spec) == x + qkv + attn_map + heads_out == 450
    # four times the tokens: the map grows with tokens squared and sets the peak alone
    wide = LayerSpec("encoder", 16, 16, 8, mid_ch=32, heads=2)
    assert layer_peak_elements(wide) == 64 * 16 + 3 * 64 * 16 + 2 * 64 * 64 + 64 * 16
