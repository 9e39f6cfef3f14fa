"""Size guards instead of hangs (issue 14, item 4): sizes are bounded when a space is
loaded, a network too large for memory is refused before anything is allocated, and
the extreme-arch search does work linear in the depth of a space."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from nas.cli import main
from nas.errors import NasError
from nas.space import load_space
from nas.space.builder import MAX_NETWORK_BYTES
from nas.space.chain import SIZE_LIMITS
from nas.space.registry import space_from_dict
from tests.hw_helpers import SMALL_SPACE


def _deep(depth: int) -> dict:
    return {"name": f"deep{depth}", "input": {"channels": 3, "resolution": 16}, "classes": 10,
            "stem": [{"op": "conv", "out": 8, "kernel": 3}],
            "stages": [{"depth": [1, depth], "width": 8, "block": {"kernel": [3, 5], "expand": [1, 3]}}],
            "head": [{"op": "gap"}, {"op": "linear", "out": "classes"}]}


def _with(path: str, value) -> dict:
    data = copy.deepcopy(SMALL_SPACE)
    target = data
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[last] = value
    return data


def _cli_error(tmp_path: Path, capsys, data: dict, *command: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main([*command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwnas: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("path, value, field", [
    ("stages.0.depth", [1, 10**6], "depth"),
    ("stages.0.width", [8, 10**9], "channels"),
    ("stem.0.out", 10**9, "channels"),
    ("input.channels", 10**6, "channels"),
    ("input.resolution", [16, 10**6], "resolution"),
    ("classes", 10**7, "classes"),
])
def test_sizes_beyond_the_documented_limits_are_refused_at_load(tmp_path, capsys, path, value, field) -> None:
    err = _cli_error(tmp_path, capsys, _with(path, value), "space", "show")
    assert f"beyond the limit of {SIZE_LIMITS[field]} ({field})" in err


def test_a_kernel_or_an_expansion_beyond_the_limits_is_refused_at_load(tmp_path, capsys) -> None:
    err = _cli_error(tmp_path, capsys, _with("stages.0.block.kernel", [3, 99]), "space", "show")
    assert f"kernel 99 is beyond the limit of {SIZE_LIMITS['kernel']}" in err
    err = _cli_error(tmp_path, capsys, _with("stages.0.block.expand", [1, 10**5]), "space", "show")
    assert f"beyond the limit of {SIZE_LIMITS['channels']}" in err


def test_the_total_number_of_layers_is_bounded(tmp_path, capsys) -> None:
    data = _deep(1000)
    data["stages"] = data["stages"] * 5  # 5000 layers, each stage within its own limit
    err = _cli_error(tmp_path, capsys, data, "space", "show")
    assert f"beyond the limit of {SIZE_LIMITS['layers']}" in err


def test_the_limits_themselves_load() -> None:
    space = space_from_dict(_deep(SIZE_LIMITS["depth"]), "deep.yaml")
    assert len(space.slots()) == SIZE_LIMITS["depth"] + 3


def test_a_network_too_large_for_memory_is_refused_before_it_is_built(tmp_path, capsys) -> None:
    """Every field within its limit, but 60 convolutions of 16384 channels need 540 GiB:
    refused by the builder's estimate, not by torch allocating (the export stays unwritten)."""
    data = _with("stages", [{"depth": 60, "width": 16384, "block": {"op": "conv", "kernel": 3}}])
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(data))
    space = load_space(path)
    with pytest.raises(NasError, match=r"needs about [\d,.]+ GiB .* beyond the 16 GiB hwnas builds"):
        space.build(space.extreme(True))
    out = tmp_path / "export"
    assert main(["export", "--space", str(path), "--arch", "max", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB" in err and "Traceback" not in err
    assert not out.exists()
    assert MAX_NETWORK_BYTES == 16 * 2**30  # the figure the message names


def _line_events(fn) -> int:
    """Python lines executed by fn(): the work it does, independent of the machine's speed."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_the_extreme_arch_search_is_linear_in_depth() -> None:
    """Depth 1000 used to take 14 s: every single-decision trial re-scored the whole network.
    Tables are built before counting (their cost is linear too, and cached)."""
    work = {}
    for depth in (100, 1000):
        space = space_from_dict(_deep(depth), "deep.yaml")
        space.table("macs"), space.table("params")
        work[depth] = _line_events(lambda: (space.extreme(True), space.extreme(False)))
    assert work[1000] < 15 * work[100], work  # quadratic work would be 100x


def test_the_extreme_arch_of_a_deep_space_is_its_largest_and_smallest_network() -> None:
    space = space_from_dict(_deep(1000), "deep.yaml")
    largest, smallest = space.extreme(True), space.extreme(False)
    assert largest["s1.depth"] == 1000 and smallest["s1.depth"] == 1
    layers = space.layers(largest)
    assert all(s.kernel == 5 and s.mid_ch == 24 for s in layers[1:-2])
    macs = space.table("macs")
    codes = space.sample_codes(0, 200)
    assert macs(space.encode(smallest)) <= macs(codes).min() <= macs(codes).max() <= macs(space.encode(largest))


def test_a_non_utf8_space_file_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(yaml.safe_dump(SMALL_SPACE).encode().replace(b"small", b"sm\xffall"))
    assert main(["space", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8 text" in err and "Traceback" not in err


def test_the_size_of_a_huge_deep_space_prints(capsys) -> None:
    """4^1000 decision assignments is beyond a float: printed exactly rounded, no OverflowError."""
    space = space_from_dict(_deep(1000), "deep.yaml")
    from nas.space.base import size_text

    assert size_text(space.size).startswith(str(space.size)[0] + ".") and size_text(space.size).endswith(
        f"e+{len(str(space.size)) - 1}")
    assert size_text(123456789012345) == "1.235e+14"
