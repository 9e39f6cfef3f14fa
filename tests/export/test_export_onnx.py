"""Export -> onnxruntime agreement over random archs of every chain space and NB201.

Networks as the builder initialises them, with BN affine terms randomised away from
torch's defaults and running statistics estimated on random inputs (as training leaves
them: matching the activations; left at 0 and 1, NB201's cell sums grow to logits of
~1e4), so the check covers folded batch norms, SE gates, shuffles and residual adds
with values in a trained network's range. The default run checks a few archs per space; `-m slow` all 20.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from nas.export.onnx_export import OPSET, TOLERANCE, to_onnx, verify
from nas.space import load_space

torch.set_num_threads(1)

SPACES = ("tiny_mbconv", "ofa_mbv3", "proxyless", "fbnet", "fbnet_cifar", "nb201", "tiny_vit", "tiny_hybrid")


def trained_like(model: nn.Module, seed: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Random BN affine terms and running statistics that fit the activations."""
    from nas.supernet import recalibrate_bn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        recalibrate_bn(model, torch.randn((32, *input_shape[1:]), generator=g), 16)
    return model.eval()


def sweep(space_name: str, n: int, seed: int = 0, resolution: int | None = None) -> list[dict]:
    """Export and check n random archs, at their own input size or at `resolution` (the
    networks end in global pooling, so a smaller size is the same graph, faster)."""
    from nas.space.builder import build_network

    space = load_space(space_name)
    rows = []
    for i, codes in enumerate(space.sample_codes(seed, n)):
        arch = space.decode(codes)
        size = resolution or space.resolution(arch)
        shape = (1, space.in_channels, size, size)
        model = trained_like(build_network(space.layers(arch, resolution)), i, shape)
        check = verify(model, to_onnx(model, shape), shape, seed=i, batches=(2,))
        rows.append({"arch_id": arch.arch_id, **check.to_dict()})
    return rows


@pytest.mark.parametrize("space_name", SPACES)
def test_onnx_agrees_with_torch_on_random_archs(space_name) -> None:
    rows = sweep(space_name, 3, resolution=None if space_name in ("tiny_mbconv", "nb201", "fbnet_cifar", "tiny_vit", "tiny_hybrid") else 64)
    for row in rows:
        assert row["opset"] >= 17 and row["max_abs_diff"] <= TOLERANCE
        assert row["max_abs_output"] > 100 * TOLERANCE  # outputs large enough for the tolerance to mean something


@pytest.mark.slow
@pytest.mark.parametrize("space_name", SPACES)
def test_onnx_agrees_on_20_archs_per_space(space_name) -> None:
    rows = sweep(space_name, 20, seed=1)
    worst = max(r["max_abs_diff"] for r in rows)
    print(f"{space_name}: 20 archs, worst max abs diff {worst:.3g}, outputs up to "
          f"{max(r['max_abs_output'] for r in rows):.3g}")
    assert len(rows) == 20 and worst <= TOLERANCE


def test_the_batch_axis_is_dynamic_and_the_opset_recorded() -> None:
    import onnx

    space = load_space("tiny_mbconv")
    model = trained_like(space.build(space.extreme(False)), 0, (1, 3, 32, 32))
    data = to_onnx(model, (1, 3, 32, 32))
    proto = onnx.load_from_string(data)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert proto.opset_import[0].version == OPSET
    assert verify(model, data, (1, 3, 32, 32), batches=(1, 5)).batches == (1, 5)


def test_a_graph_that_disagrees_is_refused() -> None:
    """The check is real: the ONNX of one network is refused for a slightly different one."""
    from nas.errors import NasError

    space = load_space("nb201")
    arch = space.sample(0)
    model = trained_like(space.build(arch), 0, (1, 3, 32, 32))
    data = to_onnx(model, (1, 3, 32, 32))
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(p for p in other.parameters() if p.dim() == 4).add_(1e-2)
    with pytest.raises(NasError, match="disagrees with PyTorch"):
        verify(other, data, (1, 3, 32, 32))
    assert np.isfinite(verify(model, data, (1, 3, 32, 32)).max_abs_diff)
