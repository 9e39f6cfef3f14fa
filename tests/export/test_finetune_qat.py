"""`hwnas finetune --qat`: quantization-aware fine-tuning of an int8 export, resumable."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.errors import DataError
from nas.export import export_arch
from nas.export.bundle import FINETUNE_DIR
from nas.export.card import read_card
from nas.export.finetuning import finetune
from nas.export.loader import load
from nas.space import load_space
from tests.supernet.test_qat import MICRO_INT8
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    """A micro supernet with precision decisions, trained one epoch on the digits."""
    from nas.supernet import train
    from nas.supernet.config import config_from_dict

    root = tmp_path_factory.mktemp("finetune_qat")
    (root / "micro_int8.yaml").write_text(MICRO_INT8)
    config = config_from_dict({"space": str(root / "micro_int8.yaml"), "data": {"source": "digits", "crop_padding": 0},
                               "epochs": 1, "batch_size": 32, "checkpoint_every": 0})
    train(config, root / "supernet", progress=False)
    return root / "supernet", load_space(root / "micro_int8.yaml")


def _arch(space, precision: str):
    names = [d.name for d in space.decisions if d.name.endswith("precision")]
    return space.arch({**dict(space.sample(3)), **{n: precision for n in names}})


def test_qat_finetune_trains_through_the_int8_rounding_and_resumes_exactly(trained, tmp_path) -> None:
    run_dir, space = trained
    arch = _arch(space, "int8")
    runs = {name: export_arch(space, arch, tmp_path / name, supernet=run_dir, latency_protocol=None)
            for name in ("qat", "killed", "float")}
    assert (runs["qat"] / "model_int8.onnx").is_file()  # the export's own int8 model
    result = finetune(runs["qat"], "digits", 2, qat=True, progress=False)
    assert result["settings"]["qat"] is True and len(result["history"]) == 2
    # the int8 model of the fine-tuned weights, re-exported and verified
    int8 = read_card(runs["qat"])["finetune"]["int8"]
    assert int8["file"] == "finetuned_int8.onnx" and (runs["qat"] / "finetuned_int8.onnx").is_file()
    assert int8["verification"]["top1_agreement"] >= 0.99 and 0.0 <= int8["accuracy"]["value"] <= 1.0
    assert (runs["qat"] / "finetuned_int8.onnx").read_bytes() != (runs["qat"] / "model_int8.onnx").read_bytes()
    assert "its int8 model `finetuned_int8.onnx` (fine-tuned quantization-aware)" in \
        (runs["qat"] / "MODEL_CARD.md").read_text()
    assert finetune(runs["killed"], "digits", 2, qat=True, progress=False, max_steps=60) == {}  # in epoch 2
    assert (runs["killed"] / FINETUNE_DIR / "checkpoint.pt").is_file()
    finetune(runs["killed"], "digits", 2, qat=True, progress=False)
    a, b = load(runs["qat"]).state_dict(), load(runs["killed"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_card(runs["qat"])["finetune"]["history"] == read_card(runs["killed"])["finetune"]["history"]
    finetune(runs["float"], "digits", 2, progress=False)  # same seed, no QAT: another training
    c = load(runs["float"]).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(Exception, match="other settings \\(qat\\)"):
        finetune(runs["qat"], "digits", 2, progress=False)
    scales = runs["qat"] / "finetuned_quant_int8.npz"  # a tampered scale file is refused on load
    scales.write_bytes(scales.read_bytes()[:-8] + b"tampered")
    with pytest.raises(DataError, match="finetuned_quant_int8.npz"):
        load(runs["qat"])


def test_qat_on_an_export_without_int8_layers_is_a_one_line_error(trained, tmp_path, capsys) -> None:
    run_dir, space = trained
    out = export_arch(space, _arch(space, "fp32"), tmp_path / "fp32", supernet=run_dir, latency_protocol=None)
    code = main(["finetune", str(out), "--data", "digits", "--epochs", "1", "--qat", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no int8 layers" in err and "--qat" in err
    assert not (out / FINETUNE_DIR).exists()  # refused before anything was written
