"""ONNX graphs written from LayerSpecs: valid, runnable, and holding exactly the deployed
weights the counters predict (the memory model's check against initializer sizes)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from nas.hardware.onnx_graph import weight_initializer_bytes, input_shape, layer_model, network_model
from nas.space import load_space
from nas.space.tables import unique_layers


def test_network_graphs_match_counters(shipped_space_name: str) -> None:
    space = load_space(shipped_space_name)
    rng = np.random.default_rng(7)
    n = 1 if space.size == 1 else 3
    for codes in space.sample_codes(rng, n):
        arch = space.decode(codes)
        layers = space.layers(arch)
        model = network_model(layers, batch=None)
        onnx.checker.check_model(model, full_check=True)
        assert weight_initializer_bytes(model) == space.counts(arch)["weight_bytes"]
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        r = space.resolution(arch)
        out = session.run(None, {"input": rng.standard_normal((2, space.in_channels, r, r)).astype(np.float32)})[0]
        assert out.shape == (2, layers[-1].out_ch)
        assert np.all(np.isfinite(out))


def test_micro_models_run_with_their_input_shape() -> None:
    space = load_space("nb201")
    specs = unique_layers(space)
    for spec in specs[:: max(1, len(specs) // 40)]:
        model = layer_model(spec, compact=True)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.ones(input_shape(spec), np.float32)
        out = session.run(None, {"input": x})[0]
        expected = (1, spec.out_ch) if spec.op in ("gap", "linear") else (1, spec.out_ch, spec.out_size, spec.out_size)
        assert out.shape == expected


def test_compact_weights_compress_but_keep_counts() -> None:
    import zlib

    spec = load_space("tiny_mbconv").layers(load_space("tiny_mbconv").extreme(True))[-3]
    full, compact = layer_model(spec).SerializeToString(), layer_model(spec, compact=True).SerializeToString()
    assert weight_initializer_bytes(layer_model(spec)) == weight_initializer_bytes(layer_model(spec, compact=True))
    assert len(zlib.compress(compact)) * 5 < len(zlib.compress(full))


@pytest.mark.parametrize("op", ["relu6", "hswish", "swish"])
def test_activations_match_torch_semantics(op: str) -> None:
    """The ONNX activation nodes compute what the torch builder's modules compute."""
    import torch

    from nas.space.builder import activation
    from nas.space.layers import LayerSpec

    spec = LayerSpec("norm", 4, 4, 3, act=op)
    model = network_model([spec])
    # norm = x * scale + shift then act: recover scale/shift from the graph to compare exactly
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    scale = next(v for k, v in inits.items() if k.startswith("scale"))
    shift = next(v for k, v in inits.items() if k.startswith("shift"))
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32) * 4
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    want = activation(op)(torch.from_numpy(x * scale + shift)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
