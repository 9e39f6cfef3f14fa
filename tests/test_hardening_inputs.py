"""No traceback and no silent garbage on hostile input (issue 14, items 5 and 6): every
case is one `hwnas: error:` line with exit code 2, found before any work starts."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nas.cli import main
from nas.data import load_dataset
from nas.errors import DataError, NasError
from nas.predictors.predictor import Predictor
from nas.predictors.store import load_arrays, save_arrays
from nas.space.registry import space_from_dict
from nas.supernet.checkpoint import load_checkpoint, save_checkpoint
from nas.supernet.config import config_from_dict
from nas.supernet.run import RunDir
from nas.supernet.supernet import Supernet
from tests.supernet_helpers import micro_space_yaml

REPO = Path(__file__).resolve().parents[1]
RIDGE = REPO / "predictors" / "eyeriss" / "nb201_latency.npz"


def _one_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwnas: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _experiment(tmp_path: Path, **changes) -> Path:
    data = {"name": "t", "space": "tiny_mbconv", "dataset": {"source": "digits"},
            "devices": {"local-cpu": {"latency": "profile"}}, "objectives": ["max accuracy"],
            "budgets": ["latency@local-cpu <= 0.4 ms"], "train": {"epochs": 1},
            "search": {"controller": {"name": "evolution", "population": 4}, "budget": 5}}
    data.update(changes)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------- text files
def test_a_non_utf8_experiment_file_is_one_line(tmp_path, capsys) -> None:
    path = _experiment(tmp_path)
    path.write_bytes(path.read_bytes().replace(b"name: t", b"name: t\xff\xfe"))
    assert main(["run", "--check", str(path)]) == 2
    _one_error(capsys, "exp.yaml: not UTF-8 text")


def test_a_non_utf8_run_json_is_one_line(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "run.json").write_bytes(b'{"schema": "\xff\xfe"}')
    assert main(["runs", "show", "r1", "--runs", str(runs)]) == 2
    _one_error(capsys, "run.json: not UTF-8 text")
    assert main(["runs", "list", "--runs", str(runs)]) == 0  # the list marks it and goes on
    assert "r1   unreadable" in capsys.readouterr().out


# ----------------------------------------------------------------------------- budgets and dataset
@pytest.mark.parametrize("budget, message", [
    ("latency@local-cpu <= -5 ms", "a time cannot be negative"),
    ("accuracy >= 150 %", "150 % is outside 0..100 %"),
    ("accuracy >= -1 %", "-1 % is outside 0..100 %"),
    ("peak_memory <= -1 KiB", "a bytes cannot be negative"),
    ("params <= -2M", "a count cannot be negative"),
])
def test_impossible_budgets_are_refused_at_check_time(tmp_path, capsys, budget: str, message: str) -> None:
    assert main(["run", "--check", str(_experiment(tmp_path, budgets=[budget]))]) == 2
    _one_error(capsys, message)


def test_search_bounds_in_a_source_unit_are_held_to_the_same_range() -> None:
    from nas.search.units import parse_quantity

    assert parse_quantity("0", "ms", "t") == 0.0 and parse_quantity("100 %", "fraction", "t") == 1.0
    with pytest.raises(NasError, match="cannot be negative"):
        parse_quantity(-5, "ms", "t")
    with pytest.raises(NasError, match="outside 0..100 %"):
        parse_quantity("1.5", "fraction", "t")
    with pytest.raises(NasError, match="not a finite quantity"):
        parse_quantity(float("inf"), "ms", "t")
    assert parse_quantity("-3", "", "t") == -3.0  # a user's column without a unit may be negative


@pytest.mark.parametrize("folder", ["/etc", "tmp"])
def test_a_dataset_folder_without_the_layout_is_refused_at_check_time(tmp_path, capsys, folder: str) -> None:
    if folder == "tmp":
        folder = str(tmp_path / "notes")
        for name in ("a", "b"):
            (tmp_path / "notes" / name).mkdir(parents=True)
            (tmp_path / "notes" / name / "x.txt").write_text("not an image")
    assert main(["run", "--check", str(_experiment(tmp_path, dataset={"source": folder}))]) == 2
    _one_error(capsys, "dataset: source:", "holds no images")


# ----------------------------------------------------------------------------- datasets
def _cifar(folder: Path, labels: list, images: np.ndarray | None = None) -> Path:
    """A CIFAR-10 python folder whose every batch holds `labels` (and `images`)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 255, (len(labels), 3072), dtype=np.uint8) if images is None else images
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": images, b"labels": labels}, fh, protocol=2)
    return folder


class _HugeArray:
    """Pickles as numpy's own array rebuild asking for 10^12 elements (allowed globals only)."""

    def __reduce__(self):
        return np.ndarray.__reduce__(np.zeros(1, dtype=np.uint8))[0], (np.ndarray, (10**12,), b"b")


def _train(tmp_path: Path, data: str, capsys) -> int:
    space = tmp_path / "micro.yaml"
    space.write_text(micro_space_yaml("micro"))
    return main(["supernet", "train", "--space", str(space), "--data", data, "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")])


def test_cifar_labels_beyond_the_networks_classes_are_refused_before_training(tmp_path, capsys) -> None:
    """Labels 0..10 for a 10-class network: an IndexError mid-training before, with config.json left."""
    folder = _cifar(tmp_path / "cifar", [i % 11 for i in range(40)])
    assert _train(tmp_path, str(folder), capsys) == 2
    _one_error(capsys, "label 10 is out of range for a network with 10 classes")
    assert not (tmp_path / "run" / "config.json").exists()


def test_cifar_string_labels_are_one_line(tmp_path, capsys) -> None:
    folder = _cifar(tmp_path / "cifar", ["cat", "dog"] * 20)
    assert _train(tmp_path, str(folder), capsys) == 2
    _one_error(capsys, "labels must be one integer per image")
    assert not (tmp_path / "run").exists()


def test_a_cifar_batch_asking_for_a_huge_array_is_one_line(tmp_path, capsys) -> None:
    folder = _cifar(tmp_path / "cifar", [0, 1] * 20)
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _HugeArray(), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR python batch"):
        load_dataset(str(folder), 32)
    assert _train(tmp_path, str(folder), capsys) == 2
    _one_error(capsys, "data_batch_3: not a CIFAR python batch")


def test_nan_images_are_refused_at_load(tmp_path, capsys) -> None:
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    x[3, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(40) % 4)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_dataset(str(tmp_path / "nan.npz"), 8)
    assert _train(tmp_path, str(tmp_path / "nan.npz"), capsys) == 2
    _one_error(capsys, "nan.npz:x: images hold NaN or infinite values")
    assert not (tmp_path / "run").exists()


def test_labels_within_the_networks_classes_load() -> None:
    assert load_dataset("digits", 8, classes=10).classes == 10
    with pytest.raises(DataError, match="label 9 is out of range for a network with 5 classes"):
        load_dataset("digits", 8, classes=5)


# ----------------------------------------------------------------------------- checkpoints
def _supernet_run(tmp_path: Path, poison: bool = False) -> Path:
    """A supernet run folder as training leaves it (config.json + checkpoint.pt), untrained."""
    space_file = tmp_path / "micro.yaml"
    space_file.write_text(micro_space_yaml("micro"))
    config = config_from_dict({"space": str(space_file), "epochs": 1})
    space = space_from_dict(yaml.safe_load(space_file.read_text()), str(space_file))
    run = RunDir(tmp_path / "run")
    run.prepare(config, space, None)
    model = Supernet(space).state_dict()
    if poison:
        name = next(k for k, v in model.items() if v.is_floating_point())
        model[name] = model[name].clone().fill_(float("nan"))
    save_checkpoint(run.checkpoint, {"epoch": 1, "step": 0, "model": model, "history": []})
    return run.path


def test_a_zero_byte_checkpoint_is_one_line(tmp_path, capsys) -> None:
    run = _supernet_run(tmp_path)
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(NasError, match="not a readable hwnas checkpoint"):
        load_checkpoint(run / "checkpoint.pt")
    assert main(["supernet", "eval", str(run), "--archs", "max"]) == 2
    _one_error(capsys, "checkpoint.pt: not a readable hwnas checkpoint")


def test_a_checkpoint_asking_for_a_huge_array_is_one_line(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "hwnas.supernet-checkpoint/1", "model": {"w": _HugeArray()}}, path)
    with pytest.raises(NasError, match="not a readable hwnas checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path, capsys) -> None:
    """It evaluated to chance accuracy with exit code 0."""
    run = _supernet_run(tmp_path, poison=True)
    assert main(["supernet", "eval", str(run), "--archs", "max"]) == 2
    _one_error(capsys, "holds NaN or infinite values")


# ----------------------------------------------------------------------------- predictors
def _doctored(tmp_path: Path, change) -> Path:
    meta, arrays = load_arrays(RIDGE)
    change(arrays)
    path = tmp_path / "nb201_latency.npz"
    save_arrays(path, meta, arrays)
    return path


def _predict(tmp_path: Path, path: Path) -> int:
    archs = tmp_path / "archs.txt"
    archs.write_text("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|\n")
    return main(["predictor", "predict", str(path), "--archs", str(archs)])


def test_an_intact_predictor_predicts(tmp_path, capsys) -> None:
    shutil.copy(RIDGE, tmp_path / "ok.npz")
    assert _predict(tmp_path, tmp_path / "ok.npz") == 0
    assert capsys.readouterr().out.startswith("arch_id,latency_ms")


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("coef"), "arrays are incomplete or garbled"),
    (lambda a: a.update(coef=a["coef"][:-3]), "arrays do not fit its features"),
    (lambda a: a.update(coef=np.where(np.arange(len(a["coef"])) == 2, np.nan, a["coef"])), "predicts NaN"),
])
def test_a_doctored_predictor_file_is_refused_at_load(tmp_path, capsys, change, message: str) -> None:
    path = _doctored(tmp_path, change)
    with pytest.raises(DataError, match=message):
        Predictor.load(path)
    assert _predict(tmp_path, path) == 2
    _one_error(capsys, message)

