"""The NAS-Bench-201 cell space: arch strings, the benchmark's index order, and the
skeleton's size against the figures NAS-Bench-201 publishes."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch

from nas.errors import NasError
from nas.space import load_space
from nas.space.layers import NB201_OPS
from nas.space.registry import space_from_dict

N_ARCHS = 5 ** 6
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
STRING = re.compile(r"\|(\w+)~0\|\+\|(\w+)~0\|(\w+)~1\|\+\|(\w+)~0\|(\w+)~1\|(\w+)~2\|")


@pytest.fixture(scope="module")
def space():
    return load_space("nb201")


def test_decisions_are_the_six_edges(space):
    assert space.size == N_ARCHS
    assert [d.name for d in space.decisions] == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    assert all(d.choices == NB201_OPS for d in space.decisions)


def test_strings_and_indices_are_bijections_over_all_archs(space):
    strings, ranks = set(), set()
    for k in range(N_ARCHS):
        arch = space.from_nb201_index(k)
        text = space.to_string(arch)
        match = STRING.fullmatch(text)
        assert match, text
        # the string lists node inputs in order: edge to<-from is op~from inside node `to`
        assert list(match.groups()) == [arch[d.name] for d in space.decisions]
        assert space.from_string(text) == arch
        assert space.parse_arch(text) == arch
        assert space.nb201_index(arch) == k
        strings.add(text)
        ranks.add(space.index(arch))
    assert len(strings) == N_ARCHS and ranks == set(range(N_ARCHS))


def test_every_benchmark_row_maps_to_its_index(space, benchmarks):
    table = benchmarks / "nb201" / "cifar10_val_acc.csv"
    if not table.is_file():
        pytest.skip(f"NAS-Bench-201 table {table} not found (set HWNAS_BENCHMARKS to the benchmarks folder)")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N_ARCHS
    for row in rows:
        arch = space.from_string(row["arch_str"])
        assert space.nb201_index(arch) == int(row["nb201_index"]), row["arch_str"]
        assert space.to_string(arch) == row["arch_str"]


@pytest.mark.parametrize("text, message", [
    ("", "must have 3 nodes separated by '\\+'"),
    ("|nor_conv_3x3~0|+|none~0|skip_connect~1|", "must have 3 nodes"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 .* must start and end with '\\|'"),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs, got 1"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "should read from node 0"),
    ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "should read from node 0"),
    ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_3x3' \\(did you mean 'nor_conv_3x3'\\?\\)"),
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|avg_pool~2|", "unknown op 'avg_pool'.*avg_pool_3x3"),
])
def test_malformed_strings_are_clear_errors(space, text, message):
    with pytest.raises(NasError, match=message):
        space.from_string(text)


def test_nb201_index_range(space):
    for bad in (-1, N_ARCHS):
        with pytest.raises(NasError, match="outside 0..15624"):
            space.from_nb201_index(bad)


def test_largest_network_matches_published_size(space):
    """NAS-Bench-201 (Dong & Yang 2020) reports 1.531546 M parameters and 220.11969 M
    FLOPs for its largest CIFAR-10 net (every edge nor_conv_3x3), 0.073306 M and 7.78305 M
    for its smallest (every edge none). Its FLOP counter also counts the classifier's
    10 bias additions, which MACs do not."""
    big, small = space.counts(space.from_string(ALL_CONV)), space.counts(space.from_string(ALL_NONE))
    assert big["params"] == 1_531_546 and small["params"] == 73_306
    assert big["macs"] + 10 == 220_119_690 and small["macs"] + 10 == 7_783_050


def test_largest_network_size_by_hand(space):
    """The same parameter count derived from the skeleton: stem conv + BN, 5 cells per
    stage of six ReLU-Conv3x3-BN edges, two ResNet reduction blocks (two ReLU-Conv3x3-BN
    and a bias-free 1x1 shortcut conv), the last BN and the classifier."""
    def conv_bn(cin, cout, k):
        return k * k * cin * cout + 2 * cout

    stem = conv_bn(3, 16, 3)
    cells = sum(5 * 6 * conv_bn(c, c, 3) for c in (16, 32, 64))
    reductions = sum(conv_bn(c, 2 * c, 3) + conv_bn(2 * c, 2 * c, 3) + c * 2 * c for c in (16, 32))
    last_bn, classifier = 2 * 64, 64 * 10 + 10
    expected = stem + cells + reductions + last_bn + classifier
    arch = space.from_string(ALL_CONV)
    assert space.counts(arch)["params"] == expected == sum(p.numel() for p in space.build(arch).parameters())
    # every none edge removes one conv_bn; the rest of the skeleton remains
    assert space.counts(space.from_string(ALL_NONE))["params"] == expected - cells


def test_none_cells_output_zeros(space):
    model = space.build(space.from_string(ALL_NONE)).eval()
    with torch.no_grad():
        features = model[:6](torch.randn(1, 3, 32, 32))  # stem and the first stage's five cells
    assert torch.count_nonzero(features) == 0


@pytest.mark.parametrize("data, message", [
    ({"type": "nb201", "name": "x", "chanels": 16}, "unknown key 'chanels' \\(did you mean 'channels'\\?\\)"),
    ({"type": "nb201", "name": "x", "resolution": 30}, "resolution 30 must be a multiple of 4"),
    ({"type": "nb201", "name": "x", "channels": "16"}, "channels must be a positive integer"),
    ({"type": "nb201", "name": "x", "cells_per_stage": 0}, "cells_per_stage must be a positive integer"),
])
def test_bad_nb201_files(data, message):
    with pytest.raises(NasError, match=message):
        space_from_dict(data)


def test_other_skeleton_sizes_build_and_count():
    space = space_from_dict({"type": "nb201", "name": "nb201_small", "channels": 8, "cells_per_stage": 1,
                             "classes": 100, "resolution": 16})
    arch = space.from_string(ALL_CONV)
    model = space.build(arch).eval()
    assert space.counts(arch)["params"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 100)


def test_largest_arch_is_all_conv3x3(space):
    assert space.to_string(space.extreme(True)) == ALL_CONV
    assert space.counts(space.extreme(False))["macs"] == space.counts(space.from_string(ALL_NONE))["macs"]


def test_resolution_override_needs_a_multiple_of_4(space):
    arch = space.from_string(ALL_CONV)
    with pytest.raises(NasError, match="resolution 50 must be a multiple of 4"):
        space.counts(arch, resolution=50)
    # at a multiple of 4 the override is the skeleton built for that input
    wider = space_from_dict({"type": "nb201", "name": "nb201", "resolution": 48})
    assert space.counts(arch, resolution=48) == wider.counts(wider.arch(dict(arch)))


# ---------------------------------------------------------------------- isomorphic cells
TWIN = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|"
TWIN_SWAPPED = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|"
DEAD_OP = "|skip_connect~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|none~2|"  # node 3 reads nothing


@pytest.fixture(scope="module")
def all_codes(space):
    return space.encode_batch(list(space.enumerate()))


def test_twins_swap_nodes_one_and_two(space):
    codes = space.encode_batch([space.from_string(TWIN), space.from_string(TWIN_SWAPPED)])
    iso = space.isomorphic_codes(codes)
    assert (iso[0] == iso[1]).all()
    assert space.to_string(space.decode(iso[0])) in (TWIN, TWIN_SWAPPED)


def test_isomorphic_classes_are_pairs_of_equal_work(space, all_codes):
    iso = space.isomorphic_codes(all_codes)
    assert (space.isomorphic_codes(iso) == iso).all()  # idempotent
    _, inverse, counts = np.unique(iso, axis=0, return_inverse=True, return_counts=True)
    moved = counts[inverse.ravel()] == 2
    assert counts.max() == 2 and moved.any()
    none = NB201_OPS.index("none")
    assert (all_codes[moved, 2] == none).all()  # only cells without edge 2<-1 have a twin
    assert (space.live_codes(all_codes[moved]) == all_codes[moved]).all()  # and only without dead ops
    for metric in ("params", "macs"):  # twins run the same ops (in another order: peak memory may differ)
        table = space.table(metric)
        assert np.array_equal(table(all_codes[moved]), table(iso[moved])), metric


def test_a_cell_with_dead_ops_is_its_own_class_unless_only_function_counts(space):
    dead = space.encode(space.from_string(DEAD_OP))
    swapped = dead[[1, 0, 2, 3, 5, 4]]
    assert not np.array_equal(space.isomorphic_codes(dead)[0], space.isomorphic_codes(swapped)[0])
    live = space.isomorphic_codes(np.stack([dead, swapped]), live_only=True)
    assert (live == space.encode(space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))).all()


def test_live_codes_keep_exactly_the_live_edges_of_the_features(space, all_codes):
    from nas.predictors.features import cell_graph

    live = space.live_codes(all_codes)
    for code, kept in zip(all_codes[::97], live[::97]):
        counts = cell_graph(tuple(NB201_OPS[c] for c in code))
        for i, op in enumerate(NB201_OPS[1:], start=1):
            assert int(counts[f"live_{op}"]) == int(np.sum(kept == i)), (code, op)


def test_isomorphic_codes_refuse_other_shapes(space):
    with pytest.raises(NasError, match="N x 6 choices"):
        space.isomorphic_codes(np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(NasError, match="N x 6 choices"):
        space.live_codes(np.full((1, 6), 5))


def test_simulated_devices_measure_twins_equal(space, benchmarks):
    """Eyeriss and the FPGA are simulators (no noise): every twin pair reads the same
    value, and pairs that merely compute the same function (dead ops dropped) do not."""
    table = benchmarks / "nb201" / "hwnasbench_cifar10.csv"
    if not table.is_file():
        pytest.skip(f"HW-NAS-Bench table {table} not found (set HWNAS_BENCHMARKS to the benchmarks folder)")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    codes = space.encode_batch([space.from_string(r["arch_str"]) for r in rows])
    for live_only in (False, True):
        _, cls = np.unique(space.isomorphic_codes(codes, live_only), axis=0, return_inverse=True)
        for column in ("eyeriss_latency", "fpga_latency"):
            values = np.array([float(r[column]) for r in rows])
            high, low = np.full(cls.max() + 1, -np.inf), np.full(cls.max() + 1, np.inf)
            np.maximum.at(high, cls.ravel(), values)
            np.minimum.at(low, cls.ravel(), values)
            assert (high - low < 1e-9).all() != live_only, (column, live_only)
