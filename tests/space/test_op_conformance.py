"""Op conformance: every op of the LayerSpec vocabulary is handled, or explicitly refused,
by each consumer that dispatches on `spec.op`, and every handled op really runs there.

Adding an op to nas.space.layers.OPS fails this file until the counters, the builder,
the ONNX emitter, the supernet families and the predictor features each declare it
(in their dispatch table, or in REFUSED_OPS) and the op has an example below, which is
then counted, built, run in torch and in onnxruntime, and checked across them.

Precision is held the same way: each consumer declares which ops with an int8 form
(layers.INT8_OPS) it handles in int8 (INT8_SUPPORTED_OPS) or refuses (INT8_REFUSED_OPS),
every handled one runs there in each of the three quantized in/out combinations, and an
op without an int8 form is refused by LayerSpec itself in one line.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.errors import ConfigError, NasError
from nas.hardware import onnx_graph
from nas.hardware.onnx_graph import input_shape, layer_model, model_input, output_shape, weight_initializer_bytes
from nas.predictors import features
from nas.space import builder, counters
from nas.space.builder import build_layer
from nas.space.counters import (
    layer_macs,
    layer_params,
    layer_peak_bytes,
    layer_peak_elements,
    layer_weight_bytes,
    layer_weight_params,
)
from nas.space.layers import INT8_OPS, OPS, LayerSpec
from nas.supernet import families
from nas.supernet.elastic import init_weights
from nas.supernet.slot import SlotModule
from nas.prune import network as prune_network
from tests.space.test_counters import deployed_weights
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)

CONSUMERS = {"counters": counters, "builder": builder, "onnx": onnx_graph, "supernet": families,
             "features": features, "prune": prune_network}

# One block per op, with the op's optional parts switched on where it has them.
EXAMPLES: dict[str, LayerSpec] = {
    "conv": LayerSpec("conv", 3, 8, 9, kernel=3, stride=2, act="relu"),
    "mbconv": LayerSpec("mbconv", 8, 8, 8, kernel=5, mid_ch=24, act="hswish", se_ch=8),
    "skip": LayerSpec("skip", 8, 16, 8, stride=2),
    "gap": LayerSpec("gap", 8, 8, 4),
    "linear": LayerSpec("linear", 8, 10, 1, bn=False, bias=True),
    "norm": LayerSpec("norm", 8, 8, 6, act="relu"),
    "avgpool": LayerSpec("avgpool", 8, 8, 7, kernel=3, stride=2),
    "nb201_cell": LayerSpec("nb201_cell", 8, 8, 6, edges=("nor_conv_3x3", "skip_connect", "nor_conv_1x1",
                                                          "avg_pool_3x3", "none", "nor_conv_3x3")),
    "resblock": LayerSpec("resblock", 8, 16, 8, stride=2),
    "patch_embed": LayerSpec("patch_embed", 3, 16, 8, kernel=4, stride=4, cls_token=True),
    "encoder": LayerSpec("encoder", 16, 16, 2, mid_ch=40, act="gelu", cls_token=True, heads=2, head_dim=6),
    "token_pool": LayerSpec("token_pool", 16, 16, 2, cls_token=True),
}
# A second, smaller variant of each, as a supernet slot would hold beside the first.
SMALLER: dict[str, LayerSpec] = {
    "conv": replace(EXAMPLES["conv"], out_ch=6),
    "mbconv": replace(EXAMPLES["mbconv"], mid_ch=16, kernel=3, se_ch=4),
    "skip": replace(EXAMPLES["skip"], out_ch=12),
    "gap": replace(EXAMPLES["gap"], in_ch=6, out_ch=6),
    "linear": replace(EXAMPLES["linear"], in_ch=6),
    "norm": replace(EXAMPLES["norm"], in_ch=6, out_ch=6),
    "avgpool": replace(EXAMPLES["avgpool"], in_ch=6, out_ch=6),
    "nb201_cell": replace(EXAMPLES["nb201_cell"], edges=("none", "nor_conv_1x1", "skip_connect", "none",
                                                          "avg_pool_3x3", "nor_conv_3x3")),
    "resblock": replace(EXAMPLES["resblock"], out_ch=12),
    "patch_embed": replace(EXAMPLES["patch_embed"], out_ch=12),
    "encoder": replace(EXAMPLES["encoder"], mid_ch=24, head_dim=0),
    "token_pool": replace(EXAMPLES["token_pool"], in_ch=12, out_ch=12),
}


@pytest.mark.parametrize("name", CONSUMERS)
def test_every_consumer_handles_or_refuses_every_op(name) -> None:
    module = CONSUMERS[name]
    handled, refused = set(module.SUPPORTED_OPS), set(module.REFUSED_OPS)
    assert not handled & refused, f"{name} both handles and refuses {sorted(handled & refused)}"
    assert handled | refused == set(OPS), (f"{name}: ops neither handled nor refused: "
                                          f"{sorted(set(OPS) - handled - refused)}; unknown: {sorted((handled | refused) - set(OPS))}")


def test_every_op_has_an_example() -> None:
    assert set(EXAMPLES) == set(SMALLER) == set(OPS)
    assert all(EXAMPLES[op].op == op == SMALLER[op].op for op in OPS)


@pytest.mark.parametrize("op", OPS)
def test_counters_builder_and_onnx_agree_on_each_op(op) -> None:
    spec = EXAMPLES[op]
    torch.manual_seed(0)
    module = build_layer(spec).eval()
    x = torch.randn(input_shape(spec))
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        y = module(x)
    assert layer_params(spec) == sum(p.numel() for p in module.parameters())
    assert 2 * layer_macs(spec) == flops.get_total_flops()
    assert layer_weight_params(spec) == deployed_weights(module, x)
    assert layer_peak_elements(spec) >= y.numel() > 0
    expected = output_shape(spec)
    assert list(y.shape) == expected and torch.isfinite(y).all()

    model = layer_model(spec)
    assert weight_initializer_bytes(model) == 4 * layer_weight_params(spec)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})
    assert list(out.shape) == expected and np.isfinite(out).all()


@pytest.mark.parametrize("op", OPS)
def test_features_describe_each_op(op) -> None:
    vector = features.layer_vector(EXAMPLES[op])
    assert vector["macs"] == layer_macs(EXAMPLES[op]) and vector["blocks"] == 1.0
    assert all(np.isfinite(v) for v in vector.values())


@pytest.mark.parametrize("op", OPS)
def test_supernet_slots_share_weights_for_handled_ops_and_refuse_the_rest(op) -> None:
    big, small = EXAMPLES[op], SMALLER[op]
    assert SlotModule([big]).family(big).__class__.__name__ in ("Fixed", "Weightless", "CellFamily")
    if op in families.REFUSED_OPS:
        with pytest.raises(ConfigError, match=f"variants of op '{op}'"):
            SlotModule([big, small])
        return
    slot = SlotModule([big, small]).eval()
    init_weights(slot, torch.Generator().manual_seed(0))
    for spec in (big, small):
        x = torch.randn(input_shape(spec))
        extracted = build_layer(spec).eval()
        extracted.load_state_dict(slot.state_for(spec))  # the builder's module with the inherited weights
        with torch.no_grad():
            y = slot(x, spec)
            assert torch.isfinite(y).all() and torch.allclose(y, extracted(x), atol=1e-6)


QUANTIZED = (("int8", "int8"), ("int8", "fp32"), ("fp32", "int8"))  # (precision, in_precision)


@pytest.mark.parametrize("name", CONSUMERS)
def test_every_consumer_handles_or_refuses_int8_for_every_op_that_has_it(name) -> None:
    module = CONSUMERS[name]
    handled, refused = set(module.INT8_SUPPORTED_OPS), set(module.INT8_REFUSED_OPS)
    assert not handled & refused and handled | refused == set(INT8_OPS), name


@pytest.mark.parametrize("op", sorted(set(OPS) - INT8_OPS))
def test_an_op_without_an_int8_form_is_refused_in_one_line(op) -> None:
    with pytest.raises(NasError, match=f"op {op} has no int8 form") as info:
        replace(EXAMPLES[op], precision="int8")
    assert "\n" not in str(info.value)
    assert replace(EXAMPLES[op], in_precision="int8").key.endswith("precision=fp32 in_precision=int8")  # reads int8


@pytest.mark.parametrize("op", sorted(INT8_OPS))
@pytest.mark.parametrize("precision,in_precision", QUANTIZED)
def test_quantized_blocks_count_build_run_and_describe(op, precision, in_precision) -> None:
    spec = replace(EXAMPLES[op], precision=precision, in_precision=in_precision)
    float_spec = EXAMPLES[op]
    assert spec.key.endswith(f"precision={precision} in_precision={in_precision}") and float_spec.key in spec.key
    # torch: the float module, whatever the precision
    torch.manual_seed(0)
    module = build_layer(spec)
    assert [p.shape for p in module.parameters()] == [p.shape for p in build_layer(float_spec).parameters()]
    # counters: the weights as the int8 graph stores them, activations at their width
    model = layer_model(spec)
    assert weight_initializer_bytes(model) == layer_weight_bytes(spec)
    width = 1 if precision == "int8" else 4
    assert layer_peak_bytes(spec) >= layer_peak_elements(spec) * width
    if precision == "fp32":
        assert layer_weight_bytes(spec) == 4 * layer_weight_params(spec)
    # onnxruntime runs it, reading and writing the precision of its ends
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": model_input(spec)})
    assert out.dtype == (np.uint8 if precision == "int8" else np.float32)
    assert out.size == spec.out_ch * (1 if op in ("gap", "linear") else spec.out_size ** 2)
    # features: finite, with the int8 columns
    vector = features.layer_vector(spec)
    assert vector["int8_blocks"] == float(precision == "int8") and all(np.isfinite(v) for v in vector.values())
    # supernet: the fp32 and int8 variants of a slot share one set of weights
    slot = SlotModule([float_spec, spec]).eval()
    init_weights(slot, torch.Generator().manual_seed(0))
    x = torch.randn(input_shape(spec))
    with torch.no_grad():
        assert torch.equal(slot(x, spec), slot(x, float_spec))
