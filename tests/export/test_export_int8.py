"""int8 export (issue 15, item 6): `hwnas export` writes the int8 model beside the float
one only after onnxruntime and the torch simulation agree, the card reports it, the
loader checks its files, and every bad input is one line, exit 2, nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from nas.cli import main
from nas.export import export_arch, load, read_card
from nas.export.bundle import ARCH_FILE, ONNX_FILE, file_sha256
from nas.export.int8 import INT8_ONNX, INT8_PARAMS
from nas.hardware.measure import Protocol
from nas.space import load_space
from tests.supernet_helpers import one_thread, with_precision  # noqa: F401 (autouse fixture)

torch.set_num_threads(1)
QUICK = Protocol(warmup=2, repeats=5, rounds=2, passes=1)


@pytest.fixture(scope="module")
def trained(micro_int8_supernet):
    return micro_int8_supernet


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> tuple[Path, object]:
    run_dir, space = trained
    arch = with_precision(space, 3, "int8")
    out = export_arch(space, arch, tmp_path_factory.mktemp("ex") / "out", supernet=run_dir, latency_protocol=QUICK)
    return out, arch


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_the_int8_model_is_written_verified_and_scored_as_search_scored_it(trained, exported) -> None:
    from nas.supernet import SupernetAccuracy

    run_dir, space = trained
    out, arch = exported
    record = json.loads((out / ARCH_FILE).read_text())
    for name in (INT8_ONNX, INT8_PARAMS):
        assert record["files"][name] == file_sha256(out / name)
    q = read_card(out)["int8"]
    assert q["verification"]["top1_agreement"] >= 0.99 and q["verification"]["inputs"] == "val images"
    assert [x["index"] for x in q["layers"]] == list(range(len(space.layers(arch))))
    assert q["calibration"]["method"] == "minmax" and q["calibration"]["images"] == 128
    # the export's int8 accuracy is the one the search's oracle scored for this arch
    oracle = SupernetAccuracy(run_dir)
    assert q["accuracy"]["simulated"] == float(oracle.predict([arch])[0])
    assert abs(q["accuracy"]["value"] - q["accuracy"]["simulated"]) <= 0.01
    assert q["float"]["accuracy"] == read_card(out)["accuracy"]["value"] > 0.3
    # onnxruntime on the written file reproduces the card's accuracy
    images = oracle.evaluator.images("eval", space.resolution(arch)).contiguous().numpy()
    top1 = _session(out / INT8_ONNX).run(None, {"input": images})[0].argmax(1)
    assert float((top1 == oracle.evaluator.labels.numpy()).mean()) == q["accuracy"]["value"]
    # sizes, latency and the quantization file
    assert q["size_bytes"] == (out / INT8_ONNX).stat().st_size < q["float"]["size_bytes"] == (out / ONNX_FILE).stat().st_size
    assert q["measured_latency"]["median_ms"] > 0 and q["float"]["measured_latency_ms"] > 0
    params = np.load(out / INT8_PARAMS, allow_pickle=False)
    assert len(params["act_scale"]) == len(params["act_zero_point"]) > 5
    assert "## int8" in (out / "MODEL_CARD.md").read_text()
    load(out)  # the loader checks the int8 files' hashes and builds the float module


def test_a_float_arch_exports_no_int8_files(trained, tmp_path) -> None:
    run_dir, space = trained
    out = export_arch(space, with_precision(space, 1, "fp32"), tmp_path / "out", supernet=run_dir, latency_protocol=None)
    assert not (out / INT8_ONNX).exists() and read_card(out)["int8"] is None


def test_without_a_supernet_the_int8_model_is_verified_on_random_inputs(tmp_path) -> None:
    space = load_space("tiny_mbconv_int8")
    out = export_arch(space, space.sample(5), tmp_path / "out", latency_protocol=None)
    q = read_card(out)["int8"]
    assert q["verification"]["inputs"] == "seeded random inputs" and q["verification"]["top1_agreement"] >= 0.99
    assert q["accuracy"] is None and q["calibration"]["images"] == 256


@pytest.mark.parametrize("name", [INT8_ONNX, INT8_PARAMS])
def test_a_tampered_int8_file_is_one_line_naming_it(exported, tmp_path, capsys, name) -> None:
    out = tmp_path / "copy"
    shutil.copytree(exported[0], out)
    data = bytearray((out / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / name).write_bytes(bytes(data))
    code = main(["finetune", str(out), "--data", "digits", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and name in err and "SHA-256" in err and err.count("\n") == 1
    assert not (out / "finetune").exists()


def test_a_precision_the_local_runtime_does_not_run_is_refused(tmp_path, monkeypatch, capsys) -> None:
    luts = tmp_path / "luts"
    (luts / "local-cpu").mkdir(parents=True)
    (luts / "local-cpu" / "device.yaml").write_text(
        "name: local-cpu\nbackend: onnxruntime\ndetect: true\nprecisions: [fp32]\n")
    monkeypatch.setenv("HWNAS_LUTS", str(luts))
    space = load_space("tiny_mbconv_int8")
    arch = with_precision(space, 0, "int8")
    code = main(["export", "--space", "tiny_mbconv_int8", "--arch", json.dumps(dict(arch)), "-o", str(tmp_path / "out"),
                 "--no-measure"])
    err = capsys.readouterr().err
    assert code == 2 and "int8 blocks, but device local-cpu runs only fp32" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_too_little_calibration_data_is_refused_with_nothing_written(trained, tmp_path, capsys) -> None:
    run_dir, space = trained
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    config["config"]["quant"] = {"method": "entropy", "calib_images": 8}
    (run / "config.json").write_text(json.dumps(config))
    arch = with_precision(space, 0, "int8")
    code = main(["export", "--space", str(space.source), "--arch", json.dumps(dict(arch)), "--supernet", str(run),
                 "-o", str(tmp_path / "out"), "--no-measure"])
    err = capsys.readouterr().err
    assert code == 2 and "calibration method entropy needs at least 32 calibration images, got 8" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staged folder left
