"""Quantization-aware supernet training: fake int8 rounding where the int8 ONNX quantizes,
weights shared across precisions, sandwich steps, checkpoints and resumption."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import ConfigError
from nas.space import load_space
from nas.space.builder import build_layer
from nas.space.layers import INT8_OPS
from nas.supernet import qat
from nas.supernet.checkpoint import load_checkpoint
from nas.quant import QuantSettings
from nas.supernet.config import QATConfig, config_from_dict
from nas.supernet.elastic import init_weights
from nas.supernet.slot import SlotModule
from nas.supernet.supernet import Supernet
from nas.supernet.trainer import train
from tests.space.test_op_conformance import EXAMPLES, SMALLER
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)

MICRO_INT8 = """\
name: micro_int8
input: {channels: 3, resolution: 16}
classes: 10
defaults: {act: relu}
stem: [{op: conv, out: 8, kernel: 3, stride: 2}]
stages:
  - {depth: [1, 2], width: [8, 12], stride: 1,
     block: {kernel: [3, 5], expand: [2, 3], se: [0, 0.25], precision: {choices: [fp32, int8], per: stage}}}
  - {depth: [1, 2], width: [16, 24], stride: 2,
     block: {kernel: [3, 5], expand: [2, 4], precision: {choices: [fp32, int8], per: stage}}}
head: [{op: conv, out: 32, kernel: 1, precision: [fp32, int8]}, {op: gap}, {op: linear, out: classes, act: none}]
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("qat")
    (root / "micro_int8.yaml").write_text(MICRO_INT8)
    (root / "micro_fp32.yaml").write_text(MICRO_INT8.replace("micro_int8", "micro_fp32")
                                          .replace(", precision: {choices: [fp32, int8], per: stage}", "")
                                          .replace(", precision: [fp32, int8]", ""))
    digits = load_digits()
    x = np.rint(digits.images * 255 / 16).astype(np.uint8)
    np.savez(root / "digits400.npz", x=x[:400], y=digits.target[:400])
    return root


def config(files: Path, space: str = "micro_int8", **changes):
    data = {"space": str(files / f"{space}.yaml"), "data": {"source": str(files / "digits400.npz"), "crop_padding": 0},
            "epochs": 2, "batch_size": 16, "checkpoint_every": 5, "sampling": {"random_subnets": 2}}
    data.update(changes)
    return config_from_dict(data)


def test_every_int8_op_is_trained_quantization_aware() -> None:
    assert qat.INT8_SUPPORTED_OPS | qat.INT8_REFUSED_OPS == INT8_OPS
    assert not qat.INT8_SUPPORTED_OPS & qat.INT8_REFUSED_OPS


def test_weight_rounding_is_per_channel_symmetric_int8_and_commutes_with_bn_folding() -> None:
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    q = qat.fake_quant_weight(w)
    for c in range(6):
        scale = w[c].abs().max() / 127
        steps = q[c] / scale
        assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4
        assert len(torch.unique(steps.round())) > 25  # 36 weights: not collapsed
    assert (q - w).abs().max() <= w.abs().max() / 127 / 2 + 1e-6
    # folding BN multiplies each output channel by gamma/sigma (any sign): rounding commutes with it
    a = torch.tensor([0.5, -2.0, 3.0, 1.0, -0.1, 7.0]).reshape(6, 1, 1, 1)
    assert torch.allclose(qat.fake_quant_weight(w * a), qat.fake_quant_weight(w) * a, atol=1e-5)
    small = qat.fake_quant_weight(w, reduce_range=True)
    assert (small[0] / (w[0].abs().max() / 64)).round().abs().max() == 64
    zero = torch.zeros(2, 3)
    assert torch.equal(qat.fake_quant_weight(zero), zero)  # an all-zero channel stays zero (scale 1)


def test_activation_rounding_is_uint8_over_the_batch_range_with_zero_exact_and_straight_through() -> None:
    x = torch.linspace(-1.0, 3.0, 1000, requires_grad=True)
    y = qat.fake_quant_activation(x)
    assert len(torch.unique(y.detach())) <= 256 and (y - x).abs().max() <= 4.0 / 255 / 2 + 1e-6
    assert (y.detach() == 0).any()  # 0 is a level: relu's zero and padding are exact
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight through: the batch range holds every value
    relu = torch.rand(100)
    assert qat.fake_quant_activation(relu).min() >= 0


def test_mbconv_quantizes_where_its_int8_onnx_does() -> None:
    spec = replace(EXAMPLES["mbconv"], act="relu", precision="int8")
    assert spec.residual and spec.se_ch and spec.mid_ch
    module = build_layer(spec)
    points = qat.quant_points(module, spec)
    # input (boundary Q), expand, depthwise, SE: pooled, squeeze act, pre-gate, gate, product, project, residual sum
    assert len(points) == 10 and points[0] == (module, "in") and points[-1] == (module, "out")
    inside = qat.quant_points(module, replace(spec, in_precision="int8"))
    assert inside == points[1:]  # after an int8 block the input is already quantized
    hswish = replace(spec, act="hswish")  # hswish runs in float between a DQ and a Q: its input is quantized too
    assert len(qat.quant_points(build_layer(hswish), hswish)) == 12


@pytest.mark.parametrize("op", sorted(INT8_OPS))
def test_supernet_slot_and_standalone_network_quantize_each_int8_op_the_same(op) -> None:
    spec, smaller = replace(EXAMPLES[op], precision="int8"), replace(SMALLER[op], precision="int8")
    slot = SlotModule([EXAMPLES[op], spec, smaller]).train()
    init_weights(slot, torch.Generator().manual_seed(0))
    x = torch.randn(4, *qat_input(spec), generator=torch.Generator().manual_seed(1))
    settings = QuantSettings()
    plain, quantized = slot(x, spec), slot(x, spec, settings)
    assert quantized.shape == plain.shape
    assert torch.allclose(quantized, plain, atol=0.1 * float(plain.detach().abs().max()))  # int8 rounding: close, not equal
    assert not torch.equal(quantized, plain)
    assert torch.equal(slot(x, EXAMPLES[op], settings), slot(x, EXAMPLES[op]))  # a float variant runs unchanged
    # the same rounding on the builder's module holding the slot's weights
    module = build_layer(spec).train()
    module.load_state_dict(slot.state_for(spec))
    net = qat.FakeQuantNetwork(torch.nn.Sequential(module), [spec])
    assert torch.allclose(net(x), quantized, atol=1e-5)
    if op == "gap":
        return  # no weights
    # gradients reach the shared float weights through the rounding
    slot(x, spec, settings).square().sum().backward()
    grads = [p.grad for p in slot.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def qat_input(spec) -> tuple[int, ...]:
    return (spec.in_ch,) if spec.op == "linear" else (spec.in_ch, spec.in_size, spec.in_size)


def test_supernet_quantizes_only_the_int8_layers_of_the_active_arch(files) -> None:
    space = load_space(str(files / "micro_int8.yaml"))
    net = Supernet(space, seed=0).train()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    precisions = [d.name for d in space.decisions if d.name.endswith("precision")]
    base = space.sample(1)
    fp32 = space.arch({**dict(base), **{p: "fp32" for p in precisions}})
    int8 = space.arch({**dict(base), **{p: "int8" for p in precisions}})
    outputs = {}
    for arch in (fp32, int8):
        net.set_active(arch)
        for setting in (None, QuantSettings()):
            net.qat = setting
            outputs[arch["s1.precision"], setting is not None] = net(x)
    assert torch.equal(outputs["fp32", False], outputs["fp32", True])  # nothing int8: QAT changes nothing
    assert torch.equal(outputs["fp32", False], outputs["int8", False])  # one set of float weights for both
    assert not torch.equal(outputs["int8", False], outputs["int8", True])


def test_qat_setting_switch_start_and_old_runs(files) -> None:
    assert config(files, qat=True).qat == QATConfig()
    assert config(files, qat=False).qat is None and config(files).qat is None  # off by default
    assert config(files, qat={"start_epoch": 1}).qat.active(1) and not config(files, qat={"start_epoch": 1}).qat.active(0)
    with pytest.raises(ConfigError, match="qat.start_epoch 2 must be below epochs"):
        config(files, qat={"start_epoch": 2})
    with pytest.raises(ConfigError, match="qat.*start_epochs"):
        config(files, qat={"start_epochs": 1})
    assert "qat" not in config(files).model_dump(exclude_none=True)  # a run without QAT records what it did before


def test_qat_training_resumes_exactly_and_changes_only_int8_subnets(files) -> None:
    """A kill mid-epoch 2 (QAT starts at epoch 2) and a resume end with the uninterrupted
    weights; the run differs from float training; a float-only space is unaffected."""
    settings = {"qat": {"start_epoch": 1}}
    whole, killed, plain = files / "qat-whole", files / "qat-killed", files / "plain"
    train(config(files, **settings), whole, progress=False)
    train(config(files, **settings), killed, progress=False, max_steps=30)  # killed inside epoch 2
    state = load_checkpoint(killed / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] > 0  # resumes mid-epoch, in the QAT part
    train(config(files, **settings), killed, progress=False)
    a, b = load_checkpoint(whole / "checkpoint.pt")["model"], load_checkpoint(killed / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(config(files), plain, progress=False)
    c = load_checkpoint(plain / "checkpoint.pt")["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)
    history = load_checkpoint(whole / "checkpoint.pt")["history"]
    assert history[-1]["val_acc_largest"] > 0.3  # still learns (chance 0.1)


@pytest.mark.slow
def test_qat_on_a_float_only_space_trains_exactly_as_without(files) -> None:
    with_qat, without = files / "fp32-qat", files / "fp32-plain"
    train(config(files, "micro_fp32", epochs=1, qat=True), with_qat, progress=False)
    train(config(files, "micro_fp32", epochs=1), without, progress=False)
    a, b = load_checkpoint(with_qat / "checkpoint.pt")["model"], load_checkpoint(without / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("op", sorted(INT8_OPS))
@pytest.mark.parametrize("act", ["relu", "hswish", "none"])
def test_qat_rounds_exactly_the_tensors_the_int8_onnx_graph_quantizes(op, act) -> None:
    from nas.hardware.onnx_graph import network_graph

    spec = EXAMPLES[op] if op in ("gap", "skip") else replace(EXAMPLES[op], act=act)
    spec = replace(spec, precision="int8")
    assert len(qat.quant_points(build_layer(spec), spec)) == len(network_graph([spec], batch=None).quantized)


def test_qat_rounds_the_tensors_of_mixed_precision_networks_their_onnx_graph_quantizes() -> None:
    from nas.hardware.onnx_graph import network_graph

    space = load_space("tiny_mbconv_int8")
    for arch in space.decode_batch(space.sample_codes(3, 8)):
        layers = space.layers(arch)
        points = sum(len(qat.quant_points(build_layer(s), s)) for s in layers if s.precision == "int8")
        assert points == len(network_graph(layers, batch=None).quantized), arch.arch_id
