"""Precision as a block field (issue 15, items 1-3): the grammar, LayerSpec keys, the
counters at the stored width, the int8 QDQ micro-models onnxruntime fuses, device
profiles that say which precisions they run, and an int8 LUT built, calibrated and
validated like a float one."""
from __future__ import annotations

import collections
import csv
import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from nas.errors import CompatibilityError, ConfigError, NasError
from nas.hardware.devices import device_from_dict, load_device
from nas.hardware.kit import import_results, write_kit
from nas.hardware.lut import LUT, LUTCost
from nas.hardware.onnx_graph import layer_model, model_input, network_model, weight_initializer_bytes
from nas.hardware.profiling import build_lut
from nas.hardware.validation import validate_lut
from nas.space.layers import LayerSpec
from nas.space.registry import load_space, space_from_dict
from nas.space.tables import unique_layers
from tests.hw_helpers import FAST, SMALL_SPACE

ROOT = Path(__file__).resolve().parents[2]
PER_STAGE = {"choices": ["fp32", "int8"], "per": "stage"}

# the small hardware-test space with a precision per stage, stem and head layer
SMALL_INT8 = {**SMALL_SPACE, "name": "small_int8",
              "stem": [{**SMALL_SPACE["stem"][0], "precision": ["fp32", "int8"]}],
              "stages": [{**st, "block": {**st["block"], "precision": PER_STAGE}} for st in SMALL_SPACE["stages"]],
              "head": [{"op": "gap", "precision": ["fp32", "int8"]},
                       {"op": "linear", "out": "classes", "precision": ["fp32", "int8"]}]}


def small_int8(**change):
    return space_from_dict({**SMALL_INT8, **change}, "small_int8.yaml")


def _session(model: onnx.ModelProto, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- grammar and keys

def test_float_blocks_keep_their_keys_and_int8_ones_name_both_precisions() -> None:
    spec = LayerSpec("conv", 3, 16, 32, kernel=3, act="relu")
    assert spec.key == "conv 3>16 s32 kernel=3 act=relu" and not spec.quantized
    assert LayerSpec("conv", 3, 16, 32, kernel=3, act="relu", precision="int8").key == \
        "conv 3>16 s32 kernel=3 act=relu precision=int8 in_precision=fp32"
    assert LayerSpec("gap", 8, 8, 4, in_precision="int8").key == "gap 8>8 s4 precision=fp32 in_precision=int8"
    again = LayerSpec.from_dict(json.loads(json.dumps(LayerSpec("gap", 8, 8, 4, precision="int8").to_dict())))
    assert again.precision == "int8" and again.in_precision == "fp32"


def test_the_int8_spaces_make_the_float_spaces_networks_when_every_precision_is_fp32() -> None:
    for name in ("tiny_mbconv", "ofa_mbv3"):
        float_space, int8_space = load_space(name), load_space(f"{name}_int8")
        precision = [d.name for d in int8_space.decisions if d.name.endswith("precision")]
        assert precision and {d.name for d in int8_space.decisions} - set(precision) == {d.name for d in float_space.decisions}
        for seed in range(5):
            arch = float_space.sample(seed)
            same = int8_space.arch({**dict(arch), **{p: "fp32" for p in precision}})
            assert [s.key for s in int8_space.layers(same, 128)] == [s.key for s in float_space.layers(arch, 128)]


def test_in_precision_is_the_producers_precision_through_depth_and_per_layer_choices() -> None:
    space = small_int8(stages=[
        {"depth": [1, 2], "width": 8, "block": {"kernel": 3, "expand": 1, "precision": ["fp32", "int8"]}},
        {"depth": 1, "width": 16, "stride": 2, "block": {"kernel": 3, "expand": 3}}])
    first_of_s2 = next(s for s in space.slots() if s.label == "s2")
    # per-layer precision with a depth: the slot reads the depth and both layers' precisions
    assert {"s1.depth", "s1.0.precision", "s1.1.precision"} <= set(first_of_s2.deps)
    for depth in (1, 2):
        for p0 in ("fp32", "int8"):
            for p1 in ("fp32", "int8"):
                values = {d.name: d.choices[0] for d in space.decisions}
                values.update({"s1.depth": depth, "s1.0.precision": p0, "s1.1.precision": p1, "stem0.precision": "int8"})
                layers = space.layers(space.arch(values))
                assert layers[0].in_precision == "fp32"
                assert all(b.in_precision == a.precision for a, b in zip(layers, layers[1:]))
                assert layers[depth + 1].in_precision == (p1 if depth == 2 else p0)
    # a per-stage precision: the next stage reads that one decision, not the depth
    space = small_int8()
    s2 = next(s for s in space.slots() if s.label == "s2.0")
    assert "s1.precision" in s2.deps and "s1.depth" not in s2.deps


def test_a_candidate_can_set_the_precision_and_the_next_layer_reads_it() -> None:
    data = json.loads(json.dumps(SMALL_SPACE))
    data["stages"] = [{"depth": 1, "width": 8, "block": {"expand": 1, "candidates": {
        "k3_int8": {"kernel": 3, "precision": "int8"}, "k5": {"kernel": 5}}}}]
    space = space_from_dict(data, "cand.yaml")
    for choice, precision in (("k3_int8", "int8"), ("k5", "fp32")):
        arch = space.arch({**{d.name: d.choices[0] for d in space.decisions}, "s1.op": choice})
        layers = space.layers(arch)
        assert layers[1].precision == precision and layers[2].in_precision == precision


def test_a_space_wide_precision_is_the_default_and_a_list_there_is_one_decision() -> None:
    plain = {k: v for k, v in SMALL_SPACE.items()}
    space = space_from_dict({**plain, "name": "all8", "precision": "int8"}, "all8.yaml")
    assert {s.precision for s in unique_layers(space)} == {"int8"}
    space = space_from_dict({**plain, "name": "either", "precision": ["fp32", "int8"]}, "either.yaml")
    assert [d.name for d in space.decisions if "precision" in d.name] == ["precision"]
    arch = space.arch({**{d.name: d.choices[0] for d in space.decisions}, "precision": "int8"})
    assert {s.precision for s in space.layers(arch)} == {"int8"}
    # and the float space itself is unchanged by the default
    assert space_from_dict({**plain, "precision": "fp32"}, "s.yaml").fingerprint() == \
        space_from_dict(plain, "s.yaml").fingerprint()


@pytest.mark.parametrize("where", ["top", "block", "stem", "candidate"])
def test_an_unknown_precision_in_a_space_is_refused_with_the_closest_one(where) -> None:
    data = json.loads(json.dumps(SMALL_SPACE))
    if where == "top":
        data["precision"] = "int4"
    elif where == "block":
        data["stages"][0]["block"]["precision"] = ["fp32", "int4"]
    elif where == "stem":
        data["stem"][0]["precision"] = {"choices": ["fp23", "int8"]}
    else:
        data["stages"][0]["block"]["candidates"] = {"a": {"kernel": 3, "precision": "int4"}, "b": {"kernel": 5}}
        del data["stages"][0]["block"]["kernel"]
    with pytest.raises(NasError) as info:
        space_from_dict(data, "bad.yaml")
    message = str(info.value)
    assert "unknown precision" in message and "did you mean" in message and "known: fp32, int8" in message
    assert "\n" not in message and message.startswith("bad.yaml: ")


def test_a_norm_layer_in_int8_is_refused_at_load() -> None:
    data = json.loads(json.dumps(SMALL_SPACE))
    data["head"].insert(0, {"op": "norm", "precision": "int8"})
    with pytest.raises(NasError, match="op norm has no int8 form"):
        space_from_dict(data, "bad.yaml")


def test_cli_lists_shows_and_samples_the_int8_spaces() -> None:
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, cwd=ROOT)

    listed = cli("space", "list")
    assert listed.returncode == 0 and "tiny_mbconv_int8" in listed.stdout and "ofa_mbv3_int8" in listed.stdout
    shown = cli("space", "show", "tiny_mbconv_int8", "--json")
    assert shown.returncode == 0 and "s1.precision" in shown.stdout
    sampled = cli("space", "sample", "ofa_mbv3_int8", "-n", "2", "--costs")
    assert sampled.returncode == 0 and len(sampled.stdout.strip().splitlines()) == 2


# ----------------------------------------------------------------------------- counters

@pytest.mark.parametrize("name", ["tiny_mbconv_int8", "ofa_mbv3_int8"])
def test_int8_weight_bytes_equal_the_int8_onnx_initializer_bytes(name) -> None:
    space = load_space(name)
    resolution = 128 if name == "ofa_mbv3_int8" else None
    codes = space.sample_codes(0, 12)
    table = space.table("weight_bytes", resolution)(codes)
    for arch, tabled in zip(space.decode_batch(codes), table):
        layers = space.layers(arch, resolution)
        assert any(s.precision == "int8" for s in layers)
        counted = space.counts(arch, resolution)["weight_bytes"]
        assert weight_initializer_bytes(network_model(layers)) == counted == tabled


def test_int8_bytes_follow_quantize_statics_layout_and_activations_are_one_byte() -> None:
    conv = LayerSpec("conv", 16, 96, 32, act="relu6", precision="int8")
    assert conv.key and weight_initializer_bytes(layer_model(conv)) == 1536 + 17 * 96  # the research's figure
    no_bias = LayerSpec("linear", 256, 10, 1, bn=False, bias=False, precision="int8", in_precision="int8")
    assert weight_initializer_bytes(layer_model(no_bias)) == 2560 + 5 * 10
    space = small_int8()
    all8 = space.arch({**{d.name: d.choices[0] for d in space.decisions},
                       **{d.name: "int8" for d in space.decisions if d.name.endswith("precision")}})
    all32 = space.arch({**dict(all8), **{d.name: "fp32" for d in space.decisions if d.name.endswith("precision")}})
    assert space.counts(all8)["peak_activation_bytes"] * 4 <= space.counts(all32)["peak_activation_bytes"] + \
        4 * 3 * 16 * 16 * 5  # 1 byte per element, plus the quantized input beside the float one
    from nas.space.counters import layer_peak_bytes
    first = space.layers(all8)[0]
    assert layer_peak_bytes(first) >= 3 * 16 * 16 * (4 + 1)  # the boundary: float input and its uint8 copy


# ----------------------------------------------------------------------------- the int8 graphs

KINDS = {
    "stem": LayerSpec("conv", 3, 16, 32, kernel=3, act="relu"),
    "pointwise": LayerSpec("conv", 16, 96, 16, act="relu6"),
    "depthwise": LayerSpec("conv", 32, 32, 16, kernel=3, groups=32, act="relu"),
    "mbconv_se": LayerSpec("mbconv", 24, 24, 16, kernel=3, mid_ch=72, act="relu6", se_ch=16),
    "mbconv_hswish": LayerSpec("mbconv", 40, 40, 8, kernel=5, mid_ch=120, act="hswish", se_ch=32, se_gate="hsigmoid"),
    "mbconv_swish": LayerSpec("mbconv", 16, 24, 16, kernel=3, stride=2, mid_ch=48, act="swish"),
    "skip_conv": LayerSpec("skip", 16, 24, 8, stride=2),
    "head_conv": LayerSpec("conv", 64, 256, 4, act="relu"),
    "gap": LayerSpec("gap", 64, 64, 4),
    "linear": LayerSpec("linear", 256, 10, 1, bn=False, bias=True),
}
INTEGER_KERNELS = {"QLinearConv", "QGemm", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearGlobalAveragePool"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("in_precision", ["int8", "fp32"])
def test_onnxruntime_fuses_each_int8_block_into_integer_kernels(kind, in_precision, tmp_path) -> None:
    spec = replace(KINDS[kind], precision="int8", in_precision=in_precision)
    _session(layer_model(spec), tmp_path / "opt.onnx").run(None, {"input": model_input(spec)})
    ops = collections.Counter(n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node)
    assert ops.keys() & INTEGER_KERNELS, ops
    assert not ops.keys() & {"Conv", "Gemm", "FusedConv", "MatMul", "Add", "GlobalAveragePool"}, ops
    if kind.startswith("mbconv"):
        assert ops["QLinearConv"] == 3 + 2 * bool(spec.se_ch) - (not spec.mid_ch)
        if spec.residual:
            assert ops["QLinearAdd"] == 1
    if in_precision == "int8" and kind != "mbconv_hswish":  # hswish runs in float between a DQ and a Q
        assert not ops.keys() & {"QuantizeLinear", "DequantizeLinear"}, ops  # the uint8 input goes straight in


def test_our_qdq_layout_is_quantize_statics_for_one_block(tmp_path) -> None:
    """quantize_static (U8S8, QDQ, per channel) is the reference: the same float weights
    quantize to the same int8 weights and scales, with the same initializer pattern."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    spec = LayerSpec("mbconv", 24, 24, 8, kernel=3, mid_ch=72, act="relu6", se_ch=16)
    (tmp_path / "float.onnx").write_bytes(network_model([spec], seed=3).SerializeToString())

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": np.random.default_rng(i).standard_normal((1, 24, 8, 8)).astype(np.float32)}
                                 for i in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "ref.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False)
    ref = onnx.load(tmp_path / "ref.onnx")
    ours = network_model([replace(spec, precision="int8")], seed=3)

    def pattern(model):
        return collections.Counter((t.data_type, tuple(t.dims)) for t in model.graph.initializer if len(t.dims) > 0)

    def weights(model):
        """Each Conv's int8 weights, scales and axis, in Conv order."""
        init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        made_by = {n.output[0]: n for n in model.graph.node}
        out = []
        for node in model.graph.node:
            if node.op_type == "Conv":
                dq = made_by[node.input[1]]
                out.append((init[dq.input[0]], init[dq.input[1]], [a.i for a in dq.attribute if a.name == "axis"]))
        return out

    assert pattern(ours) == pattern(ref)
    assert weight_initializer_bytes(ours) == weight_initializer_bytes(ref)
    for (qa, sa, axis_a), (qb, sb, axis_b) in zip(weights(ours), weights(ref), strict=True):
        assert axis_a == axis_b == [0] and np.array_equal(qa, qb) and np.allclose(sa, sb, rtol=1e-6)
    scalar_types = {(t.data_type) for t in ref.graph.initializer if len(t.dims) == 0}
    assert scalar_types == {t.data_type for t in ours.graph.initializer if len(t.dims) == 0}  # float scale, uint8 zp
    ref_ops = collections.Counter(n.op_type for n in ref.graph.node)
    our_ops = collections.Counter(n.op_type for n in ours.graph.node)
    for op in ("Conv", "Add", "Mul", "Sigmoid", "GlobalAveragePool"):
        assert our_ops[op] == ref_ops[op], op
    assert "Clip" not in ref_ops and "Clip" not in our_ops  # relu6 is the output range, as quantize_static writes it


def test_a_mixed_network_runs_with_every_boundary_paid_once() -> None:
    space = load_space("tiny_mbconv_int8")
    for seed in range(6):
        layers = space.layers(space.sample(seed))
        model = network_model(layers)
        out = _session(model).run(None, {"input": model_input(layers[0])})[0]
        assert out.shape == (1, 10) and out.dtype == (np.uint8 if layers[-1].precision == "int8" else np.float32)
        # every boundary into an int8 block is one QuantizeLinear of a float tensor the float part made
        quantized = collections.Counter(n.op_type for n in model.graph.node)["QuantizeLinear"]
        assert quantized >= sum(b.precision == "int8" and b.in_precision == "fp32" for b in layers)
        assert sum(s.precision == "int8" for s in layers) == 0 or quantized > 0
    with pytest.raises(NasError, match="reads fp32 but follows a int8 block"):
        network_model([LayerSpec("conv", 3, 8, 8, precision="int8"), LayerSpec("conv", 8, 8, 8)])


# ----------------------------------------------------------------------------- devices

def test_device_profiles_state_their_precisions() -> None:
    local = load_device("local-cpu")
    assert local.precisions == ("fp32", "int8") and local.reduce_range is False
    assert load_device("pi4-ort").precisions == ("fp32",)
    assert device_from_dict({"name": "x", "backend": "onnxruntime"}).precisions == ("fp32",)
    with pytest.raises(ConfigError, match=r"unknown precision 'int4' \(did you mean 'int8'\?\)"):
        device_from_dict({"name": "x", "backend": "onnxruntime", "precisions": ["fp32", "int4"]}, "x/device.yaml")
    with pytest.raises(ConfigError, match="int8 needs backend onnxruntime"):
        device_from_dict({"name": "x", "backend": "torch", "precisions": ["fp32", "int8"]}, "x/device.yaml")


def test_an_int8_space_on_a_device_without_int8_is_refused_before_profiling(tmp_path) -> None:
    space, pi = small_int8(), load_device("pi4-ort")
    with pytest.raises(CompatibilityError, match="space small_int8 has int8 blocks, but device pi4-ort runs only fp32"):
        build_lut(space, pi, out=tmp_path / "x.csv", protocol=FAST, calibrate=0)
    assert not list(tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "nas.cli", "lut", "build", "--space", "tiny_mbconv_int8", "--device",
                        "pi4-ort", "-o", str(tmp_path / "y.csv")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("hwnas: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "runs only fp32" in r.stderr and not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- LUTs

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    space, device = small_int8(), load_device("local-cpu")
    path = tmp_path_factory.mktemp("lut") / "small_int8.csv"
    lut = build_lut(space, device, out=path, protocol=FAST, calibrate=14, seed=1)
    return space, device, path, lut


def test_an_int8_lut_builds_calibrates_and_validates_like_a_float_one(built, tmp_path) -> None:
    space, device, path, lut = built
    assert set(lut.entries) == {s.key for s in unique_layers(space)}
    kinds = collections.Counter((s.precision, s.in_precision) for s, _ in lut.entries.values())
    assert set(kinds) == {("fp32", "fp32"), ("int8", "int8"), ("int8", "fp32"), ("fp32", "int8")}
    assert LUT.load(path).entries == lut.entries and lut.meta["calibration"]["n"] == 14
    cost = LUTCost(LUT.load(path), space, device=device)
    mixed = [a for a in space.decode_batch(space.sample_codes(5, 40))
             if len({s.precision for s in space.layers(a)}) == 2][:3]
    assert len(mixed) == 3 and np.all(cost.predict(mixed) > 0)
    report = validate_lut(space, device, lut, n=8, seed=0, out_dir=tmp_path)
    # the FAST protocol on microsecond blocks leaves 23-69 % error run to run (measured before
    # and after session 21 alike), so the test holds the calibration to beating the raw sum
    # (86-142 % here), not to an absolute figure: docs/benchmarks.md has the real protocol's
    assert report["n"] == 8 and np.isfinite(report["rmspe"])
    assert report["rmspe"] < report["uncalibrated"]["rmspe"]
    rows = list(csv.DictReader(open(tmp_path / "validate_small_int8_local-cpu.csv")))
    assert len(rows) == 8


@pytest.mark.parametrize("columns", [("precision", "in_precision"),  # before precision (issue 15)
                                     ("precision", "in_precision", "cls_token", "heads", "head_dim")])  # and tokens (18)
def test_a_float_lut_without_precision_columns_still_loads(built, tmp_path, columns) -> None:
    from tests.hw_helpers import small_space

    space, device = small_space(), load_device("local-cpu")
    lut = build_lut(space, device, out=tmp_path / "small.csv", protocol=FAST, calibrate=0)
    text = (tmp_path / "small.csv").read_text().splitlines()
    header = text[0].split(",")
    drop = [header.index(c) for c in columns]
    old = [",".join(c for i, c in enumerate(line.split(",")) if i not in drop) for line in text]
    (tmp_path / "small.csv").write_text("\n".join(old) + "\n")
    assert LUT.load(tmp_path / "small.csv").entries == lut.entries


def test_a_lut_of_the_int8_space_is_refused_for_the_float_space_and_back(built) -> None:
    space, device, path, lut = built
    float_space = space_from_dict(SMALL_SPACE, "small.yaml")
    with pytest.raises(CompatibilityError, match="built for space 'small_int8', not 'small'"):
        LUTCost(LUT.load(path), float_space, device=device)
    # a float-only space under the int8 space's name: another fingerprint, and the reverse
    # direction lacks every int8 block
    renamed = space_from_dict({**SMALL_SPACE, "name": "small_int8"}, "small_int8.yaml")
    assert renamed.fingerprint() != space.fingerprint()
    float_lut = LUT({**lut.meta, "space_fingerprint": renamed.fingerprint()},
                    {k: v for k, v in lut.entries.items() if not v[0].quantized})
    with pytest.raises(CompatibilityError, match="holds float32 blocks only and space small_int8 searches int8"):
        LUTCost(float_lut, space, device=device)


def test_a_kit_of_an_int8_space_runs_and_imports(built, tmp_path) -> None:
    space, device, _, _ = built
    manifest = write_kit(space, tmp_path / "kit.zip")
    with zipfile.ZipFile(tmp_path / "kit.zip") as z:
        z.extractall(tmp_path / "kit")
    uint8_inputs = [e for e in manifest["entries"] if "in_precision=int8" in e["key"]]
    assert uint8_inputs and all(len(e["input"]) == 2 or e["input"][-1] > 0 for e in uint8_inputs)
    r = subprocess.run([sys.executable, "runner.py", "--warmup", "1", "--repeats", "4", "--rounds", "1", "--passes", "1",
                        "--out", str(tmp_path / "results.csv")], cwd=tmp_path / "kit", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lut = import_results(tmp_path / "results.csv", space, device, tmp_path / "lut.csv")
    assert set(lut.entries) == {s.key for s in unique_layers(space)}
    with pytest.raises(CompatibilityError, match="runs only fp32"):
        import_results(tmp_path / "results.csv", space, load_device("pi4-ort"), tmp_path / "pi.csv")
    assert not (tmp_path / "pi.csv").exists()


def test_the_supernet_of_an_int8_space_shares_one_set_of_float_weights_across_precisions() -> None:
    import torch

    from nas.supernet.supernet import Supernet

    torch.set_num_threads(1)
    float_net, int8_net = Supernet(load_space("tiny_mbconv")), Supernet(load_space("tiny_mbconv_int8"))
    assert sum(p.numel() for p in int8_net.parameters()) == sum(p.numel() for p in float_net.parameters())
    space = load_space("tiny_mbconv_int8")
    int8_net.eval()
    for seed in range(2):
        arch = space.sample(seed)
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            int8_net.set_active(arch)
            assert torch.allclose(int8_net(x), int8_net.extract(arch).eval()(x), atol=1e-5)


def test_the_energy_estimate_moves_int8_blocks_at_their_stored_width() -> None:
    from nas.hardware.energy import AnalyticEnergy
    from nas.space.counters import layer_io_elements, layer_weight_bytes
    from tests.hardware.test_energy import FixedLatency

    space = small_int8()
    model = AnalyticEnergy(space, load_device("local-cpu"), FixedLatency(space))
    prec = [d.name for d in space.decisions if d.name.endswith("precision")]
    base = {d.name: d.choices[-1] for d in space.decisions}
    fp32, int8 = (space.arch({**base, **{p: v for p in prec}}) for v in ("fp32", "int8"))
    moved = model.bytes_moved(space.encode_batch([fp32, int8]))
    expected = [sum(layer_weight_bytes(s) + layer_io_elements(s) * (1 if s.precision == "int8" else 4)
                    for s in space.layers(a)) for a in (fp32, int8)]
    assert moved.tolist() == expected and moved[1] < moved[0] / 2  # small convs: the 17 B per channel weigh in
