"""`hwnas export` without a supernet: the folder, the loader, the card, budgets, bad input."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from nas.cli import main
from nas.errors import CompatibilityWarning, DataError, NasError
from nas.export import check_budgets, export_arch, finetune, load, read_card
from nas.export.bundle import ARCH_FILE, CARD_FILE, ONNX_FILE, WEIGHTS_FILE, file_sha256
from nas.export.weights import fresh_model
from nas.hardware.measure import Protocol
from nas.space import load_space
from tests.hw_helpers import micro_space_yaml
from tests.search_helpers import local_cpu_lut  # noqa: F401  (a fixture)

torch.set_num_threads(1)

QUICK = Protocol(warmup=1, repeats=4, rounds=2, passes=1)
MICRO = micro_space_yaml("micro_export", "[12, 16]")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, object, object]:
    """tiny_mbconv's smallest arch exported fresh (seed 3), with budgets."""
    space = load_space("tiny_mbconv")
    arch = space.extreme(False)
    out = tmp_path_factory.mktemp("export") / "out"
    export_arch(space, arch, out, budgets={"params": "10M", "macs": "1"}, provenance={"search_run": "run-42"},
                seed=3, latency_protocol=QUICK)
    return out, space, arch


@pytest.fixture()
def micro(tmp_path) -> tuple[Path, Path]:
    """A small space in its own YAML file, and a fresh export of one of its archs."""
    path = tmp_path / "micro_export.yaml"
    path.write_text(MICRO)
    space = load_space(path)
    out = tmp_path / "out"
    export_arch(space, space.sample(1), out, latency_protocol=None)
    return path, out


def test_folder_holds_weights_onnx_arch_and_card(exported) -> None:
    out, _, arch = exported
    assert {p.name for p in out.iterdir()} == {ARCH_FILE, CARD_FILE, "MODEL_CARD.md", WEIGHTS_FILE, ONNX_FILE}
    record = json.loads((out / ARCH_FILE).read_text())
    assert record["space"] == "tiny_mbconv" and record["arch"] == dict(arch) and record["arch_id"] == arch.arch_id
    assert record["files"][WEIGHTS_FILE] == file_sha256(out / WEIGHTS_FILE)
    assert not list(out.parent.glob(".*"))  # no staging folder left behind


def test_load_gives_the_seeded_fresh_network_and_onnx_agrees(exported) -> None:
    out, space, arch = exported
    model = load(out)
    expected = fresh_model(lambda: space.build(arch), 3, (1, 3, 32, 32)).state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(session.run(None, {"input": x})[0] - model(torch.from_numpy(x)).numpy()).max() <= 1e-4


def test_card_records_costs_latency_sources_and_provenance(exported) -> None:
    out, space, arch = exported
    card = read_card(out)
    assert card["costs"] == space.counts(arch)
    assert card["onnx"]["opset"] >= 17 and card["onnx"]["max_abs_diff"] <= 1e-4
    assert card["measured_latency"]["median_ms"] > 0 and card["measured_latency"]["device"] == "local-cpu"
    assert card["measured_latency"]["statistic"] == "p10" and card["measured_latency"]["latency_ms"] == card["measured_latency"]["p10_ms"]
    assert card["provenance"]["search_run"] == "run-42" and card["provenance"]["seeds"]["export"] == 3
    assert {"torch", "onnxruntime", "onnx", "safetensors", "hwnas"} <= set(card["provenance"]["versions"])
    # every device profile is either predicted or listed with the reason it is not
    from nas.hardware.devices import device_names

    for device in device_names():
        for metric in ("latency", "energy"):
            predicted = [p for p in card["predictions"] if p["device"] == device and p["metric"] == metric]
            skipped = [s for s in card["skipped"] if s.get("device") == device and s.get("metric") == metric]
            assert predicted or (skipped and skipped[0]["reason"]), (device, metric)
    for p in card["predictions"]:
        assert p["value"] > 0
        if p["metric"] == "energy" and p["source"]["kind"] == "analytic estimate":
            assert p["estimate"] and p["source"]["coefficients"]
    markdown = (out / "MODEL_CARD.md").read_text()
    assert arch.arch_id in markdown and f"{card['costs']['params']:,}" in markdown


def test_budgets_on_the_card_are_checked(exported) -> None:
    out, _, _ = exported
    rows = {b["metric"]: b for b in read_card(out)["budgets"]}
    assert rows["params"]["met"] is True and rows["macs"]["met"] is False


def test_budget_checks_follow_the_values() -> None:
    metrics = {"params": {"value": 1500.0, "unit": "count", "source": "x"},
               "latency@dev": {"value": 2.0, "unit": "ms", "source": "x"},
               "accuracy": {"value": 0.8, "unit": "fraction", "source": "x"}}
    rows = check_budgets(["params <= 1.5K", "latency@dev <= 1900 us", "accuracy >= 79 %", "energy@dev <= 1 mJ"],
                         metrics)
    assert [r["met"] for r in rows] == [True, False, True, None]
    assert [r["met"] for r in check_budgets({"accuracy": "81 %", "params": "2K"}, metrics)] == [False, True]
    with pytest.raises(NasError, match="does not measure time"):
        check_budgets({"latency@dev": "5 MiB"}, metrics)


def stand_in_sources(lut: Path) -> dict:
    """The quickstart's sources: local-cpu's LUT, pi4-ort's latency standing in from it, its energy estimated."""
    return {"latency@local-cpu": {"lut": str(lut)}, "latency@pi4-ort": {"like": "local-cpu"},
            "energy@pi4-ort": {"analytic": True}}


def test_budgets_are_checked_with_the_sources_the_arch_was_searched_under(tmp_path, local_cpu_lut) -> None:  # noqa: F811
    """A stand-in device with an energy budget: the card gives it a value from the same
    sources (the search's resolver), met or not met, and predicts that device instead of skipping it."""
    from nas.sources import resolve_metrics

    space = load_space("tiny_mbconv")
    arch = space.extreme(False)
    sources = stand_in_sources(local_cpu_lut)
    budgets = ["latency@local-cpu <= 1 s", "energy@pi4-ort <= 1 uJ", "params <= 1M"]
    out = export_arch(space, arch, tmp_path / "out", budgets=budgets, latency_protocol=None, sources=sources)
    card = read_card(out)
    searched = resolve_metrics(space, [b.split()[0] for b in budgets], sources)
    assert [b["met"] for b in card["budgets"]] == [True, False, True]
    for row in card["budgets"]:
        assert row["value"] == searched[row["metric"]].model.predict([arch])[0] and row["unit"] == searched[row["metric"]].unit
    assert "stand-in: latency@local-cpu" in card["budgets"][1]["source"]
    assert card["sources"] == sources
    pi4 = {p["metric"]: p for p in card["predictions"] if p["device"] == "pi4-ort"}
    assert pi4["latency"]["source"]["from_device"] == "local-cpu" and pi4["energy"]["estimate"]
    assert pi4["energy"]["value"] == card["budgets"][1]["value"]
    assert not [s for s in card["skipped"] if s.get("device") == "pi4-ort"]
    markdown = (out / "MODEL_CARD.md").read_text()
    assert "| `energy@pi4-ort <= 1 uJ` |" in markdown and "| **no** |" in markdown and "stand-in" in markdown


def test_cli_export_checks_budgets_with_a_search_configs_sources(capsys, tmp_path, local_cpu_lut) -> None:  # noqa: F811
    config = tmp_path / "search.yaml"
    lut = tmp_path / "luts" / local_cpu_lut.name
    lut.parent.mkdir()
    for src in (local_cpu_lut, local_cpu_lut.with_suffix(".json")):
        shutil.copyfile(src, lut.parent / src.name)
    sources = {**stand_in_sources(Path("luts") / lut.name)}
    config.write_text(json.dumps({"space": "tiny_mbconv", "objectives": ["min params"], "sources": sources}))
    code, out, _ = run(capsys, "export", "--space", "tiny_mbconv", "--arch", "min", "-o", tmp_path / "cli",
                       "--no-measure", "--sources", config, "--budgets", '["energy@pi4-ort <= 1 J"]', "--json")
    card = json.loads(out)
    assert code == 0 and card["budgets"][0]["met"] is True and card["budgets"][0]["unit"] == "mJ"
    code, _, err = run(capsys, "export", "--space", "tiny_mbconv", "--arch", "min", "-o", tmp_path / "bad",
                       "--no-measure", "--sources", '{"latency@local-cpu": {"lutt": "x.csv"}}')
    assert code == 2 and err.count("\n") == 1 and "sources.latency@local-cpu: unknown key 'lutt'" in err
    assert not (tmp_path / "bad").exists()


def test_nb201_card_names_predictor_files_with_their_metadata(tmp_path) -> None:
    out = export_arch("nb201", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
                      tmp_path / "nb", latency_protocol=None)
    card = read_card(out)
    from_files = [p for p in card["predictions"] if p["source"]["kind"] == "predictor"]
    assert from_files and all(Path(p["source"]["file"]).is_file() and p["source"]["table_hash"] for p in from_files)
    assert any(p["metric"] == "latency" and p["device"] == "edgegpu" for p in from_files)


def test_cli_export_then_json_card(capsys, tmp_path) -> None:
    code, out, _ = run(capsys, "export", "--space", "tiny_mbconv", "--arch", "min", "-o", tmp_path / "cli",
                         "--no-measure", "--budgets", '["params <= 1M"]', "--json")
    card = json.loads(out)
    assert code == 0 and card["budgets"][0]["met"] is True and card["measured_latency"] is None


def test_a_fresh_export_fine_tunes_on_the_digits(micro) -> None:
    _, out = micro
    result = finetune(out, "digits", 2, lr=0.05, progress=False)
    assert result["accuracy"] > result["accuracy_before"] + 0.2 and result["preprocessing"]["dataset"] == "digits"
    assert read_card(out)["finetune"]["accuracy"] == result["accuracy"]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, message", [
    (("--arch", '{"s1.depth": 7}'), "unknown decision|lacks decision|not allowed"),
    (("--arch", "nowhere.json"), "neither inline JSON"),
    (("--budgets", "{broken"), "not valid JSON"),
    (("--budgets", '{"params": "two"}'), "not a number"),
    (("--supernet", "no/such/dir"), "does not exist"),
])
def test_export_errors_are_one_line(capsys, tmp_path, args, message) -> None:
    base = {"--arch": "min"}
    argv = ["export", "--space", "tiny_mbconv", "-o", tmp_path / "bad", "--no-measure"]
    extra = dict(zip(args[::2], args[1::2]))
    for key, value in {**base, **extra}.items():
        argv += [key, value]
    code, _, err = run(capsys, *argv)
    import re

    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "bad").exists()


def test_a_non_empty_out_is_kept_without_force(capsys, tmp_path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "export", "--space", "tiny_mbconv", "--arch", "min", "-o", tmp_path / "taken",
                       "--no-measure")
    assert code == 2 and "--force" in err and (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_a_failed_re_export_leaves_the_previous_export_intact(micro) -> None:
    path, out = micro
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    space = load_space(path)
    with pytest.raises(NasError, match="does not measure"):  # fails after the files are staged, at the budgets
        export_arch(space, space.extreme(True), out, budgets={"params": "3 ms"}, latency_protocol=None, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    load(out)


def test_missing_out_is_a_one_line_error(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "finetune", tmp_path / "nothing", "--data", "digits", "--epochs", "1")
    assert code == 2 and "no such export folder" in err and err.count("\n") == 1
    with pytest.raises(NasError, match="no such export folder"):
        load(tmp_path / "nothing")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_weights_are_refused(micro, damage) -> None:
    _, out = micro
    path = out / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(NasError, match="damaged or changed since export"):
        load(out)


def test_weights_that_are_not_safetensors_are_refused_without_running_them(micro, tmp_path) -> None:
    """A pickle dressed up as the weights (with its hash entered) is never unpickled."""
    _, out = micro
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (out / WEIGHTS_FILE).write_bytes(pickle.dumps({"stem": Evil()}))
    record = json.loads((out / ARCH_FILE).read_text())
    record["files"][WEIGHTS_FILE] = file_sha256(out / WEIGHTS_FILE)
    (out / ARCH_FILE).write_text(json.dumps(record))
    with pytest.raises(NasError, match="not a readable safetensors file"):
        load(out)
    assert not marker.exists()


def test_weights_of_another_arch_are_refused(micro, tmp_path) -> None:
    path, out = micro
    space = load_space(path)
    other = export_arch(space, space.extreme(True), tmp_path / "other", latency_protocol=None)
    shutil.copy(other / WEIGHTS_FILE, out / WEIGHTS_FILE)
    record = json.loads((out / ARCH_FILE).read_text())
    record["files"][WEIGHTS_FILE] = file_sha256(out / WEIGHTS_FILE)
    (out / ARCH_FILE).write_text(json.dumps(record))
    with pytest.raises(NasError, match="do not fit|needs"):
        load(out)


@pytest.mark.parametrize("text", ["", "{not json", '["a list"]', '{"schema": "hwnas.export/1"}'])
def test_damaged_arch_json_is_refused(micro, text) -> None:
    _, out = micro
    (out / ARCH_FILE).write_text(text)
    with pytest.raises(NasError, match=str(out / ARCH_FILE).replace("\\", "\\\\")):
        load(out)


def test_damaged_card_is_refused(micro, capsys) -> None:
    _, out = micro
    (out / CARD_FILE).write_text((out / CARD_FILE).read_text()[:100])
    with pytest.raises(NasError, match="not valid JSON"):
        read_card(out)
    code, _, err = run(capsys, "finetune", out, "--data", "digits", "--epochs", "1", "--quiet")
    assert code == 2 and "card.json" in err and err.count("\n") == 1


def test_a_changed_space_is_detected(micro) -> None:
    path, out = micro
    path.write_text(MICRO.replace("out: 32", "out: 48"))  # this arch's head now has other widths
    with pytest.raises(NasError, match="has changed since export"):
        load(out)


@pytest.mark.parametrize("edit", ["another choice", "no such choice"])
def test_an_edited_arch_is_told_apart_from_a_changed_space(micro, edit) -> None:
    """The space is as exported, so the fault is in arch.json: the message says so, and
    does not claim the space changed while printing equal fingerprints (issue 14)."""
    path, out = micro
    record = json.loads((out / ARCH_FILE).read_text())
    kernel = record["arch"]["s1.0.kernel"]
    record["arch"]["s1.0.kernel"] = (5 if kernel == 3 else 3) if edit == "another choice" else 4
    (out / ARCH_FILE).write_text(json.dumps(record))
    with pytest.raises(DataError, match="the file was edited") as caught:
        load(out)
    assert "has changed" not in str(caught.value)
    assert str(caught.value).count(load_space(path).fingerprint()) == 1


def test_an_export_without_a_fingerprint_loads_by_its_layers(micro) -> None:
    """arch.json of an hwnas before space fingerprints: the layers decide, silently."""
    import warnings

    _, out = micro
    reference = load(out).state_dict()
    record = json.loads((out / ARCH_FILE).read_text())
    del record["space_fingerprint"]
    (out / ARCH_FILE).write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(out).state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_a_space_changed_elsewhere_warns_and_a_missing_space_still_loads(micro) -> None:
    path, out = micro
    reference = load(out).state_dict()
    path.write_text(MICRO.replace("se: [0, 0.25]", "se: [0, 0.25, 0.5]"))
    record = json.loads((out / ARCH_FILE).read_text())
    if record["arch"]["s1.0.se"] == 0.5:
        pytest.skip("the sampled arch uses the new choice")
    with pytest.warns(CompatibilityWarning, match="has changed") as caught:
        load(out)
    fingerprints = (record["space_fingerprint"], load_space(path).fingerprint())
    assert fingerprints[0] != fingerprints[1] and all(f in str(caught[0].message) for f in fingerprints)
    path.unlink()  # the export works without its space file: the stored LayerSpecs build it
    loaded = load(out).state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
