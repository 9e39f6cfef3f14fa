"""Transformer and hybrid spaces (issue 18): the grammar's token blocks, their bad input
refused at load in one line naming the layer and the field, the shipped spaces and the
torch module against onnxruntime (our emitter with the module's weights, and export)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from nas.cli import main
from nas.errors import NasError
from nas.export.onnx_export import to_onnx, verify
from nas.hardware.onnx_graph import Deployment, network_model
from nas.quant.fold import folded_params
from nas.space import load_space
from nas.space.builder import build_network
from nas.space.layers import LayerSpec
from nas.space.registry import space_from_dict
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)

VIT = {"name": "v", "input": {"channels": 3, "resolution": 32}, "classes": 10,
       "stem": [{"op": "patch_embed", "out": [32, 48], "patch": 4, "cls": True}],
       "stages": [{"depth": [1, 2], "block": {"op": "encoder", "heads": [2, 4], "mlp_ratio": [2, 4]}}],
       "head": [{"op": "token_pool"}, {"op": "linear", "out": "classes"}]}
HYBRID = {"name": "h", "input": {"channels": 3, "resolution": 32}, "classes": 10,
          "stem": [{"op": "conv", "out": 16, "kernel": 3, "stride": 2}],
          "stages": [{"depth": [1, 2], "width": [16, 24], "stride": 2, "block": {"op": "mbconv", "expand": [3, 6]}},
                     {"name": "embed", "width": 32, "block": {"op": "patch_embed", "patch": 2}},
                     {"name": "t", "depth": [1, 2], "block": {"op": "encoder", "heads": 2, "mlp_ratio": 2}}],
          "head": [{"op": "token_pool"}, {"op": "linear", "out": "classes"}]}


def _edit(base: dict, path: str, value) -> dict:
    data = copy.deepcopy(base)
    target = data
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[int(last) if last.isdigit() else last] = value
    return data


# ----------------------------------------------------------------------------- the grammar

def test_a_vit_space_reads_its_token_blocks():
    space = space_from_dict(VIT)
    assert {d.name for d in space.decisions} >= {"stem0.out", "s1.depth", "s1.0.heads", "s1.1.mlp_ratio"}
    layers = space.layers(space.extreme(True))
    assert [s.op for s in layers] == ["patch_embed", "encoder", "encoder", "token_pool", "linear"]
    embed, encoder, pool = layers[0], layers[1], layers[3]
    assert (embed.kernel, embed.stride, embed.tokens, embed.out_ch) == (4, 4, 65, 48)
    assert (encoder.tokens, encoder.heads, encoder.attn_dim, encoder.mid_ch, encoder.act) == (65, 4, 48, 192, "gelu")
    assert pool.cls_token and pool.tokens == 65 and layers[-1].in_ch == 48


def test_a_hybrid_turns_its_feature_map_into_tokens():
    space = space_from_dict(HYBRID)
    layers = space.layers(space.extreme(False))
    embed = next(s for s in layers if s.op == "patch_embed")
    assert (embed.in_size, embed.in_ch, embed.tokens, embed.cls_token) == (8, 16, 16, False)  # 32 -> 16 -> 8 -> 4x4
    assert all(s.tokens == 16 for s in layers if s.op in ("encoder", "token_pool"))


@pytest.mark.parametrize("data, where, message", [
    # heads that do not divide the embed dim
    (_edit(VIT, "stages.0.block.heads", [2, 5]), "layer s1.0", "heads 5 does not divide the embed dim 32"),
    # a token count that does not fit the patch size and resolution
    (_edit(VIT, "stem.0.patch", 5), "layer stem0", "patch 5 does not tile the 32x32 feature map"),
    (_edit(VIT, "stem.0.tokens", 64), "stem[0].tokens", "64 does not fit patch 4 at 32 px: 8x8 patches and a class "
                                                        "token make 65"),
    # an MLP ratio that gives a non-integer width
    (_edit(VIT, "stages.0.block.mlp_ratio", [2, 3.3]), "layer s1.0", "mlp_ratio 3.3 gives an MLP width of 105.6 at "
                                                                     "embed dim 32, not a whole number"),
    # a hybrid whose feature map cannot become tokens
    (_edit(HYBRID, "stages.1.block.patch", 3), "layer embed", "patch 3 does not tile the 8x8 feature map"),
    (_edit(HYBRID, "stages.1.block", {"op": "conv", "kernel": 1}), "layer t.0 (encoder)",
     "reads tokens but gets a feature map; a patch_embed must turn the feature map into tokens first"),
    (_edit(VIT, "head.0", {"op": "gap"}), "layer head0 (gap)", "reads a feature map but gets tokens"),
    (_edit(_edit(HYBRID, "stages", HYBRID["stages"][:1]), "head", [{"op": "gap"}, {"op": "patch_embed", "out": 8, "patch": 1}]),
     "layer head1 (patch_embed)",
     "reads a feature map but gets a pooled vector"),
])
def test_bad_transformer_input_is_refused_at_load_naming_layer_and_field(data, where, message):
    with pytest.raises(NasError) as info:
        space_from_dict(data)
    text = str(info.value)
    assert "\n" not in text and where in text and message in text, text


def test_bad_transformer_space_is_one_line_exit_2_in_the_cli(tmp_path: Path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(_edit(VIT, "stages.0.block.heads", [3, 4])))
    assert main(["space", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "heads 3 does not divide the embed dim 32" in err


def test_class_token_and_patch_are_one_value_each():
    with pytest.raises(NasError, match="patch embedding's cls must be one value"):
        space_from_dict(_edit(VIT, "stem.0.cls", [True, False]))
    with pytest.raises(NasError, match="class token is the patch embedding's"):
        space_from_dict(_edit(VIT, "stages.0.block.cls", True))


def test_heads_need_not_divide_the_embed_dim_with_a_head_dim():
    data = _edit(_edit(VIT, "stages.0.block.heads", [3, 5]), "stages.0.block.head_dim", 8)
    layers = space_from_dict(data).layers(space_from_dict(data).extreme(True))
    assert layers[1].attn_dim == 40 and layers[1].in_ch == 48


def test_transformer_blocks_refuse_int8_in_one_line():
    with pytest.raises(NasError, match="op encoder has no int8 form"):
        LayerSpec("encoder", 16, 16, 2, mid_ch=32, heads=2, precision="int8")


def test_keys_of_the_older_ops_are_unchanged():
    """New fields are defaulted and the key lists non-default fields only, so every LUT
    and supernet written before transformer blocks keeps its keys."""
    assert LayerSpec("mbconv", 16, 24, 8, kernel=5, stride=2, mid_ch=48, act="relu").key == \
        "mbconv 16>24 s8 kernel=5 stride=2 mid_ch=48 act=relu"
    assert LayerSpec("encoder", 48, 48, 8, mid_ch=96, act="gelu", cls_token=True, heads=4).key == \
        "encoder 48>48 s8 mid_ch=96 act=gelu cls_token=True heads=4"


# ----------------------------------------------------------------------------- torch vs onnxruntime

@pytest.mark.parametrize("data", [VIT, HYBRID], ids=["vit", "hybrid"])
def test_the_emitted_graph_computes_the_torch_module(data):
    """The LUT's micro-models time the function the network computes: with the module's
    own weights (BN folded, nas.quant.fold), the emitter's graph and the torch module agree."""
    space = space_from_dict(data)
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for arch in (space.extreme(True), space.extreme(False)):
        layers = space.layers(arch)
        model = build_network(layers).eval()
        graph = network_model(layers, deployment=Deployment(folded_params(model, layers)))
        got = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_hybrid"])
def test_export_of_a_transformer_network_matches_torch_in_onnxruntime(name):
    space = load_space(name)
    torch.manual_seed(0)
    for arch in (space.extreme(True), space.extreme(False)):
        model = space.build(arch).eval()
        shape = (1, space.in_channels, space.resolution(arch), space.resolution(arch))
        check = verify(model, to_onnx(model, shape), shape)  # NasError beyond the tolerance
        assert check.opset == 17 and check.batches == (1, 3) and check.max_abs_diff <= check.tolerance


@pytest.mark.parametrize("name", ["vit", "hybrid", "tiny_vit", "tiny_hybrid"])
def test_shipped_transformer_spaces_end_in_logits(name):
    space = load_space(name)
    layers = space.layers(space.extreme(False))
    assert layers[-2].op == "token_pool" and layers[-1].op == "linear" and layers[-1].out_ch == space.classes
    assert any(s.op == "encoder" for s in layers)
    assert (name in ("hybrid", "tiny_hybrid")) == any(s.op == "mbconv" for s in layers)
