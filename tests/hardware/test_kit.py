"""The profiling kit: runs in a bare onnxruntime + numpy venv, and its results import
into a LUT only when every row is present, unique and sane."""
from __future__ import annotations

import os
import shutil
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.hardware.devices import load_device
from nas.hardware.kit import import_results, write_kit
from nas.hardware.lut import LUT, LUTCost
from nas.space.tables import unique_layers
from tests.hw_helpers import small_space

BARE_VENV = Path(os.environ.get("HWNAS_KIT_VENV", "/tmp/hwnas-kit-venv"))


@pytest.fixture(scope="module")
def bare_python() -> Path:
    """A venv holding only onnxruntime and numpy (reused between runs, installed from PyPI)."""
    python = BARE_VENV / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(BARE_VENV)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q", "onnxruntime", "numpy"], capture_output=True, text=True)
        if r.returncode:
            shutil.rmtree(BARE_VENV, ignore_errors=True)
            pytest.skip(f"cannot install onnxruntime into a bare venv (no package index?): {r.stderr.strip()[-200:]}")
    probe = subprocess.run([str(python), "-c", "import nas"], capture_output=True, cwd=BARE_VENV)
    assert probe.returncode != 0, "the bare venv must not see hwnas"
    return python


@pytest.fixture(scope="module")
def results(tmp_path_factory, bare_python) -> Path:
    folder = tmp_path_factory.mktemp("kit")
    space = small_space()
    manifest = write_kit(space, folder / "kit.zip")
    assert len(manifest["entries"]) == len(unique_layers(space))
    with zipfile.ZipFile(folder / "kit.zip") as z:
        names = set(z.namelist())
        assert {"runner.py", "measure.py", "manifest.json"} <= names
        z.extractall(folder / "unzipped")
    r = subprocess.run([str(bare_python), "runner.py", "--threads", "1", "--warmup", "1", "--repeats", "6",
                        "--rounds", "2", "--out", str(folder / "results.csv")],
                       cwd=folder / "unzipped", capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    return folder / "results.csv"


def test_kit_round_trip_in_bare_onnxruntime_venv(results, tmp_path) -> None:
    space, device = small_space(), load_device("local-cpu")
    lut = import_results(results, space, device, tmp_path / "lut.csv")
    assert set(lut.entries) == {s.key for s in unique_layers(space)}
    assert LUT.load(tmp_path / "lut.csv").entries == lut.entries
    assert LUTCost(lut, space, calibrated=False, device=device).predict(space.sample_codes(0, 4)).min() > 0
    assert lut.meta["reference"]["ms"] > 0, "the device's timing of the reference network comes back with the LUT"


def _edit(results: Path, tmp_path: Path, change) -> Path:
    lines = results.read_text().splitlines()
    change(lines)
    out = tmp_path / "edited.csv"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize("change, message", [
    (lambda l: l.pop(4), r"1 block\(s\) missing"),
    (lambda l: l.insert(4, l[3]), r"edited\.csv:5: duplicated block"),
    (lambda l: l.__setitem__(3, l[3][:20]), r"edited\.csv:4: expected 9 fields"),
    (lambda l: l.__setitem__(3, l[3].replace(l[3].split(",")[2], "nan", 1)), r"edited\.csv:4: median = nan"),
    (lambda l: l.__setitem__(3, l[3].replace(l[3].split(",")[2], "0", 1)), r"edited\.csv:4: median = 0"),
    (lambda l: l.__setitem__(3, l[3].replace(l[3].split(",")[2], "-1.5", 1)), r"edited\.csv:4: median = -1.5"),
    (lambda l: l.__setitem__(3, l[3].replace(l[3].split(",")[2], "fast", 1)), r"edited\.csv:4: value columns"),
    (lambda l: l.__setitem__(0, "# {not json"), r"edited\.csv:1: garbled header"),
    (lambda l: l.__setitem__(1, "id,key,time"), r"edited\.csv:2: expected columns"),
])
def test_bad_results_are_refused_with_line_numbers(results, tmp_path, change, message) -> None:
    bad = _edit(results, tmp_path, change)
    with pytest.raises(NasError, match=message):
        import_results(bad, small_space(), load_device("local-cpu"), tmp_path / "lut.csv")
    assert not (tmp_path / "lut.csv").exists(), "a refused import writes nothing"


def test_results_of_another_space_or_runtime_are_refused(results, tmp_path) -> None:
    with pytest.raises(NasError, match="kit of space 'small'"):
        import_results(results, small_space("other"), load_device("local-cpu"), tmp_path / "lut.csv")
    with pytest.raises(NasError, match=r"threads 1 vs device 4"):
        import_results(results, small_space(), load_device("pi4-ort"), tmp_path / "lut.csv")
    lut = import_results(results, small_space(), load_device("pi4-ort"), tmp_path / "lut.csv", allow_mismatch=True)
    assert lut.meta["runtime"]["threads"] == 1
