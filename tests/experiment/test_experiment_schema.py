"""Experiment configs: every mistake is one line naming the key, found before any work."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas.errors import NasError
from nas.experiment.schema import experiment_from_dict, load_experiment

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


def valid() -> dict:
    """A small valid experiment (the quickstart's shape)."""
    return {
        "name": "t", "space": "tiny_mbconv", "dataset": {"source": "digits"},
        "devices": {"local-cpu": {"latency": "profile"}, "pi4-ort": {"latency": {"like": "local-cpu"}, "energy": "analytic"}},
        "objectives": ["max accuracy"], "budgets": ["latency@local-cpu <= 0.4 ms", "energy@pi4-ort <= 2 mJ"],
        "train": {"epochs": 1}, "search": {"controller": {"name": "evolution", "population": 4}, "budget": 5},
    }


def error_of(data: dict, tmp_path: Path | None = None) -> str:
    with pytest.raises(NasError) as info:
        experiment_from_dict(data, "exp.yaml", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    return message


def with_(path: str, value, data: dict | None = None) -> dict:
    """valid() with one key (dotted path) set to value."""
    data = data or valid()
    target = data
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    target[last] = value
    return data


def test_the_valid_config_passes_and_fills_defaults() -> None:
    exp = experiment_from_dict(valid())
    assert exp.devices["local-cpu"].latency.kind == "profile"
    assert exp.devices["pi4-ort"].energy.kind == "analytic"
    assert exp.accuracy.supernet is not None and exp.export is not None and exp.export.arch == "best"


@pytest.mark.parametrize("path,value,expected", [
    ("trian", {"epochs": 1}, r"unknown key 'trian' \(did you mean 'train'\?\)"),
    ("devices.local-cpu.latency", {"profle": {}}, r"devices\.local-cpu\.latency: unknown key 'profle' \(did you mean 'profile'\?\)"),
    ("search.budgte", 3, r"search: unknown key 'budgte' \(did you mean 'budget'\?\)"),
    ("export", {"measure_latncy": True}, r"export: unknown key 'measure_latncy' \(did you mean 'measure_latency'\?\)"),
])
def test_misspelled_keys_get_the_closest_valid_key(path: str, value, expected: str) -> None:
    import re

    assert re.search(expected, error_of(with_(path, value)))


def test_misspelled_training_and_controller_settings_are_caught_by_their_owners() -> None:
    assert "train: " in (msg := error_of(with_("train", {"epohcs": 1}))) and "did you mean 'epochs'" in msg
    msg = error_of(with_("search.controller", {"name": "evolution", "populaton": 4}))
    assert "unknown setting 'populaton'" in msg and "did you mean 'population'" in msg
    assert "did you mean 'evolution'" in error_of(with_("search.controller", "evolutoin"))


@pytest.mark.parametrize("path,value,expected", [
    ("seed", "zero", "seed: input should be a valid integer, got 'zero'"),
    ("threads", 0, "threads: must be at least 1, got 0"),
    ("search.budget", 2.5, "search.budget: input should be a valid integer, got 2.5"),
    ("export", {"measure_latency": "yes"}, "export.measure_latency: input should be a valid boolean, got 'yes'"),
    ("budgets", "latency@local-cpu <= 1 ms", "budgets: input should be a valid list"),
    ("devices.local-cpu.latency", {"profile": {"passes": 0}},
     "devices.local-cpu.latency.profile.passes: input should be greater than 0, got 0"),
])
def test_wrong_types_name_the_key_and_the_value(path: str, value, expected: str) -> None:
    assert expected in error_of(with_(path, value))


@pytest.mark.parametrize("budget,expected", [
    ("latency@local-cpu <= 0.4", "has no unit; write it with one of s, ms"),
    ("energy@pi4-ort <= 2", "has no unit; write it with one of J, mJ"),
    ("peak_memory <= 262144", "has no unit; write it with one of B, bytes, KB, KiB"),
    ("latency@local-cpu <= 0.4 MiB", "unit 'MiB' does not measure time"),
    ("accuracy >= 90", "has no unit"),
])
def test_budgets_need_a_unit_of_the_right_kind(budget: str, expected: str) -> None:
    assert expected in error_of(with_("budgets", [budget]))


def test_counts_take_bare_numbers_and_units_are_accepted() -> None:
    exp = experiment_from_dict(with_("budgets", ["params <= 2M", "macs <= 5000000", "peak_memory <= 256 KiB",
                                                 "latency@local-cpu <= 400 us", "accuracy >= 80 %"]))
    assert len(exp.budgets) == 5


def test_unknown_devices_metrics_and_spaces_are_named_with_suggestions() -> None:
    data = valid()
    data["devices"]["pi4-rot"] = data["devices"].pop("pi4-ort")
    data["budgets"] = ["latency@local-cpu <= 0.4 ms"]
    assert "no device profile 'pi4-rot' (did you mean 'pi4-ort'?)" in error_of(data)
    msg = error_of(with_("budgets", ["latency@local-cup <= 1 ms"]))
    assert "unknown metric 'latency@local-cup' (did you mean 'latency@local-cpu'?)" in msg
    assert "did you mean 'tiny_mbconv'" in error_of(with_("space", "tiny_mbconf"))
    assert "not a device of this experiment with its own LUT" in error_of(
        with_("devices.pi4-ort.latency", {"like": "jetson-tx2"}))


def test_missing_files_and_unset_variables_are_errors(tmp_path: Path) -> None:
    msg = error_of(with_("devices.local-cpu.latency", {"lut": "luts/nope.csv"}), tmp_path)
    assert "devices.local-cpu.latency.lut: luts/nope.csv does not exist" in msg
    assert "dataset: source: /no/such/images does not exist" in error_of(with_("dataset", {"source": "/no/such/images"}))
    data = with_("accuracy", {"table": "$HWNAS_NO_SUCH_VARIABLE/acc.csv", "column": "acc", "unit": "%"})
    data.pop("train")
    assert "environment variable HWNAS_NO_SUCH_VARIABLE is not set" in error_of(data)


def test_sources_need_exactly_one_kind_and_complete_tables() -> None:
    assert "exactly one latency source" in error_of(with_("devices.local-cpu.latency", {"profile": {}, "like": "pi4-ort"}))
    table = {"table": str(Path(__file__)), "column": "x"}
    assert "unit missing" in error_of(with_("devices.local-cpu.latency", table))
    assert "analytic estimate needs a latency LUT" in error_of(
        with_("devices.local-cpu", {"energy": "analytic", "latency": {**table, "unit": "ms"}}))
    assert "only this machine's profile" in error_of(with_("devices.pi4-ort.latency", "profile"))


def test_train_and_accuracy_must_agree() -> None:
    data = valid()
    data.pop("train")
    assert "needs a 'train:' section" in error_of(data)


def test_settings_digest_ignores_order_and_follows_values() -> None:
    a, b = valid(), valid()
    b["budgets"] = list(b["budgets"])
    b = dict(reversed(list(b.items())))
    assert experiment_from_dict(a).digest() == experiment_from_dict(b).digest()
    assert experiment_from_dict(a).digest() != experiment_from_dict(with_("seed", 1)).digest()


@pytest.mark.parametrize("config", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiments_pass_check(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        benchmarks: Path) -> None:
    """`hwnas run --check` on every config in experiments/ (needs the public tables for NB201 ones)."""
    text = config.read_text()
    if "shared/benchmarks" in text and not benchmarks.is_dir():
        pytest.skip(f"{benchmarks} (the public benchmark tables) is not here")
    env = {"HWNAS_STORAGE": "postgresql+psycopg2://user@127.0.0.1:5432/hwnas"}
    if "HWNAS_IMAGE_FOLDER" in text:
        from PIL import Image

        for label in ("cat", "dog"):
            (tmp_path / "images" / label).mkdir(parents=True)
            Image.new("RGB", (48, 40), (200, 30, 30)).save(tmp_path / "images" / label / "0.png")
        env["HWNAS_IMAGE_FOLDER"] = str(tmp_path / "images")
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "run", "--check", str(config)], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, **env}, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"{config}: valid" in proc.stdout and "search" in proc.stdout


def test_a_bad_config_fails_in_one_line_before_any_work(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_("budgets", ["latency@local-cpu <= 0.4"])))
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "run", str(bad), "--runs", str(runs)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hwnas: error: ") and "has no unit" in proc.stderr
    assert "Traceback" not in proc.stderr and not runs.exists()


def test_load_experiment_names_the_file_and_defaults_the_name(tmp_path: Path) -> None:
    path = tmp_path / "my-exp.yaml"
    data = valid()
    data.pop("name")
    path.write_text(yaml.safe_dump(data))
    assert load_experiment(path).name == "my-exp"
    path.write_text("- a list\n")
    with pytest.raises(NasError, match="must be a mapping"):
        load_experiment(path)
    path.write_text("")  # an empty file holds no settings: the missing ones are named
    with pytest.raises(NasError, match="space"):
        load_experiment(path)
    with pytest.raises(NasError, match="does not exist"):
        load_experiment(tmp_path / "missing.yaml")
