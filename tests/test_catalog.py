"""The catalogue's layers: explicit folders, then HWNAS_* variables, then the working folder,
then the shipped data; the first layer holding a file wins, and new files go to the first
user layer, never into the package (nas.catalog)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from nas import catalog
from nas.errors import NasError
from nas.hardware.devices import device_names, load_device
from nas.hardware.profiling import default_lut_path
from nas.predictors.reference import load_reference, reference_dir
from nas.space import load_space, space_files
from tests.hw_helpers import small_space
from tests.space.test_grammar import BASE

REPO = Path(__file__).resolve().parents[1]


def space_file(folder: Path, name: str, classes: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": name, "classes": classes}))
    return path


def device_file(folder: Path, name: str, threads: int) -> Path:
    (folder / name).mkdir(parents=True, exist_ok=True)
    path = folder / name / "device.yaml"
    path.write_text(yaml.safe_dump({"name": name, "backend": "onnxruntime", "threads": threads}))
    return path


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder outside the checkout, with no HWNAS_* variable set."""
    for variable in catalog.ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_the_checkout_is_both_the_working_folder_and_the_shipped_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for kind in catalog.ENVIRONMENT:
        monkeypatch.delenv(catalog.ENVIRONMENT[kind], raising=False)
        assert catalog.shipped_dir(kind).resolve() == (REPO / kind).resolve()  # the editable install maps it
        assert [p.resolve() for p in catalog.layers(kind)] == [(REPO / kind).resolve()]  # listed once
    assert catalog.write_dir(catalog.LUTS) == REPO / "latency_luts"


def test_shipped_data_serves_an_empty_working_folder(elsewhere: Path) -> None:
    assert {"tiny_mbconv", "nb201", "mobilenetv2"} <= set(space_files())
    assert space_files()["nb201"].is_relative_to(catalog.shipped_dir(catalog.SPACES))
    assert {"local-cpu", "pi4-ort", "jetson-tx2"} <= set(device_names())
    assert load_device("pi4-ort").threads == 4
    assert "edgegpu/nb201_latency" in catalog.predictor_files("nb201")
    assert len(load_reference(load_space("nb201"))) > 0
    assert catalog.find_predictor("edgegpu/nb201_nothing") is None


def test_a_users_spaces_hide_shipped_ones_in_order(elsewhere: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    mine = space_file(elsewhere / "search_spaces", "tiny_mbconv", classes=7)
    space_file(elsewhere / "search_spaces" / "deeper", "only_here")
    assert space_files()["tiny_mbconv"] == mine and load_space("tiny_mbconv").classes == 7
    assert space_files()["only_here"].parent.name == "deeper" and "nb201" in space_files()
    first, second = tmp_path / "first", tmp_path / "second"
    space_file(first, "tiny_mbconv", classes=3)
    space_file(second, "tiny_mbconv", classes=5)
    monkeypatch.setenv("HWNAS_SPACES", f"{first}:{second}")
    assert load_space("tiny_mbconv").classes == 3  # the variable's first folder, before ./search_spaces
    monkeypatch.setenv("HWNAS_SPACES", str(second))
    assert load_space("tiny_mbconv").classes == 5


def test_device_profiles_and_luts_layer_and_new_luts_go_to_the_first_user_layer(
        elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = small_space("catalog_probe")  # a name no checkout has profiled a LUT of
    shipped = catalog.shipped_dir(catalog.LUTS)
    device = load_device("local-cpu")
    assert default_lut_path(device, space) == elsewhere / "latency_luts" / "local-cpu" / f"{space.name}.csv"
    device_file(elsewhere / "latency_luts", "local-cpu", threads=3)
    device_file(elsewhere / "latency_luts", "my-board", threads=2)
    assert load_device("local-cpu").threads == 3 and load_device("my-board").threads == 2
    assert {"my-board", "pi4-ort"} <= set(device_names())

    first, second = tmp_path / "luts-a", tmp_path / "luts-b"
    monkeypatch.setenv("HWNAS_LUTS", f"{first}:{second}")
    assert load_device("local-cpu").threads == 3  # no profile in the variable's folders: ./latency_luts's
    assert default_lut_path(load_device("local-cpu"), space) == first / "local-cpu" / f"{space.name}.csv"
    (second / "pi4-ort").mkdir(parents=True)
    (second / "pi4-ort" / f"{space.name}.csv").write_text("key\n")
    pi4 = load_device("pi4-ort")
    assert default_lut_path(pi4, space) == second / "pi4-ort" / f"{space.name}.csv"  # an existing LUT is found
    assert pi4.folder == first / "pi4-ort"  # where new ones go
    assert not default_lut_path(pi4, load_space("nb201")).is_relative_to(shipped)
    with pytest.raises(NasError, match="unknown device 'my-bored'.*did you mean 'my-board'"):
        load_device("my-bored")


def test_predictors_and_reference_sets_layer(elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = catalog.shipped_dir(catalog.PREDICTORS)
    mine = tmp_path / "mine"
    (mine / "edgegpu").mkdir(parents=True)
    (mine / "my-board").mkdir()
    shutil.copy(shipped / "edgegpu" / "nb201_latency.npz", mine / "edgegpu" / "nb201_latency.npz")
    shutil.copy(shipped / "raspi4" / "nb201_latency.npz", mine / "my-board" / "nb201_latency.npz")
    assert catalog.find_predictor("edgegpu/nb201_latency") == shipped / "edgegpu" / "nb201_latency.npz"
    monkeypatch.setenv("HWNAS_PREDICTORS", str(mine))
    assert catalog.find_predictor("edgegpu/nb201_latency") == mine / "edgegpu" / "nb201_latency.npz"
    assert catalog.find_predictor("edgegpu/nb201_latency.npz") == mine / "edgegpu" / "nb201_latency.npz"
    files = catalog.predictor_files("nb201")
    assert files["edgegpu/nb201_latency"] == mine / "edgegpu" / "nb201_latency.npz"
    assert files["my-board/nb201_latency"] == mine / "my-board" / "nb201_latency.npz"
    assert files["edgegpu/nb201_energy"] == shipped / "edgegpu" / "nb201_energy.npz"
    assert list(files) == sorted(files) and all(name.split("/")[1].startswith("nb201_") for name in files)
    assert catalog.predictor_dirs() == [mine, shipped]

    space = load_space("nb201")
    shipped_set = load_reference(space)
    assert reference_dir() == mine / "reference"  # a new set goes to the first user layer
    (mine / "reference").mkdir()
    data = json.loads((shipped / "reference" / "nb201.json").read_text())
    data["archs"] = data["archs"][3:5]
    (mine / "reference" / "nb201.json").write_text(json.dumps(data))
    assert [a.arch_id for a in load_reference(space)] == [a.arch_id for a in shipped_set[3:5]]
