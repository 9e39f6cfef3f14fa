"""`hwnas device onboard` on this machine: rounds, the fidelity curve, resuming without
re-measuring, and bad settings."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile

import pytest

from nas.cli import main
from nas.predictors.predictor import Predictor

QUICK = ["--warmup", "1", "--repeats", "3", "--rounds", "1", "--passes", "1"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_onboard_local_cpu_in_rounds_and_resume(tmp_path, capsys):
    out = tmp_path / "ob"
    base = ["device", "onboard", "local-cpu", "--space", "tiny_mbconv", "--batch", 5, "--target", 0.999,
            "--pool", 300, "-o", out, *QUICK]
    code, text, err = run(capsys, *base, "--budget", 10)
    assert code == 0, err
    assert "after 10 measurements" in text
    first = _rows(out / "measurements.csv")
    assert len(first) == 10 and len({r["arch_id"] for r in first}) == 10
    report = json.loads((out / "fidelity.json").read_text())
    assert [p["measured"] for p in report["curve"]] == [10]
    # a second call with a larger budget continues: the first 10 are kept, not measured again
    code, text, err = run(capsys, *base, "--budget", 20)
    assert code == 0, err
    rows = _rows(out / "measurements.csv")
    assert len(rows) == 20 and rows[:10] == first
    report = json.loads((out / "fidelity.json").read_text())
    assert [p["measured"] for p in report["curve"]] == [10, 15, 20]
    assert all(0 <= p["loo_within_10_lower_90"] <= p["loo_within_10"] <= 1 for p in report["curve"])
    predictor = Predictor.load(out / "predictor.npz")
    assert predictor.meta["training"]["n_train"] == 20 and predictor.meta["device"] == "local-cpu"
    profile = json.loads((out / "profile.json").read_text())
    assert profile["device"] == "local-cpu" and profile["predictor_model"] == predictor.meta["model"]


@pytest.mark.parametrize("argv, message", [
    (["--target", "1.5"], "--target 1.5 must be a share in"),
    (["--budget", "4"], "--budget 4 is below the first round's 10"),
])
def test_onboard_bad_settings_are_one_line_errors(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "device", "onboard", "local-cpu", "--space", "tiny_mbconv", "-o", tmp_path / "ob", *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "ob" / "measurements.csv").exists()


def test_onboard_refuses_another_devices_folder(tmp_path, capsys):
    out = tmp_path / "ob"
    out.mkdir()
    (out / "fidelity.json").write_text(json.dumps({"schema": "hwnas.onboard/1",
                                                   "settings": {"space": "tiny_mbconv", "device": "pi4-ort"}}))
    code, _, err = run(capsys, "device", "onboard", "local-cpu", "--space", "tiny_mbconv", "-o", out, *QUICK)
    assert code == 2 and "holds the onboarding of pi4-ort" in err and err.count("\n") == 1


def test_onboard_at_a_resolution_the_space_offers(tmp_path, capsys):
    """ofa_mbv3 at 128 px: every measured arch is one of the space's 128 px archs (its
    resolution decision says so), the settings and profile record it, and resuming the
    folder at another resolution is refused before anything is measured."""
    out = tmp_path / "ob"
    base = ["device", "onboard", "local-cpu", "--space", "ofa_mbv3", "--budget", 10, "--batch", 10,
            "--pool", 40, "-o", out, *QUICK]
    code, text, err = run(capsys, *base, "--resolution", 128)
    assert code == 0, err
    rows = _rows(out / "measurements.csv")
    assert len(rows) == 10 and {json.loads(r["arch"])["arch"]["resolution"] for r in rows} == {128}
    assert json.loads((out / "fidelity.json").read_text())["settings"]["resolution"] == 128
    assert json.loads((out / "profile.json").read_text())["resolution"] == 128
    code, _, err = run(capsys, *base, "--resolution", 160, "--budget", 20)
    assert code == 2 and "holds an onboarding at --resolution 128, not 160" in err and err.count("\n") == 1
    assert len(_rows(out / "measurements.csv")) == 10


@pytest.mark.parametrize("command", [["device", "onboard", "local-cpu", "--space"], ["measure", "--device", "local-cpu", "--n", "3"]])
@pytest.mark.parametrize("space, resolution, message", [
    ("ofa_mbv3", 130, "space ofa_mbv3 does not offer resolution 130 (its resolution decision: 128, 132,"),
    ("tiny_mbconv", 64, "space tiny_mbconv does not offer resolution 64: its archs run at 32 px only"),
])
def test_a_resolution_the_space_does_not_offer_is_refused(tmp_path, capsys, command, space, resolution, message):
    out = tmp_path / "out"
    argv = [*command, space] if command[0] == "device" else [command[0], space, *command[1:]]
    code, _, err = run(capsys, *argv, "--resolution", resolution, "-o", out, *QUICK)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_measure_at_a_resolution(tmp_path, capsys):
    out = tmp_path / "m.csv"
    code, _, err = run(capsys, "measure", "ofa_mbv3", "--device", "local-cpu", "--n", 3, "--resolution", 128,
                       "-o", out, *QUICK)
    assert code == 0, err
    rows = _rows(out)
    assert len(rows) == 3 and {json.loads(r["arch"])["arch"]["resolution"] for r in rows} == {128}
    assert json.loads(out.with_suffix(".json").read_text())["resolution"] == 128


def _run_kit(zip_path, results, tmp_path, threads: int) -> None:
    kit = tmp_path / zip_path.stem
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(kit)
    r = subprocess.run([sys.executable, "runner.py", "--threads", str(threads), *QUICK, "--out", str(results)],
                       cwd=kit, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_onboard_a_device_without_hwnas_through_kit_rounds(tmp_path, capsys):
    """pi4-ort (4 threads in its profile): every round a kit, each stop one line saying what
    to run and where the results go; the rerun reads them back, checked against the archs
    asked for, and goes on."""
    out = tmp_path / "ob"
    base = ["device", "onboard", "pi4-ort", "--space", "tiny_mbconv", "--kit", "--batch", 5, "--target", 0.999,
            "--pool", 300, "--budget", 15, "-o", out]
    code, text, err = run(capsys, *base)
    assert code == 2 and text == "" and len(err.strip().splitlines()) == 1
    assert "onboarding round 1 needs the device" in err and "--threads 4" in err and "round1.csv" in err
    manifest = json.loads(zipfile.ZipFile(out / "kits" / "round1.zip").read("manifest.json"))
    assert len(manifest["entries"]) == 10 and not (out / "measurements.csv").exists()

    # results from the wrong thread count are refused, nothing recorded
    _run_kit(out / "kits" / "round1.zip", out / "kits" / "round1.csv", tmp_path, threads=1)
    code, _, err = run(capsys, *base)
    assert code == 2 and "measured differently from device pi4-ort: threads 1 vs device 4" in err
    assert not (out / "measurements.csv").exists()

    _run_kit(out / "kits" / "round1.zip", out / "kits" / "round1.csv", tmp_path, threads=4)
    code, _, err = run(capsys, *base)
    assert code == 2 and "onboarding round 2 needs the device" in err  # round 1 read, fitted, round 2 asked for
    rows = _rows(out / "measurements.csv")
    assert [r["arch_id"] for r in rows] == [e["key"] for e in manifest["entries"]]
    report = json.loads((out / "fidelity.json").read_text())
    assert [p["measured"] for p in report["curve"]] == [10] and report["kit_rounds"][0]["scale"] == 1.0

    results2 = out / "kits" / "round2.csv"
    _run_kit(out / "kits" / "round2.zip", results2, tmp_path, threads=4)
    header, *rest = results2.read_text().splitlines(keepends=True)
    results2.write_text(header + "".join(rest[:-1]))  # a round that lacks an arch asked for
    code, _, err = run(capsys, *base)
    assert code == 2 and "no timing for 1 of the 5 archs asked for" in err
    results2.write_text(header + "".join(rest))
    code, text, err = run(capsys, *base)
    assert code == 0, err
    assert "after 15 measurements" in text and len(_rows(out / "measurements.csv")) == 15
    report = json.loads((out / "fidelity.json").read_text())
    assert [r["round"] for r in report["kit_rounds"]] == [1, 2] and report["kit_rounds"][1]["scale"] > 0
    code, _, err = run(capsys, "device", "onboard", "pi4-ort", "--space", "tiny_mbconv", "-o", out)
    assert code == 2 and "holds an onboarding through kits; pass --kit" in err
