"""The memory model against ONNX initializers and against memory measured in fresh onnxruntime processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.hardware.devices import Device, load_device
from nas.hardware.memory import check_memory, measured_memory_unavailable
from nas.space import load_space

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(measured_memory_unavailable(load_device("local-cpu")) is not None,
                                reason="this machine does not expose process memory (Linux /proc only)")


def test_measured_memory_holds_the_weights_and_tracks_the_model() -> None:
    """ofa_mbv3 networks hold 15-30 MB of weights: a runtime's resident memory must grow by at least that."""
    report = check_memory(load_space("ofa_mbv3"), load_device("local-cpu"), n=4, seed=3, resolution=128)
    assert report["n"] == 4 and report["initializers_match_weights"]
    for arch in report["archs"]:
        assert arch["initializer_bytes"] == arch["weight_bytes"] > 10e6
        assert arch["load_bytes"] >= arch["weight_bytes"], arch
        assert arch["run_bytes"] >= 0
    assert report["load_over_weights"]["min"] >= 1.0
    assert report["spearman_weights_vs_load"] is not None


def test_a_device_whose_backend_exposes_no_memory_is_refused() -> None:
    device = Device(name="eager", backend="torch")
    assert "onnxruntime backend" in measured_memory_unavailable(device)
    with pytest.raises(NasError, match="measured memory needs the onnxruntime backend; device eager uses torch"):
        check_memory(load_space("tiny_mbconv"), device, n=2)


def test_cli_reports_json_and_one_line_errors() -> None:
    r = subprocess.run([sys.executable, "-m", "nas.cli", "memory", "check", "--space", "tiny_mbconv", "--device",
                        "local-cpu", "--n", "2", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["space"] == "tiny_mbconv" and len(report["archs"]) == 2 and report["initializers_match_weights"]
    bad = subprocess.run([sys.executable, "-m", "nas.cli", "memory", "check", "--space", "tiny_mbconv", "--device",
                          "jetson-tx2"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
