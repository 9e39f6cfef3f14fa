"""The chain-space YAML grammar: what the decisions are, how they shape the network, and
one-line errors that name the fault for every kind of bad file."""
from __future__ import annotations

import copy
import textwrap

import pytest
import torch
import yaml

from nas.errors import NasError
from nas.space import ChainSpace, load_space
from nas.space.registry import space_from_dict

BASE = {
    "name": "g",
    "input": {"channels": 3, "resolution": 32},
    "classes": 10,
    "defaults": {"act": "relu"},
    "stem": [{"op": "conv", "out": 16, "kernel": 3, "stride": 2}],
    "stages": [
        {"name": "a", "depth": 2, "width": 16, "stride": 1, "block": {"kernel": 3, "expand": 3}},
        {"name": "b", "depth": 2, "width": 24, "stride": 2, "block": {"kernel": 3, "expand": 6}},
    ],
    "head": [{"op": "conv", "out": 64, "kernel": 1}, {"op": "gap"}, {"op": "linear", "out": "classes"}],
}


def space_with(edit=None) -> ChainSpace:
    data = copy.deepcopy(BASE)
    if edit:
        edit(data)
    return space_from_dict(data, "g.yaml")


def write(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def names(space) -> list[str]:
    return [d.name for d in space.decisions]


# ----------------------------------------------------------------------------- files

def test_load_by_path_and_by_name(tmp_path, monkeypatch):
    path = write(tmp_path, yaml.safe_dump(BASE), "g.yaml")
    space = load_space(path)
    assert space.name == "g" and space.size == 1
    assert load_space(str(path)).layers(space.arch({})) == space.layers(space.arch({}))
    monkeypatch.setenv("HWNAS_SPACES", str(tmp_path))
    assert load_space("g").name == "g"


def test_edited_file_is_reloaded(tmp_path):
    path = write(tmp_path, yaml.safe_dump(BASE))
    assert load_space(path).classes == 10
    path.write_text(yaml.safe_dump({**BASE, "classes": 100}))
    assert load_space(path).classes == 100


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, """\
        name: broken
        stem:
          - {op: conv, out: 16, kernel: 3
        head: []
        """)
    with pytest.raises(NasError, match=r"space\.yaml: malformed YAML at line \d+ column \d+") as err:
        load_space(path)
    line = int(str(err.value).split("line ")[1].split()[0])
    assert 3 <= line <= 4  # the unclosed flow mapping


def test_missing_file_and_unknown_space_name(tmp_path):
    with pytest.raises(NasError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(NasError, match=r"unknown space 'tiny_mbconvv' \(did you mean 'tiny_mbconv'\?\)"):
        load_space("tiny_mbconvv")
    with pytest.raises(NasError, match=r"unknown space 'zzzz'; see 'hwnas space list'"):
        load_space("zzzz")


def test_a_file_must_hold_a_mapping(tmp_path):
    with pytest.raises(NasError, match="must hold a mapping, got list"):
        load_space(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(NasError, match=r"unknown space type 'chian' \(did you mean 'chain'\?\)"):
        space_from_dict({**BASE, "type": "chian"})


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(stagse=[]), r"top level: unknown key 'stagse' \(did you mean 'stages'\?\)"),
    (lambda d: d["stages"][0].update(widht=16), r"stages\[0\]: unknown key 'widht' \(did you mean 'width'\?\)"),
    (lambda d: d["stages"][0]["block"].update(kernal=3), r"stages\[0\]\.block: unknown key 'kernal' \(did you mean 'kernel'\?\)"),
    (lambda d: d["input"].update(resolutoin=32), r"input: unknown key 'resolutoin' \(did you mean 'resolution'\?\)"),
    (lambda d: d["stem"][0].update(strid=2), r"stem\[0\]: unknown key 'strid' \(did you mean 'stride'\?\)"),
    (lambda d: d.update(defaults={"activation": "relu"}), r"defaults: unknown key 'activation'"),
])
def test_unknown_keys_suggest_the_closest(edit, message):
    with pytest.raises(NasError, match=r"^g\.yaml: " + message):
        space_with(edit)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(name=3), "needs a 'name'"),
    (lambda d: d.update(classes="ten"), r"classes must be a positive integer, got 'ten'"),
    (lambda d: d.update(stages={}), "'stages' must be a list"),
    (lambda d: d["input"].update(resolution=0), r"input\.resolution must be a positive integer, got 0"),
    (lambda d: d["stages"][0].update(width="wide"), r"stages\[0\]\.width must be a positive integer"),
    (lambda d: d["stages"][0].update(width=[16, 24.5]), r"stages\[0\]\.width: choices must be positive integers"),
    (lambda d: d["stages"][0].update(depth=[0, 1]), r"stages\[0\]\.depth: choices must be positive integers"),
    (lambda d: d["stages"][0].update(stride="2"), r"stages\[0\]\.stride must be a positive integer, got '2'"),
    (lambda d: d["stages"][0].update(block=[3]), r"stages\[0\]\.block must be a mapping, got list"),
    (lambda d: d["stem"][0].update(out=16.0), r"stem\[0\]\.out must be a positive integer, got 16\.0"),
    (lambda d: d["stem"][0].update(kernel="3"), r"layer stem0 .*kernel must be an integer, got '3'"),
    (lambda d: d["stem"][0].update(kernel=3.0), r"layer stem0 .*kernel must be an integer, got 3\.0"),
    (lambda d: d["stem"][0].update(kernel=True), r"layer stem0 .*kernel must be an integer, got True"),
    (lambda d: d["stem"][0].update(bn="no"), r"layer stem0 .*bn must be true or false, got 'no'"),
    (lambda d: d["stem"][0].update(act="mish"), r"layer stem0 .*unknown activation 'mish'"),
    (lambda d: d["stages"][0]["block"].update(expand="x"), r"layer a\.0 .*expand must be a number, positive, got 'x'"),
    (lambda d: d["stages"][0]["block"].update(expand=-1), r"layer a\.0 .*expand must be a number, positive, got -1"),
    (lambda d: d["stages"][0]["block"].update(mid=0), r"layer a\.0 .*mid must be a positive integer, got 0"),
    (lambda d: d["stages"][0]["block"].update(se="yes"), r"layer a\.0 .*se must be a number"),
    (lambda d: d["stages"][0]["block"].update(se=0.25, se_base="input"), r"se_base must be 'mid' .* or 'in'"),
    (lambda d: d["stages"][0]["block"].update(se=0.25, se_divisor=0), r"se_divisor must be a positive integer"),
    (lambda d: d["stages"][0]["block"].update(expand_conv="yes"), r"expand_conv must be true, false or auto"),
    (lambda d: d["stages"][0]["block"].update(expand_conv=False), r"expand_conv is false but the block expands"),
    (lambda d: d["stages"][0]["block"].update(shuffle="no"), r"shuffle must be true or false"),
    (lambda d: d["stages"][0]["block"].update(se=0.25, se_gate="tanh"), r"unknown SE gate 'tanh'"),
    (lambda d: d["stages"][0]["block"].update(op=["mbconv", "skip"]), r"op must be one op; .*candidates"),
    (lambda d: d["stages"][0]["block"].update(per="net"), r"stages\[0\]\.per must be 'layer' or 'stage', not 'net'"),
    (lambda d: d["stages"][0]["block"].update(kernel={"per": "stage"}), r"stages\[0\]\.block\.kernel needs 'choices'"),
    (lambda d: d["stages"][0]["block"].update(kernel=[3, 3]), r"repeated choices in \[3, 3\]"),
    (lambda d: d["stages"][0]["block"].update(kernel=[3, [5]]), r"choices must be single values"),
    (lambda d: d["stages"][0]["block"].update(kernel=[4, 6]), r"layer a\.0 .*kernel 4 must be odd"),
    (lambda d: d["stem"][0].pop("out"), r"stem\[0\] \(conv\) needs 'out' channels"),
    (lambda d: d["stages"][0].pop("width"), r"stages\[0\] needs 'width'"),
    (lambda d: d["head"].append({"op": "conv", "out": 8, "stride": 2}), r"head\[3\]: no strided layer after global pooling"),
    (lambda d: d.update(stem=[], stages=[], head=[]), "the space has no layers"),
])
def test_bad_values_are_named(edit, message):
    with pytest.raises(NasError, match=message):
        space_with(edit)


@pytest.mark.parametrize("edit, where", [
    (lambda d: d["input"].update(resolution=[]), r"input\.resolution"),
    (lambda d: d["stages"][1].update(depth=[]), r"stages\[1\]\.depth"),
    (lambda d: d["stages"][0]["block"].update(kernel=[]), r"stages\[0\]\.block\.kernel"),
    (lambda d: d["stages"][0]["block"].update(kernel={"choices": [], "per": "stage"}), r"stages\[0\]\.block\.kernel"),
])
def test_empty_choice_lists(edit, where):
    with pytest.raises(NasError, match=where + ": an empty list of choices"):
        space_with(edit)


def test_groups_that_do_not_divide_fail_at_load_naming_the_layer():
    # groups 3 divides the stem's input (3) but not its 16 outputs
    with pytest.raises(NasError, match=r"g\.yaml: layer stem0 .*groups 3 must divide in_ch 3 and out_ch 16"):
        space_with(lambda d: d["stem"][0].update(groups=3))
    # only some choices are bad: stage b's first layer with width 24 reads 16 channels
    # and expands 6x to 96; groups 3 divides 24 and 96 but not 16
    with pytest.raises(NasError, match=r"layer b\.0 with \{.*\}: .*groups 3 must divide in_ch 16"):
        space_with(lambda d: d["stages"][1]["block"].update(groups=[1, 3]))


def test_unknown_op_suggests_the_closest():
    with pytest.raises(NasError, match=r"layer a\.0 .*unknown op 'mbcovn' \(did you mean 'mbconv'\?\); chain spaces know"):
        space_with(lambda d: d["stages"][0]["block"].update(op="mbcovn"))
    with pytest.raises(NasError, match=r"unknown op 'gapp' \(did you mean 'gap'\?\)"):
        space_with(lambda d: d["head"][1].update(op="gapp"))


# ----------------------------------------------------------------------------- what decisions do

def test_fixed_space_has_one_arch_and_its_layers():
    space = space_with()
    assert space.decisions == () and space.size == 1
    layers = space.layers(space.arch({}))
    assert [s.op for s in layers] == ["conv", "mbconv", "mbconv", "mbconv", "mbconv", "conv", "gap", "linear"]
    assert [(s.in_ch, s.out_ch, s.in_size, s.stride) for s in layers[:5]] == [
        (3, 16, 32, 2), (16, 16, 16, 1), (16, 16, 16, 1), (16, 24, 16, 2), (24, 24, 8, 1)]
    assert layers[-1].out_ch == 10 and layers[-1].bias


def test_depth_makes_later_layers_inactive():
    space = space_with(lambda d: d["stages"][1].update(depth=[1, 2, 3]))
    assert names(space) == ["b.depth"]
    counts = {}
    for depth in (1, 2, 3):
        arch = space.arch({"b.depth": depth})
        layers = space.layers(arch)
        stage_b = [s for s in layers if s.op == "mbconv" and s.out_ch == 24]
        assert len(stage_b) == depth and stage_b[0].stride == 2 and all(s.stride == 1 for s in stage_b[1:])
        assert len(layers) == 6 + depth  # stem, stage a (2), stage b, head (3)
        counts[depth] = space.counts(arch)
        model = space.build(arch)
        assert sum(p.numel() for p in model.parameters()) == counts[depth]["params"]
    assert counts[1]["macs"] < counts[2]["macs"] < counts[3]["macs"]


def test_per_layer_is_the_default_and_per_stage_shares_one_decision():
    per_layer = space_with(lambda d: d["stages"][1]["block"].update(kernel=[3, 5]))
    assert names(per_layer) == ["b.0.kernel", "b.1.kernel"]
    per_stage = space_with(lambda d: d["stages"][1]["block"].update(kernel=[3, 5], per="stage"))
    assert names(per_stage) == ["b.kernel"]
    for k in (3, 5):
        stage_b = [s for s in per_stage.layers(per_stage.arch({"b.kernel": k})) if s.out_ch == 24 and s.op == "mbconv"]
        assert [s.kernel for s in stage_b] == [k, k]
    # one field can choose its own scope
    mixed = space_with(lambda d: d["stages"][1]["block"].update(kernel={"choices": [3, 5], "per": "stage"},
                                                                 expand=[3, 6]))
    assert names(mixed) == ["b.kernel", "b.0.expand", "b.1.expand"]


def test_candidates_make_one_decision_over_named_blocks():
    space = space_with(lambda d: d["stages"][1].update(block={"candidates": {
        "k3_e1": {"kernel": 3, "expand": 1}, "k5_e6": {"kernel": 5, "expand": 6}, "skip": {"op": "skip"}}}))
    assert names(space) == ["b.0.op", "b.1.op"]
    assert space.decisions[0].choices == ("k3_e1", "k5_e6", "skip")
    layers = lambda a, b: [s for s in space.layers(space.arch({"b.0.op": a, "b.1.op": b}))][3:5]
    first, second = layers("k5_e6", "skip")
    assert (first.op, first.kernel, first.mid_ch, first.stride) == ("mbconv", 5, 96, 2)
    assert second.op == "skip" and second.is_identity
    first, second = layers("skip", "k3_e1")
    # a strided skip that changes width is a 1x1 conv; an e1 block has no expansion conv
    assert first.op == "skip" and not first.is_identity and first.stride == 2
    assert (second.kernel, second.mid_ch) == (3, 0)
    macs = [space.counts(space.arch({"b.0.op": c, "b.1.op": "skip"}))["macs"] for c in ("k3_e1", "k5_e6")]
    assert macs[0] < macs[1]


def test_first_overrides_the_stage_first_layer():
    space = space_with(lambda d: d["stages"][1].update(first={"expand": 1, "kernel": [3, 5]}, depth=3))
    assert names(space) == ["b.0.kernel"]
    stage_b = [s for s in space.layers(space.arch({"b.0.kernel": 5})) if s.out_ch == 24]
    assert [(s.kernel, s.mid_ch) for s in stage_b] == [(5, 0), (3, 144), (3, 144)]


def test_resolution_decision_changes_macs_and_sizes():
    space = space_with(lambda d: d["input"].update(resolution=[16, 32]))
    assert names(space) == ["resolution"]
    small, big = space.arch({"resolution": 16}), space.arch({"resolution": 32})
    assert space.resolution(small) == 16 and space.layers(small)[1].in_size == 8
    c16, c32 = space.counts(small), space.counts(big)
    assert c16["params"] == c32["params"]
    assert c16["resolution"] == 16 and c32["resolution"] == 32
    assert c16["macs"] < c32["macs"] and c16["peak_activation_bytes"] < c32["peak_activation_bytes"]
    # conv MACs scale with the area; only the classifier's 64*10 does not
    assert c32["macs"] - 640 == 4 * (c16["macs"] - 640)
    # an explicit resolution overrides the decision
    assert space.counts(small, resolution=32)["macs"] == c32["macs"]
    model = space.build(small).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_defaults_apply_to_every_layer_unless_overridden():
    def edit(d):
        d["defaults"] = {"act": "hswish"}
        d["stages"][1]["block"]["act"] = "relu6"

    space = space_with(edit)
    acts = [(s.op, s.act) for s in space.layers(space.arch({})) if s.op in ("conv", "mbconv")]
    assert acts == [("conv", "hswish"), ("mbconv", "hswish"), ("mbconv", "hswish"),
                    ("mbconv", "relu6"), ("mbconv", "relu6"), ("conv", "hswish")]


def test_squeeze_excite_and_mid_rounding():
    space = space_with(lambda d: d["stages"][1]["block"].update(expand=4.5, mid_divisor=8, se=0.25, se_divisor=8))
    first = space.layers(space.arch({}))[3]
    # 16 * 4.5 = 72 (a multiple of 8); SE squeezes a quarter, 18, to a multiple of 8 that is
    # not more than 10 % below it: 16 is, so 24
    assert (first.mid_ch, first.se_ch) == (72, 24)
    second = space.layers(space.arch({}))[4]
    assert second.mid_ch == 112 and second.se_ch == 32  # 24 * 4.5 = 108 -> 112; 28 -> 32


def test_choices_equal_in_value_are_one_choice():
    # 3 and 3.0 read back from JSON as the same value, so they cannot be two choices
    with pytest.raises(NasError, match=r"decision 'a\.0\.expand' needs at least two distinct choices, got \[3, 3\.0\]"):
        space_with(lambda d: d["stages"][0]["block"].update(expand=[3, 3.0]))
