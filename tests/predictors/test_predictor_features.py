"""Predictor features against a slow reference computed arch by arch from LayerSpecs,
and the NB201 cell graph features on cells worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from nas.errors import NasError
from nas.predictors.features import Featurizer, cell_graph, get_featurizer, layer_vector
from nas.space import load_space
from nas.space.counters import layer_macs

SPACES = ("nb201", "fbnet_cifar", "tiny_mbconv", "proxyless")


def _stage(label: str) -> str:
    return label.split(".")[0]


@pytest.mark.parametrize("name", SPACES)
def test_transform_matches_layer_by_layer_reference(name):
    space = load_space(name)
    featurizer = get_featurizer(space)
    codes = space.sample_codes(np.random.default_rng(3), 25)
    X = featurizer.transform(codes)
    index = {n: i for i, n in enumerate(featurizer.names)}
    macs = space.table("macs")(codes)
    np.testing.assert_allclose(X[:, index["net.macs"]], macs, rtol=1e-12)
    np.testing.assert_allclose(X[:, index["net.log_macs"]], np.log(macs + 1), rtol=1e-12)
    labelled = all(hasattr(slot, "label") for slot in space.slots())
    for row, code in zip(X, codes):
        arch = space.decode(code)
        for d, decision in enumerate(space.decisions):  # one-hot: exactly the chosen value
            for c, choice in enumerate(decision.choices):
                key = f"ops.{decision.name}={choice}"
                assert row[index[key]] == float(code[d] == c)
        if labelled:  # chain spaces: stage sums are sums over the stage's layers
            sums: dict[str, float] = {}
            for slot in space.slots():
                spec = slot.make(arch, None)
                if spec is not None:
                    sums[_stage(slot.label)] = sums.get(_stage(slot.label), 0.0) + layer_vector(spec)["macs"]
            for stage, value in sums.items():
                if f"stage.{stage}.macs" in index:
                    assert row[index[f"stage.{stage}.macs"]] == pytest.approx(value, rel=1e-12)


def test_fbnet_per_layer_columns_are_each_layers_own_numbers():
    space = load_space("fbnet_cifar")
    featurizer = get_featurizer(space)
    index = {n: i for i, n in enumerate(featurizer.names)}
    codes = space.sample_codes(np.random.default_rng(4), 10)
    X = featurizer.transform(codes)
    for row, code in zip(X, codes):
        arch = space.decode(code)
        for slot in space.slots():
            if slot.deps and f"layer.{slot.label}.macs" in index:
                assert row[index[f"layer.{slot.label}.macs"]] == layer_macs(slot.make(arch, None))


def test_columns_are_deterministic_and_informative():
    space = load_space("nb201")
    a, b = Featurizer(space), Featurizer(space)
    assert a.names == b.names and a.fingerprint == b.fingerprint
    X = a.transform(space.sample_codes(np.random.default_rng(0), 2000))
    varying = np.ptp(X, axis=0) > 0
    assert varying.mean() > 0.97  # constant columns were dropped when the tables were built
    # three stages share one cell: its per-layer graph columns appear once, not three times
    assert sum(n.startswith("layer.") and n.endswith(".connected") for n in a.names) == 1
    assert set(a.groups) == {"net", "stage", "layer", "ops"}
    assert Featurizer(space, "onehot").names == [n for n in a.names if n.startswith("ops.")]


def test_unknown_feature_set_is_refused():
    with pytest.raises(NasError, match="unknown feature set 'layerspecs'.*did you mean 'layerspec'"):
        Featurizer(load_space("nb201"), "layerspecs")


def test_cell_graph_roles_of_edges():
    # node1 <- conv3(x); node2 <- skip(x); node3 <- skip(node2): node1 feeds nothing
    g = cell_graph(("nor_conv_3x3", "skip_connect", "none", "none", "none", "skip_connect"))
    assert g["connected"] == 1 and g["unused_nor_conv_3x3"] == 1 and g["live_nor_conv_3x3"] == 0
    assert g["live_skip_connect"] == 2 and g["paths"] == 1 and g["path_length"] == 2
    # node1 gets nothing from the input: its outgoing conv computes on zeros
    g = cell_graph(("none", "skip_connect", "nor_conv_1x1", "none", "none", "skip_connect"))
    assert g["zero_input_nor_conv_1x1"] == 1 and g["live_nor_conv_1x1"] == 0 and g["empty_nodes"] == 1
    # nothing reaches node 3: the cell's output is a constant zero
    g = cell_graph(("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "none", "none", "none"))
    assert g["connected"] == 0 and g["paths"] == 0 and g["path_convs"] == 0
    # every edge a 3x3 conv: all live, longest path three convs, two additions per cell
    g = cell_graph(("nor_conv_3x3",) * 6)
    assert g["live_nor_conv_3x3"] == 6 and g["path_convs"] == 3 and g["paths"] == 4 and g["adds"] == 3


def test_fbnet_kernel_count_is_what_each_block_launches():
    """net.kernels: 3 convs per inverted residual (+1 shuffle when grouped, +1 residual
    add), 1 for a skip that needs a conv or a plain conv (FBNet's stem and head),
    0 for an identity."""
    space = load_space("fbnet_cifar")
    featurizer = get_featurizer(space)
    index = {n: i for i, n in enumerate(featurizer.names)}
    codes = space.sample_codes(np.random.default_rng(5), 20)
    X = featurizer.transform(codes)
    by_op = {"mbconv": 0, "grouped": 0, "residual": 0, "conv_skip": 0}
    for row, code in zip(X, codes):
        expected = 0.0
        for spec in space.layers(space.decode(code)):
            if spec.op == "mbconv":
                expected += 3 + (spec.groups > 1) + spec.residual
                by_op["mbconv"] += 1
                by_op["grouped"] += spec.groups > 1
                by_op["residual"] += spec.residual
            elif spec.op == "skip" and not spec.is_identity:
                expected += 1
                by_op["conv_skip"] += 1
            elif spec.op == "conv":
                expected += 1
        assert row[index["net.kernels"]] == expected
    assert all(by_op.values()), by_op  # the sample exercises every branch
    identity = next(s for s in space.layers(space.decode(codes[0])) if s.op == "skip")
    assert layer_vector(identity)["kernels"] == float(not identity.is_identity)
