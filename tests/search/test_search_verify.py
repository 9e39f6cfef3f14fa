"""`verify`: the final front re-measured on this machine, every budget re-checked on the
measurement, the experiment exporting the best arch that meets them measured."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile

import pytest

from nas.cli import main
from nas.errors import ConfigError, NasError
from nas.search import run_search
from nas.hardware.kit import KitPending
from tests.search_helpers import local_cpu_lut  # noqa: F401  (a fixture)


def _config(tmp_path, lut, budget: str, **extra) -> dict:
    # a queried counter stands in for accuracy: a real front with no training
    return {"space": "tiny_mbconv", "objectives": ["max params", "min latency@local-cpu"],
            "constraints": [f"latency@local-cpu <= {budget}"],
            "sources": {"latency@local-cpu": {"lut": str(lut)}, "params": {"counter": "params", "queried": True}},
            "controller": {"name": "evolution", "population": 6, "init": 4}, "budget": 12, "seed": 0,
            "out": str(tmp_path / "out"), **extra}


@pytest.fixture(scope="module")
def verified(tmp_path_factory, local_cpu_lut):  # noqa: F811
    tmp = tmp_path_factory.mktemp("verify")
    return tmp, run_search(_config(tmp, local_cpu_lut, "0.6 ms", verify=["local-cpu"]), progress=False)


def test_every_front_arch_is_measured_and_compared_with_its_prediction(verified) -> None:
    _, run = verified
    v = run.summary["verified"]
    front = run.summary["front"]
    assert v["metrics"] == ["latency@local-cpu"] and len(v["front"]) == len(front) > 1
    for row, arch in zip(v["front"], front):
        lat = row["latency"]["latency@local-cpu"]
        assert row["arch_id"] == arch["arch_id"]
        assert lat["predicted_ms"] == pytest.approx(arch["metrics"]["latency@local-cpu"])
        assert 0 < lat["p10_ms"] <= lat["measured_ms"] <= lat["p90_ms"]
        assert lat["error"] == pytest.approx(lat["predicted_ms"] / lat["measured_ms"] - 1)
        assert row["meets_predicted"]  # the front is feasible on the predictions by construction
        assert row["meets_measured"] == (lat["measured_ms"] <= 0.6)
    best = v["best"]
    assert best is None or best == next(r for r in v["front"] if r["meets_measured"])
    assert v["meets_measured"] == sum(r["meets_measured"] for r in v["front"])


def test_front_verified_csv_matches_the_summary(verified) -> None:
    tmp, run = verified
    rows = list(csv.DictReader(open(tmp / "out" / "front_verified.csv")))
    assert [r["arch_id"] for r in rows] == [r["arch_id"] for r in run.summary["verified"]["front"]]
    first = run.summary["verified"]["front"][0]["latency"]["latency@local-cpu"]
    assert float(rows[0]["latency@local-cpu measured_ms"]) == first["measured_ms"]
    on_disk = json.loads((tmp / "out" / "summary.json").read_text())
    assert on_disk["verified"]["front"] == run.summary["verified"]["front"]


def test_the_cli_flag_verifies_and_says_what_it_found(tmp_path, local_cpu_lut, capsys) -> None:  # noqa: F811
    config = tmp_path / "search.yaml"
    config.write_text(json.dumps(_config(tmp_path, local_cpu_lut, "0.6 ms")))
    assert main(["search", str(config), "--verify", "local-cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    v = summary["verified"]
    assert "meet every budget when measured" in out and f"{v['meets_measured']} of {len(v['front'])}" in out
    assert ("best measured: " + v["best"]["arch_id"] in out) if v["best"] else ("no front arch meets" in out)


@pytest.mark.parametrize("verify, message", [
    (["pi4-ort"], r"verify: 'pi4-ort' has no latency in this search \(its latency metrics: latency@local-cpu\)"),
    (["nowhere"], "verify: 'nowhere' has no latency in this search"),
])
def test_a_device_the_search_does_not_predict_is_refused_before_any_query(tmp_path, local_cpu_lut, verify,
                                                                         message) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        run_search(_config(tmp_path, local_cpu_lut, "0.6 ms", verify=verify), progress=False)
    assert not (tmp_path / "out").exists()


def _remote_config(tmp_path, lut) -> dict:
    config = _config(tmp_path, lut, "0.6 ms", verify=["pi4-ort"])
    config["constraints"].append("latency@pi4-ort <= 1 s")
    config["sources"]["latency@pi4-ort"] = {"like": "local-cpu"}
    return config


def test_another_device_gets_one_kit_round_and_the_rerun_reads_it_back(tmp_path, local_cpu_lut) -> None:  # noqa: F811
    config = _remote_config(tmp_path, local_cpu_lut)
    with pytest.raises(KitPending, match=r"verify: the front's latency on pi4-ort needs one kit round: copy .*"
                                         r"pi4-ort_front.zip .*--threads 4 .*then rerun \(no new queries\)"):
        run_search(config, progress=False)
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())  # the search itself is written and kept
    assert "verified" not in summary and summary["front"]
    with zipfile.ZipFile(out / "verify" / "pi4-ort_front.zip") as z:
        z.extractall(tmp_path / "kit")
    manifest = json.loads((tmp_path / "kit" / "manifest.json").read_text())
    assert [e["key"] for e in manifest["entries"]] == [r["arch_id"] for r in summary["front"]]
    results = out / "verify" / "pi4-ort_front.csv"
    r = subprocess.run([sys.executable, "runner.py", "--threads", "4", "--warmup", "1", "--repeats", "6", "--rounds", "1",
                        "--passes", "1", "--out", str(results)], cwd=tmp_path / "kit", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    run = run_search(config, progress=False)  # the finished study resumes without queries
    assert run.summary["queries"] == summary["queries"]
    v = run.summary["verified"]
    assert v["metrics"] == ["latency@pi4-ort"] and len(v["front"]) == len(summary["front"])
    measured = {row["key"]: float(row["p10"]) for row in csv.DictReader(  # the kit protocol's statistic
        line for line in results.read_text().splitlines() if not line.startswith("#"))}
    for row in v["front"]:  # a stand-in LUT is another machine's scale: the kit's figures as measured
        assert row["latency"]["latency@pi4-ort"]["statistic"] == "p10"
        assert row["latency"]["latency@pi4-ort"]["measured_ms"] == measured[row["arch_id"]]
        assert row["meets_measured"] == (row["latency"]["latency@pi4-ort"]["measured_ms"] <= 1000)

    header, *rest = results.read_text().splitlines(keepends=True)
    results.write_text(header.replace('"kit": "', '"kit": "0') + "".join(rest))
    with pytest.raises(NasError, match="results of another kit .* delete the file and rerun"):
        run_search(config, progress=False)
    results.write_text(header + "".join(rest[:-1]))
    with pytest.raises(NasError, match="no timing for 1 of the"):
        run_search(config, progress=False)
