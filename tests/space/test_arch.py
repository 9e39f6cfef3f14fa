"""Architectures as plain data: codes, sampling, mutation, crossover, ranks, JSON, ids
and validation, as properties over every shipped space (discovered at run time)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.errors import NasError
from nas.space import Arch, load_space, space_files
from nas.space.registry import space_from_dict

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def codes_of(space) -> st.SearchStrategy[np.ndarray]:
    """One arch as a code vector: an index into each decision's choices."""
    return st.tuples(*(st.integers(0, int(r) - 1) for r in space.radices)).map(
        lambda t: np.array(t, dtype=np.int64).reshape(len(space.radices)))


def archs_of(space) -> st.SearchStrategy[Arch]:
    return codes_of(space).map(space.decode)


# ----------------------------------------------------------------------------- codes

@PROPERTY
@given(data=st.data())
def test_encode_decode_round_trip(shipped_space_name, data):
    space = load_space(shipped_space_name)
    codes = data.draw(codes_of(space))
    arch = space.decode(codes)
    assert list(arch) == [d.name for d in space.decisions]
    assert all(arch[d.name] == d.choices[c] for d, c in zip(space.decisions, codes))
    np.testing.assert_array_equal(space.encode(arch), codes)
    assert space.decode(space.encode(arch)) == arch
    assert space.arch(dict(arch)) == arch  # a decoded arch is a valid one


@PROPERTY
@given(data=st.data())
def test_batch_round_trip(shipped_space_name, data):
    space = load_space(shipped_space_name)
    rows = data.draw(st.lists(codes_of(space), min_size=1, max_size=8))
    matrix = np.stack(rows)
    archs = space.decode_batch(matrix)
    assert archs == [space.decode(r) for r in rows]
    encoded = space.encode_batch(archs)
    assert encoded.shape == (len(rows), len(space.decisions)) and encoded.dtype.kind == "i"
    np.testing.assert_array_equal(encoded, matrix)


def test_decode_rejects_codes_that_do_not_fit(shipped_space_name):
    space = load_space(shipped_space_name)
    with pytest.raises(NasError, match="do not fit"):
        space.decode(np.append(np.zeros(len(space.decisions), dtype=np.int64), 0))
    if len(space.decisions):
        with pytest.raises(NasError, match="do not fit"):
            space.decode(space.radices)  # one past the last choice everywhere
        with pytest.raises(NasError, match="do not fit"):
            space.decode(-np.ones(len(space.decisions), dtype=np.int64))


# ----------------------------------------------------------------------------- sampling and variation

@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_sample_is_valid_and_seeded(shipped_space_name, seed):
    space = load_space(shipped_space_name)
    arch = space.sample(seed)
    assert space.arch(dict(arch)) == arch
    assert space.sample(seed) == arch
    assert space.sample(np.random.default_rng(seed)) == arch
    codes = space.sample_codes(seed, 64)
    assert codes.shape == (64, len(space.decisions))
    assert np.all(codes >= 0) and np.all(codes < space.radices)
    np.testing.assert_array_equal(space.sample_codes(seed, 64), codes)
    if space.size > 1000:  # 64 draws from a big space are not all the same arch
        assert len({tuple(r) for r in codes}) > 1


def test_sample_covers_every_choice(shipped_space_name):
    space = load_space(shipped_space_name)
    codes = space.sample_codes(0, 2000)
    for d, column in zip(space.decisions, codes.T):
        assert set(column.tolist()) == set(range(len(d.choices))), d.name


@PROPERTY
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_mutate(shipped_space_name, data, seed):
    space = load_space(shipped_space_name)
    arch = data.draw(archs_of(space))
    assert space.mutate(arch, seed, prob=0.0) == arch
    changed = space.mutate(arch, seed, prob=1.0)
    assert all(changed[d.name] != arch[d.name] for d in space.decisions)  # every decision has >= 2 choices
    assert space.arch(dict(changed)) == changed
    some = space.mutate(arch, seed, prob=0.3)
    assert space.mutate(arch, seed, prob=0.3) == some  # seeded
    batch = np.stack([space.encode(arch)] * 4)
    np.testing.assert_array_equal(space.mutate_codes(batch, seed, prob=0.0), batch)
    assert np.all(space.mutate_codes(batch, seed, prob=1.0) != batch)


@PROPERTY
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_crossover_takes_each_decision_from_a_parent(shipped_space_name, data, seed):
    space = load_space(shipped_space_name)
    a, b = data.draw(archs_of(space)), data.draw(archs_of(space))
    child = space.crossover(a, b, seed)
    assert all(child[n] in (a[n], b[n]) and type(child[n]) in (type(a[n]), type(b[n])) for n in child)
    assert space.crossover(a, b, seed) == child
    assert space.crossover(a, a, seed) == a


def test_crossover_mixes_both_parents():
    space = load_space("tiny_mbconv")
    a = space.decode(np.zeros(len(space.decisions), dtype=np.int64))
    b = space.decode(space.radices - 1)
    child = space.encode(space.crossover(a, b, 0))
    assert 0 < np.sum(child == 0) < len(child)


# ----------------------------------------------------------------------------- ranks

@PROPERTY
@given(data=st.data())
def test_index_round_trip(shipped_space_name, data):
    space = load_space(shipped_space_name)
    arch = data.draw(archs_of(space))
    rank = space.index(arch)
    assert 0 <= rank < space.size
    assert space.from_index(rank) == arch
    k = data.draw(st.integers(0, space.size - 1))
    assert space.index(space.from_index(k)) == k


def test_index_bounds(shipped_space_name):
    space = load_space(shipped_space_name)
    assert space.size == int(np.prod([int(r) for r in space.radices], dtype=object))
    assert space.index(space.from_index(0)) == 0
    assert space.index(space.from_index(space.size - 1)) == space.size - 1
    for bad in (-1, space.size):
        with pytest.raises(NasError, match="outside"):
            space.from_index(bad)


# ----------------------------------------------------------------------------- JSON and ids

@PROPERTY
@given(data=st.data())
def test_json_round_trip(shipped_space_name, data):
    space = load_space(shipped_space_name)
    arch = data.draw(archs_of(space))
    text = arch.to_json()
    parsed = space.parse_arch(text)
    assert parsed == arch and parsed.arch_id == arch.arch_id and hash(parsed) == hash(arch)
    assert json.loads(text) == {"space": space.name, "arch": dict(arch)}
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    # decisions alone (no envelope), in any key order, give the same arch
    shuffled = dict(reversed(list(arch.items())))
    assert space.parse_arch(json.dumps(shuffled)) == arch
    assert space.arch(arch.to_dict()) == arch
    assert re.fullmatch(r"[0-9a-f]{12}", arch.arch_id)


def test_arch_id_is_stable_and_differs_across_spaces():
    ids: dict[str, str] = {}
    for name in sorted(space_files()):
        space = load_space(name)
        arch = space.from_index(0)
        again = Arch(space.name, dict(reversed(list(arch.items()))))
        assert again == arch and again.arch_id == arch.arch_id
        assert ids.setdefault(arch.arch_id, name) == name, f"{name} and {ids[arch.arch_id]} share an arch id"
    # the same decisions under another space name are another arch
    a, b = Arch("one", {"x": 1}), Arch("two", {"x": 1})
    assert a != b and a.arch_id != b.arch_id


def test_arch_id_is_the_same_in_another_process():
    arch = load_space("tiny_mbconv").sample(7)
    code = ("import json, sys; from nas.space.arch import Arch; d = json.loads(sys.argv[1]); "
            "print(Arch(d['space'], d['arch']).arch_id)")
    out = subprocess.run([sys.executable, "-c", code, arch.to_json()], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == arch.arch_id


def test_archs_are_immutable_plain_data():
    arch = load_space("tiny_mbconv").sample(0)
    with pytest.raises(TypeError):
        arch["s1.depth"] = 1  # type: ignore[index]
    assert {arch: 1}[Arch(arch.space, dict(arch))] == 1


# ----------------------------------------------------------------------------- validation

SMALL = {
    "name": "small",
    "input": {"channels": 3, "resolution": [16, 24]},
    "classes": 4,
    "stem": [{"op": "conv", "out": [8, 12], "kernel": 3, "stride": 2}],
    "stages": [{"depth": [1, 2], "width": 16, "stride": 2,
                "block": {"kernel": [3, 5], "expand": [1, 3], "se": [0, 0.25], "per": "stage"}}],
    "head": [{"op": "gap"}, {"op": "linear", "out": "classes"}],
}


@pytest.fixture
def small():
    return space_from_dict(SMALL)


def valid(space) -> dict:
    return dict(space.from_index(0))


def test_unknown_decision_names_it_and_suggests_closest(small):
    values = valid(small)
    values["s1.kernal"] = values.pop("s1.kernel")
    with pytest.raises(NasError, match=r"unknown decision 's1\.kernal' \(did you mean 's1\.kernel'\?\)"):
        small.arch(values)


def test_missing_decisions_are_named(small):
    values = valid(small)
    del values["s1.depth"], values["resolution"]
    with pytest.raises(NasError, match=r"lacks decision\(s\) .*s1\.depth") as err:
        small.arch(values)
    assert "resolution" in str(err.value)


@pytest.mark.parametrize("name, value", [("s1.kernel", 7), ("resolution", 32), ("s1.depth", True),
                                         ("s1.kernel", "3"), ("stem0.out", None), ("s1.se", 0.5)])
def test_value_out_of_range_names_decision_and_choices(small, name, value):
    values = valid(small)
    values[name] = value
    with pytest.raises(NasError) as err:
        small.arch(values)
    message = str(err.value)
    assert repr(name) in message
    choices = next(d.choices for d in small.decisions if d.name == name)
    assert str(list(choices)) in message


def test_numbers_match_choices_by_value_not_type(small):
    values = valid(small)
    values["s1.se"] = 0.0  # JSON may give 0.0 for the choice 0
    arch = small.arch(values)
    assert arch == small.from_index(0) and type(arch["s1.se"]) is int


def test_archs_of_other_spaces_and_bad_json_are_rejected(small):
    other = load_space("tiny_mbconv").sample(0)
    with pytest.raises(NasError, match="is for space 'tiny_mbconv', not 'small'"):
        small.encode(other)
    with pytest.raises(NasError, match="is for space 'tiny_mbconv', not 'small'"):
        small.parse_arch(other.to_json())
    with pytest.raises(NasError, match=r"not valid JSON.*line 1"):
        small.parse_arch("{'s1.depth': 1}")
    with pytest.raises(NasError, match="must be an object"):
        small.parse_arch("[1, 2]")


def test_enumerate_small_space(small):
    assert small.size == 2 ** 6
    archs = list(small.enumerate())
    assert len(archs) == small.size == len(set(archs)) == len({a.arch_id for a in archs})
    assert [small.index(a) for a in archs] == list(range(small.size))
    # every combination of choices appears exactly once
    assert {tuple(small.encode(a)) for a in archs} == set(np.ndindex(*small.radices))


def test_describe_lists_decisions(small):
    info = small.describe()
    assert info["name"] == "small" and info["size"] == small.size
    assert [d["name"] for d in info["decisions"]] == [d.name for d in small.decisions]
    json.dumps(info)  # plain data


# ----------------------------------------------------------------------------- inactive decisions
def _depth_space(depths):
    from nas.space.registry import space_from_dict

    return space_from_dict({
        "name": "d", "input": {"channels": 3, "resolution": 8}, "classes": 2,
        "stem": [{"op": "conv", "out": 4, "kernel": 3}],
        "stages": [{"depth": depths, "width": 4, "block": {"kernel": [3, 5], "expand": [1, 2]}}],
        "head": [{"op": "gap"}, {"op": "linear", "out": "classes"}],
    }, "d.yaml")


@pytest.mark.parametrize("depths", [[1, 2, 3], [3, 1, 2]])
def test_distinct_size_counts_unique_networks(depths) -> None:
    space = _depth_space(depths)
    networks = {tuple(space.layers(a)) for a in space.enumerate()}
    canonical = {space.canonical(a) for a in space.enumerate()}
    assert space.distinct_size == len(networks) == len(canonical) == 4 + 16 + 64
    assert space.size == 3 * 4**3


@pytest.mark.parametrize("depths", [[1, 2, 3], [3, 1, 2]])
def test_canonical_keeps_the_network_and_is_idempotent(depths) -> None:
    space = _depth_space(depths)
    for arch in space.enumerate():
        canon = space.canonical(arch)
        assert space.layers(canon) == space.layers(arch)
        assert space.canonical(canon) == canon


def test_ofa_distinct_size_is_the_papers_count() -> None:
    from nas.space import load_space

    ofa = load_space("ofa_mbv3")
    per_stage = sum(9**d for d in (2, 3, 4))  # kernel x expand per active layer, depth 2..4
    assert ofa.distinct_size == 25 * per_stage**5  # 25 resolutions
