"""Shared pieces of the search tests: a latency LUT of tiny_mbconv profiled on this machine.

The shipped local-cpu LUT is gitignored and refused on another CPU, so tests that need
LUT latency profile their own (real onnxruntime, a fast protocol, no calibration: a few
seconds) once per session.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from nas.hardware.devices import load_device
from nas.hardware.profiling import build_lut
from nas.space import load_space
from tests.hw_helpers import FAST


@pytest.fixture(scope="session")
def local_cpu_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """latency_luts-style LUT file of tiny_mbconv on local-cpu, in a temporary folder."""
    out = tmp_path_factory.mktemp("lut") / "tiny_mbconv.csv"
    build_lut(load_space("tiny_mbconv"), load_device("local-cpu"), out=out, protocol=FAST, calibrate=0)
    return out
