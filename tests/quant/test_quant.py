"""Post-training int8 quantization (issue 15, item 4): the torch integer simulation agrees
with onnxruntime running the int8 ONNX written from the same QuantizedNet, the three
calibration methods give valid ranges, weights are quantized as quantize_static does,
float archs score as before and int8 archs score their quantized accuracy."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization.quant_utils import quantize_data
from onnx import TensorProto

from nas.errors import NasError
from nas.hardware.onnx_graph import quantize_weights
from nas.quant import QuantSettings, quantize
from nas.space.registry import load_space, space_from_dict
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)

PER_STAGE = {"choices": ["fp32", "int8"], "per": "stage"}

# every activation and gate the chain spaces use: relu6, hswish (float fallback between DQ
# and Q) with an hsigmoid SE, swish (QLinearSigmoid x QLinearMul) with a sigmoid SE
ACTS = space_from_dict({
    "name": "acts_int8", "input": {"channels": 3, "resolution": 16}, "classes": 10,
    "stem": [{"op": "conv", "out": 8, "kernel": 3, "stride": 2, "act": "hswish", "precision": ["fp32", "int8"]}],
    "stages": [
        {"depth": 2, "width": 16, "stride": 1,
         "block": {"kernel": 3, "expand": 3, "act": "relu6", "precision": PER_STAGE}},
        {"depth": 2, "width": 16, "stride": 2,
         "block": {"kernel": 5, "expand": 3, "act": "hswish", "se": 0.25, "se_gate": "hsigmoid", "precision": PER_STAGE}},
        {"depth": 2, "width": 24, "stride": 1,
         "block": {"kernel": 3, "expand": 3, "act": "swish", "se": 0.25, "precision": PER_STAGE}}],
    "head": [{"op": "conv", "out": 32, "kernel": 1, "act": "hswish", "precision": ["fp32", "int8"]},
             {"op": "gap", "precision": ["fp32", "int8"]},
             {"op": "linear", "out": "classes", "act": "none", "precision": ["fp32", "int8"]}]}, "acts_int8.yaml")


def _trained_looking(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights with non-trivial batch-norm statistics (BN folding matters)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def _session(blob: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


def _agreement(space, arch, seed: int, n: int = 64, method: str = "minmax") -> dict:
    torch.manual_seed(seed)
    layers = space.layers(arch)
    model = _trained_looking(space.build(arch), seed)
    res = space.resolution(arch)
    g = torch.Generator().manual_seed(seed)
    calib = torch.randn(48, space.in_channels, res, res, generator=g)
    net = quantize(model, layers, calib, QuantSettings(method=method, calib_images=48))
    x = torch.randn(n, space.in_channels, res, res, generator=g)
    ours = net(x).numpy()
    theirs = _session(net.to_onnx()).run(None, {"input": x.numpy()})[0]
    last_q = [n_ for n_ in net.graph.model.graph.node if n_.op_type == "QuantizeLinear"]
    step = float(net.params()["act_scale"][-1]) if last_q and layers[-1].precision == "int8" else None
    diff = np.abs(ours - theirs)
    return {"top1": float((ours.argmax(1) == theirs.argmax(1)).mean()), "max_diff": float(diff.max()),
            "steps": None if step is None else float(diff.max() / step), "net": net, "layers": layers}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_simulation_is_onnxruntime_on_random_tiny_mbconv_int8_archs(seed) -> None:
    space = load_space("tiny_mbconv_int8")
    found = _agreement(space, space.sample(seed), seed)
    assert found["top1"] == 1.0
    if found["steps"] is not None:
        assert found["steps"] <= 1.001
    else:
        assert found["max_diff"] < 1e-3


def test_a_mixed_arch_and_an_all_int8_arch_agree_bit_exactly_inside_int8() -> None:
    space = load_space("tiny_mbconv_int8")
    base = dict(space.sample(7))
    precision = [d.name for d in space.decisions if d.name.endswith("precision")]
    mixed = space.arch({**base, **{p: ("int8" if i % 2 else "fp32") for i, p in enumerate(precision)}})
    every = space.arch({**base, **{p: "int8" for p in precision}})
    for arch in (mixed, every):
        found = _agreement(space, arch, 7)
        assert {s.precision for s in found["layers"]} == ({"fp32", "int8"} if arch is mixed else {"int8"})
        assert found["top1"] == 1.0
    assert found["max_diff"] == 0.0  # all int8: every kernel simulated bit-exactly


@pytest.mark.parametrize("seed", [0, 1])
def test_hswish_hsigmoid_swish_and_sigmoid_blocks_agree(seed) -> None:
    precision = [d.name for d in ACTS.decisions if d.name.endswith("precision")]
    arch = ACTS.arch({**dict(ACTS.sample(seed)), **{p: "int8" for p in precision}})
    found = _agreement(ACTS, arch, seed)
    assert found["top1"] == 1.0 and found["steps"] <= 1.001
    ops = {n.op_type for n in found["net"].graph.model.graph.node}
    assert {"HardSwish", "HardSigmoid", "Sigmoid", "Mul", "Add"} <= ops


def test_the_int8_model_fuses_into_integer_kernels(tmp_path) -> None:
    space = load_space("tiny_mbconv_int8")
    precision = [d.name for d in space.decisions if d.name.endswith("precision")]
    arch = space.arch({**dict(space.sample(3)), **{p: "int8" for p in precision}})
    net = _agreement(space, arch, 3, n=4)["net"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(net.to_onnx(), options, providers=["CPUExecutionProvider"])
    import onnx

    ops = [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]
    assert "QLinearConv" in ops and "QGemm" in ops and "Conv" not in ops


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_every_calibration_method_gives_valid_ranges(method) -> None:
    space = load_space("tiny_mbconv_int8")
    precision = [d.name for d in space.decisions if d.name.endswith("precision")]
    arch = space.arch({**dict(space.sample(4)), **{p: "int8" for p in precision}})
    found = _agreement(space, arch, 4, n=32, method=method)
    params = found["net"].params()
    scale, zp = params["act_scale"], params["act_zero_point"]
    assert len(scale) == len(params["act_tensor"]) > 10
    assert np.all(np.isfinite(scale)) and np.all(scale > 0) and zp.dtype == np.uint8
    # a relu/relu6 output (range starting at 0) has zero point 0, and relu6 never exceeds 6
    implied = dict(found["net"].graph.quantized)
    for name, s, z in zip(params["act_tensor"], scale, zp):
        if implied[str(name)] in ("relu", "relu6"):
            assert z == 0
        if implied[str(name)] == "relu6":
            assert s * 255 <= 6 * (1 + 1e-6)
    assert found["top1"] == 1.0
    if method != "minmax":  # a histogram threshold clips: never wider than the min/max range
        minmax = _agreement(space, arch, 4, n=4)["net"].params()
        assert np.all(scale <= minmax["act_scale"] * (1 + 1e-6))
        assert np.any(scale < minmax["act_scale"] * 0.999)


def test_weights_are_quantized_exactly_as_quantize_static_does() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 8, 3, 3)).astype(np.float32) * rng.uniform(0.01, 3, (24, 1, 1, 1)).astype(np.float32)
    w[5] = 0  # an all-zero channel gets scale 1
    for reduce_range in (False, True):
        q, scale = quantize_weights(w, reduce_range)
        for c in range(len(w)):
            zp, s, qc = quantize_data(w[c].flatten(), TensorProto.INT8, True, reduce_range=reduce_range)
            assert np.float32(s) == scale[c] and int(zp) == 0
            assert np.array_equal(qc, q[c].flatten())
        assert np.abs(q).max() <= (64 if reduce_range else 127)


def test_reduce_range_keeps_weights_in_seven_bits_and_still_agrees() -> None:
    space = load_space("tiny_mbconv_int8")
    arch = space.sample(2)
    layers = space.layers(arch)
    model = _trained_looking(space.build(arch), 2)
    calib = torch.randn(8, 3, 32, 32)
    net = quantize(model, layers, calib, QuantSettings(calib_images=8, reduce_range=True))
    weights = [v for k, v in net.params().items() if v.dtype == np.int8 and v.ndim > 1]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 64
    x = torch.randn(16, 3, 32, 32)
    assert np.array_equal(net(x).numpy().argmax(1), _session(net.to_onnx()).run(None, {"input": x.numpy()})[0].argmax(1))


def test_too_little_calibration_data_is_one_line_naming_the_method_and_count() -> None:
    space = load_space("tiny_mbconv_int8")
    arch = space.sample(0)
    model = space.build(arch).eval()
    with pytest.raises(NasError, match="calibration method minmax needs at least 1 calibration images, got 0"):
        quantize(model, space.layers(arch), torch.zeros(0, 3, 32, 32), QuantSettings())
    for method in ("percentile", "entropy"):
        with pytest.raises(NasError, match=f"calibration method {method} needs at least 32 .*, got 8$"):
            quantize(model, space.layers(arch), torch.zeros(8, 3, 32, 32), QuantSettings(method=method))


def test_weights_that_do_not_fit_the_arch_are_refused() -> None:
    space = load_space("tiny_mbconv_int8")
    a, b = space.sample(0), space.sample(1)
    with pytest.raises(NasError, match="do not fit|blocks but the arch"):
        quantize(space.build(a).eval(), space.layers(b), torch.randn(4, 3, 32, 32), QuantSettings(calib_images=4))


def test_ofa_mbv3_int8_with_its_long_reductions_agrees_bit_exactly() -> None:
    """ofa_mbv3 at 128 px: hswish and hsigmoid blocks, and 960- and 1280-wide reductions that
    the simulation accumulates in float32 slices (too long for one exact float32 sum)."""
    space = load_space("ofa_mbv3_int8")
    precision = [d.name for d in space.decisions if d.name.endswith("precision")]
    arch = space.arch({**dict(space.sample(0)), **{p: "int8" for p in precision}, "resolution": 128})
    found = _agreement(space, arch, 0, n=8)
    assert found["top1"] == 1.0 and found["max_diff"] == 0.0
