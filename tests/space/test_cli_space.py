"""`hwnas space ...` from the command line: output shapes, seeds, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main
from nas.space import load_space

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_shipped_space(capsys) -> None:
    code, out, _ = run(capsys, "space", "list", "--json")
    names = {row["name"] for row in json.loads(out)}
    assert code == 0 and {"tiny_mbconv", "ofa_mbv3", "nb201", "mobilenetv3_large", "fbnet_cifar"} <= names


def test_show_lists_decisions_and_exact_size(capsys) -> None:
    code, out, _ = run(capsys, "space", "show", "nb201", "--json")
    info = json.loads(out)
    assert code == 0 and info["size"] == 15625 and len(info["decisions"]) == 6


def test_sample_is_seeded_json_lines(capsys) -> None:
    _, first, _ = run(capsys, "space", "sample", "tiny_mbconv", "-n", "4", "--seed", "3", "--costs")
    _, again, _ = run(capsys, "space", "sample", "tiny_mbconv", "-n", "4", "--seed", "3")
    lines = [json.loads(line) for line in first.splitlines()]
    assert len(lines) == 4 and all({"arch", "arch_id", "params", "macs"} <= set(line) for line in lines)
    assert [line["arch_id"] for line in lines] == [json.loads(line)["arch_id"] for line in again.splitlines()]
    space = load_space("tiny_mbconv")
    assert space.arch(lines[0]["arch"]).arch_id == lines[0]["arch_id"]


def test_stats_of_a_reference_network_needs_no_arch(capsys) -> None:
    code, out, _ = run(capsys, "space", "stats", "mobilenetv3_large", "--json")
    stats = json.loads(out)
    assert code == 0
    assert {"params", "macs", "peak_activation_bytes", "weight_bytes", "arch_id"} <= set(stats)
    assert stats["params"] == load_space("mobilenetv3_large").counts(load_space("mobilenetv3_large").from_index(0))["params"]


@pytest.mark.parametrize("arch_arg", ["json", "file", "nb201", "max", "min"])
def test_stats_accepts_every_arch_form(capsys, tmp_path, arch_arg: str) -> None:
    nb201 = load_space("nb201")
    arch = nb201.from_nb201_index(42)
    given = {"json": arch.to_json(), "nb201": nb201.to_string(arch), "max": "max", "min": "min"}.get(arch_arg)
    if arch_arg == "file":
        (tmp_path / "a.json").write_text(json.dumps(dict(arch)))
        given = str(tmp_path / "a.json")
    code, out, _ = run(capsys, "space", "stats", "nb201", given, "--json")
    stats = json.loads(out)
    assert code == 0
    if arch_arg in ("json", "file", "nb201"):
        assert stats["arch_id"] == arch.arch_id
    if arch_arg == "max":
        assert stats["params"] == 1531546


def test_stats_resolution_override_changes_macs_not_params(capsys) -> None:
    _, at224, _ = run(capsys, "space", "stats", "mobilenetv2", "--json")
    _, at160, _ = run(capsys, "space", "stats", "mobilenetv2", "--resolution", "160", "--json")
    a, b = json.loads(at224), json.loads(at160)
    assert a["params"] == b["params"] and b["macs"] < a["macs"] and b["resolution"] == 160


@pytest.mark.parametrize("args, message", [
    (["space", "show", "tiny_mbcov"], "unknown space 'tiny_mbcov' (did you mean 'tiny_mbconv'?)"),
    (["space", "stats", "tiny_mbconv"], "give ARCH"),
    (["space", "stats", "nb201", "|nor_conv_3x3~0|+|none~0|"], "must have 3 nodes"),
    (["space", "stats", "tiny_mbconv", '{"s1.dept": 2}'], "unknown decision 's1.dept' (did you mean 's1.depth'?)"),
    (["space", "stats", "tiny_mbconv", "{not json"], "not valid JSON"),
    (["space", "stats", "tiny_mbconv", "no/such/file.json"], "neither inline JSON"),
    (["space", "stats", "tiny_mbconv", "max", "--dtype", "float64"], "unknown dtype 'float64'"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_bad_decision_value_names_the_choices(capsys) -> None:
    space = load_space("tiny_mbconv")
    values = dict(space.extreme(True))
    values["s2.0.kernel"] = 7
    code, _, err = run(capsys, "space", "stats", "tiny_mbconv", json.dumps(values))
    assert code == 2 and "'s2.0.kernel' = 7 is not allowed; choices: [3, 5]" in err


def test_malformed_yaml_by_path_is_one_line_from_the_real_command(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [\n  {depth: 2\n")
    r = subprocess.run([sys.executable, "-m", "nas.cli", "space", "show", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "malformed YAML at line" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
