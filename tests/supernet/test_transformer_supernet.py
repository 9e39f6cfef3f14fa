"""The elastic transformer supernet (issue 18): weight entanglement over embed dim, heads,
MLP width and depth; extraction into the builder's own modules; recalibration and
sorting on layer-norm networks; sandwich training on the digits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.space import load_space
from nas.space.builder import build_layer
from nas.space.layers import LayerSpec
from nas.errors import ConfigError
from nas.supernet.config import config_from_dict, space_family
from nas.supernet.elastic import QKVUnit, init_weights
from nas.supernet.evaluation import recalibrate_bn
from nas.supernet.optim import make_optimizer
from nas.supernet.slot import SlotModule
from nas.supernet.sorting import sort_channels
from nas.supernet.supernet import Supernet
from nas.supernet.trainer import train
from tests.supernet.test_supernet import assert_extraction_matches, perturbed
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)

# Elastic resolution (two token counts, two position embeddings), AutoFormer's fixed
# head width (fewer heads = fewer whole heads) and a class token: what the shipped
# digits-scale spaces do not cover.
MICRO_VIT = """\
name: micro_vit
input: {channels: 3, resolution: [12, 16]}
classes: 10
stem:
  - {op: patch_embed, out: [12, 16], patch: 4, cls: true}
stages:
  - {depth: [1, 2], block: {op: encoder, heads: [1, 2], head_dim: 6, mlp_ratio: [1, 2]}}
head:
  - {op: token_pool}
  - {op: linear, out: classes}
"""
# A conv stage, then tokens: the CNN part gives the digits' few training steps the
# inductive bias a pure ViT lacks (a micro ViT trained alone reached 20 % in 3 epochs of
# 600 digits), so learning shows within seconds.
MICRO_HYBRID = """\
name: micro_hybrid
input: {channels: 3, resolution: [12, 16]}
classes: 10
stem: [{op: conv, out: 8, kernel: 3, stride: 2, act: relu}]
stages:
  - {depth: [1, 2], width: [8, 12], stride: 1, block: {op: mbconv, kernel: 3, expand: [2, 3], act: relu}}
  - {name: embed, width: [12, 16], block: {op: patch_embed, patch: 2}}
  - {name: t1, depth: [1, 2], block: {op: encoder, heads: [1, 2], mlp_ratio: [1, 2]}}
head:
  - {op: token_pool}
  - {op: linear, out: classes}
"""


@pytest.fixture(scope="module")
def micro_vit(tmp_path_factory):
    path = tmp_path_factory.mktemp("micro_vit") / "micro_vit.yaml"
    path.write_text(MICRO_VIT)
    return load_space(path)


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_hybrid"])
def test_extraction_is_numerically_identical_for_50_random_archs(name):
    space = load_space(name)
    archs = [space.extreme(True), space.extreme(False)] + [space.sample(i) for i in range(48)]
    assert_extraction_matches(space, perturbed(space), archs)


def test_extraction_with_elastic_resolution_and_fixed_head_width(micro_vit):
    net = perturbed(micro_vit)
    pos = [n for n, _ in net.named_parameters() if "pos_embeds" in n]
    assert {n.rsplit(".", 1)[-1] for n in pos} == {"10", "17"}  # 3x3 and 4x4 patches, each + the class token
    archs = [micro_vit.extreme(True), micro_vit.extreme(False)] + [micro_vit.sample(i) for i in range(30)]
    assert {micro_vit.resolution(a) for a in archs} == {12, 16}
    assert_extraction_matches(micro_vit, net, archs)


@pytest.mark.parametrize("name", ["vit", "hybrid"])
def test_extraction_at_224_px_on_the_full_size_spaces(name):
    space = load_space(name)
    assert_extraction_matches(space, perturbed(space), [space.extreme(False), space.sample(0)], batch=1)


def test_fewer_heads_take_the_leading_heads_of_queries_keys_and_values():
    unit = QKVUnit(attn_dim=12, embed=8)
    with torch.no_grad():
        unit.weight.copy_(torch.arange(36 * 8, dtype=torch.float32).reshape(36, 8))
        unit.bias.copy_(torch.arange(36, dtype=torch.float32))
    weight, bias = unit.params(attn_dim=8, embed=6)  # 2 of 3 heads of width 4, 6 of 8 embed dims
    rows = [*range(0, 8), *range(12, 20), *range(24, 32)]  # leading 8 rows of q, of k, of v
    assert torch.equal(weight, unit.weight[rows, :6]) and torch.equal(bias, unit.bias[rows])


def test_gradients_reach_only_the_leading_slices_a_subnet_uses(micro_vit):
    net = Supernet(micro_vit)
    small = micro_vit.extreme(False)
    net.set_active(small)
    F.cross_entropy(net(torch.randn(2, 3, 12, 12)), torch.tensor([1, 2])).backward()
    encoder = net.blocks[1].families["encoder"]
    spec = net._specs[1]
    assert (spec.in_ch, spec.attn_dim, spec.mid_ch) == (12, 6, 12)
    qkv_rows = encoder.qkv.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert qkv_rows == [*range(0, 6), *range(12, 18), *range(24, 30)]  # one head of two, in q, k and v
    assert encoder.qkv.weight.grad[:, 12:].abs().sum() == 0  # embed 12 of 16
    assert encoder.fc1.weight.grad[12:].abs().sum() == 0 and encoder.norm1.weight.grad[12:].abs().sum() == 0
    tokens = net.blocks[0].families["patch_embed-p4-cls"].tokens
    assert tokens.pos_embeds["17"].grad is None and tokens.pos_embeds["10"].grad[..., 12:].abs().sum() == 0
    assert net.blocks[2].families["encoder"].qkv.weight.grad is None  # depth 1: the second layer is skipped


def test_layer_norms_need_no_recalibration_and_a_hybrid_recalibrates_only_its_batch_norms():
    vit = load_space("tiny_vit")
    net = perturbed(vit).extract(vit.sample(1)).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    recalibrate_bn(net, torch.randn(16, 3, 32, 32), 8)
    with torch.no_grad():
        assert torch.equal(net(x), before)  # no running statistics anywhere
    hybrid = load_space("tiny_hybrid")
    sub = perturbed(hybrid).extract(hybrid.sample(1))
    norms = {n: t.clone() for n, t in sub.state_dict().items() if "norm" in n and "running" not in n}
    bn_means = {n: t.clone() for n, t in sub.state_dict().items() if n.endswith("running_mean")}
    recalibrate_bn(sub, torch.randn(16, 3, 32, 32), 8)
    state = sub.state_dict()
    assert norms and all(torch.equal(state[n], t) for n, t in norms.items())  # layer norms: learned, untouched
    assert bn_means and all(not torch.equal(state[n], t) for n, t in bn_means.items())


def test_sorting_mlp_units_keeps_the_largest_transformer():
    space = load_space("tiny_vit")
    net = perturbed(space)
    x = torch.randn(2, 3, 32, 32)
    net.set_active(space.extreme(True))
    with torch.no_grad():
        before = net.eval()(x)
    counts = sort_channels(net)
    assert counts == {"blocks": 4, "widths": 0}  # one per encoder slot; the residual stream is not sorted
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-5)
    for block in net.blocks:
        if "encoder" in block.families:
            importance = block.families["encoder"].fc2.weight.abs().sum(0)
            assert torch.all(importance[:-1] >= importance[1:])


def test_tokens_are_seeded_and_not_decayed():
    space = load_space("tiny_vit")
    a, b = Supernet(space, seed=3), Supernet(space, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    tokens = a.blocks[0].families["patch_embed-p4-cls"].tokens
    assert 0 < tokens.cls_token.abs().max() <= 0.04
    standalone = space.build(space.extreme(True))
    init_weights(standalone, torch.Generator().manual_seed(3))
    for model in (a, standalone):
        decayed = {id(p) for p in make_optimizer(model, config_from_dict({}).optimizer).param_groups[0]["params"]}
        names = [n for n, p in model.named_parameters() if id(p) in decayed]
        assert names and not [n for n in names if "pos_embed" in n or "cls_token" in n or "norm" in n]


def test_slot_of_encoders_of_other_widths_matches_each_builder_module():
    big = LayerSpec("encoder", 16, 16, 3, mid_ch=48, act="gelu", heads=4, head_dim=4, cls_token=True)
    variants = [big, LayerSpec("encoder", 12, 12, 3, mid_ch=24, act="gelu", heads=2, head_dim=4, cls_token=True),
                LayerSpec("encoder", 12, 12, 3, mid_ch=36, act="gelu", heads=3, cls_token=True)]
    slot = SlotModule(variants).eval()
    init_weights(slot, torch.Generator().manual_seed(0))
    assert list(slot.families) == ["encoder"]
    for spec in variants:
        module = slot.state_for(spec)
        x = torch.randn(2, spec.tokens, spec.in_ch)
        ref = build_layer(spec).eval()
        ref.load_state_dict(module)
        with torch.no_grad():
            assert torch.allclose(slot(x, spec), ref(x), atol=1e-6)


@pytest.fixture(scope="module")
def digits600(tmp_path_factory):
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("tfdigits")
    digits = load_digits()
    np.savez(root / "digits600.npz", x=np.rint(digits.images * 255 / 16).astype(np.uint8)[:600],
             y=digits.target[:600])
    return root


def test_hybrid_supernet_learns_the_digits_with_the_sandwich_rule(digits600, tmp_path):
    space_file = tmp_path / "micro_hybrid.yaml"
    space_file.write_text(MICRO_HYBRID)
    space = load_space(space_file)
    assert_extraction_matches(space, perturbed(space), [space.extreme(True), space.extreme(False), space.sample(0)])
    config = config_from_dict({"space": str(space_file), "data": {"source": str(digits600 / "digits600.npz"),
                                                                 "crop_padding": 0},
                               "epochs": 3, "batch_size": 16})
    train(config, tmp_path / "run", progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    assert history[-1]["val_acc_largest"] >= 0.3 and history[-1]["val_acc_smallest"] >= 0.2  # chance: 0.1


def test_transformer_spaces_get_their_family_recipe_and_cnn_spaces_keep_theirs(tmp_path):
    vit = config_from_dict({"space": "tiny_vit"})
    assert (vit.optimizer.name, vit.optimizer.lr, vit.optimizer.weight_decay, vit.linear_init) == \
        ("adamw", 0.003, 0.05, "xavier")
    assert vit.schedule.warmup_epochs == 1.0 and vit.epochs == 4 and vit.label_smoothing == 0.1
    assert (vit.sampling.distill, vit.sampling.rule, vit.data.crop_padding, vit.data.source) == (False, None, 0, "digits")
    hybrid = config_from_dict({"space": "tiny_hybrid"})  # the transformer's init, crop and distillation, the CNN's SGD
    assert (hybrid.linear_init, hybrid.sampling.distill, hybrid.data.crop_padding) == ("xavier", False, 0)
    assert (hybrid.optimizer.name, hybrid.optimizer.lr, hybrid.schedule.warmup_epochs) == ("sgd", 0.1, 0.0)
    for cnn in (config_from_dict({}), config_from_dict({"space": "tiny_mbconv"})):
        assert (cnn.optimizer.name, cnn.optimizer.lr, cnn.linear_init) == ("sgd", 0.1, "normal")
    assert space_family(load_space("tiny_vit")) == "transformer"
    assert space_family(load_space("tiny_hybrid")) == "hybrid"
    assert space_family(load_space("tiny_mbconv")) == "cnn"
    # a section the config gives is merged key by key; naming another optimizer replaces the recipe's
    assert config_from_dict({"space": "tiny_vit", "optimizer": {"lr": 0.01}}).optimizer.name == "adamw"
    sgd = config_from_dict({"space": "tiny_vit", "optimizer": {"name": "sgd"}, "linear_init": "normal"})
    assert (sgd.optimizer.lr, sgd.optimizer.weight_decay, sgd.linear_init) == (0.1, 4e-5, "normal")
    # a run's recorded config sets every key: it never needs its space file again
    recorded = {**vit.to_dict(), "space": str(tmp_path / "gone.yaml")}
    assert config_from_dict(recorded).optimizer.name == "adamw"


def test_an_experiment_train_section_gets_the_recipe_of_its_space():
    from nas.experiment.schema import experiment_from_dict
    from nas.experiment.steps.train import train_config

    exp = {"name": "t", "space": "tiny_vit", "train": {"epochs": 2, "optimizer": {"lr": 0.002}}}
    config = train_config(experiment_from_dict(exp, "exp.yaml"))
    assert (config.epochs, config.optimizer.name, config.optimizer.lr, config.linear_init) == (2, "adamw", 0.002, "xavier")
    assert (config.data.source, config.data.crop_padding) == ("digits", 0)
    assert train_config(experiment_from_dict({**exp, "space": "tiny_mbconv"}, "exp.yaml")).optimizer.name == "sgd"


def test_a_bad_linear_init_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^config: linear_init: unknown 'kaiming'; choose normal, xavier$"):
        config_from_dict({"space": "tiny_vit", "linear_init": "kaiming"})


def test_xavier_init_of_the_supernet_and_of_a_standalone_network(micro_vit):
    net = Supernet(micro_vit, seed=0, linear_init="xavier")
    qkv = next(m for m in net.modules() if isinstance(m, QKVUnit))
    bound = (6 / (qkv.weight.shape[0] + qkv.weight.shape[1])) ** 0.5
    assert qkv.weight.abs().max() <= bound and qkv.weight.std() > 0.5 * bound / 3 ** 0.5
    normal = next(m for m in Supernet(micro_vit, seed=0).modules() if isinstance(m, QKVUnit))
    assert normal.weight.std() < 0.02
    standalone = micro_vit.build(micro_vit.extreme(True))
    init_weights(standalone, torch.Generator().manual_seed(0), "xavier")
    fc = next(m for m in standalone.modules() if isinstance(m, torch.nn.Linear))
    assert fc.weight.abs().max() <= (6 / sum(fc.weight.shape)) ** 0.5 and fc.weight.std() > 0.05
