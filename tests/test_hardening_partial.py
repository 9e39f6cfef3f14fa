"""No partial files (issue 14, item 7): a refused fine-tune leaves no finetune/settings.json
to block a rerun with other settings, and a refused training leaves no config.json."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.export import export_arch
from nas.export.bundle import FINETUNE_DIR
from nas.export.finetuning import finetune
from nas.space import load_space
from tests.supernet_helpers import micro_space_yaml, one_thread  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("partial")
    (folder / "micro.yaml").write_text(micro_space_yaml("micro"))
    space = load_space(folder / "micro.yaml")
    return export_arch(space, space.extreme(False), folder / "out", latency_protocol=None)


def _npz(path: Path, n: int, classes: int) -> Path:
    x = np.random.default_rng(0).integers(0, 255, (n, 16, 16), dtype=np.uint8)
    np.savez(path, x=x, y=np.arange(n) % classes)
    return path


def _one_error(capsys, fragment: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwnas: error: ") and "Traceback" not in err, err
    assert fragment in err, err


@pytest.mark.parametrize("case", ["missing", "classes", "tiny"])
def test_a_refused_finetune_leaves_no_settings(exported, tmp_path, capsys, case: str) -> None:
    data, fragment = {
        "missing": (str(tmp_path / "nowhere"), "does not exist"),
        "classes": (str(_npz(tmp_path / "c12.npz", 120, 12)), "has 12 classes"),
        "tiny": (str(_npz(tmp_path / "tiny.npz", 40, 10)), "fewer than a batch"),
    }[case]
    args = ["finetune", str(exported), "--data", data, "--epochs", "1", "--quiet"]
    assert main([*args, "--batch-size", "64"] if case == "tiny" else args) == 2
    _one_error(capsys, fragment)
    assert not (exported / FINETUNE_DIR / "settings.json").exists()


def test_a_finetune_after_a_refused_one_runs_with_its_own_settings(exported, tmp_path, capsys) -> None:
    assert main(["finetune", str(exported), "--data", str(tmp_path / "nowhere"), "--epochs", "3", "--quiet"]) == 2
    capsys.readouterr()
    assert finetune(exported, "digits", 1, progress=False, max_steps=2) == {}  # killed after 2 steps
    settings = (exported / FINETUNE_DIR / "settings.json").read_text()
    assert '"epochs": 1' in settings and '"data": "digits"' in settings


def test_a_training_refused_for_its_labels_leaves_no_run_folder(tmp_path, capsys) -> None:
    (tmp_path / "micro.yaml").write_text(micro_space_yaml("micro"))
    data = _npz(tmp_path / "c11.npz", 110, 11)
    out = tmp_path / "run"
    assert main(["supernet", "train", "--space", str(tmp_path / "micro.yaml"), "--data", str(data), "--epochs", "1",
                 "--quiet", "--out", str(out)]) == 2
    _one_error(capsys, "label 10 is out of range for a network with 10 classes")
    assert not (out / "config.json").exists() and not out.exists()
