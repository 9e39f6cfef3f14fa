"""`hwnas run` end to end on a micro hybrid CNN-transformer space (issue 18): profiling
of conv and transformer blocks, supernet training, search under every kind of budget,
export with its ONNX verified against onnxruntime, the card and the report; no special
case anywhere for tokens."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.experiment.test_experiment_pipeline import frozen_checkout, hwnas, only_run

MICRO_HYBRID = {
    "name": "micro_hybrid", "input": {"channels": 3, "resolution": [12, 16]}, "classes": 10,
    "stem": [{"op": "conv", "out": 8, "kernel": 3, "stride": 2, "act": "relu"}],
    "stages": [
        {"depth": [1, 2], "width": [8, 12], "stride": 1, "block": {"op": "mbconv", "kernel": [3, 5], "expand": [2, 3],
                                                                    "act": "relu"}},
        {"name": "embed", "width": [12, 16], "block": {"op": "patch_embed", "patch": 2}},
        {"name": "t1", "depth": [1, 2], "block": {"op": "encoder", "heads": [1, 2], "mlp_ratio": [1, 2]}},
    ],
    "head": [{"op": "token_pool"}, {"op": "linear", "out": "classes"}],
}
# Every kind of budget; the counters' bind (the space spans 2.4K-9.1K params, 35K-290K
# MACs, 5.6-21 KiB peak activation, 9-35 KiB weights).
BUDGETS = ["latency@local-cpu <= 5 ms", "energy@pi4-ort <= 40 mJ", "params <= 7K", "macs <= 200K",
           "peak_activation_bytes <= 16 KiB", "weight_bytes <= 28 KiB"]
CONFIG = {
    "name": "hybrid", "seed": 0, "space": "micro_hybrid.yaml",
    "dataset": {"source": "digits", "test_fraction": 0.9},
    "devices": {"local-cpu": {"latency": {"profile": {"warmup": 2, "repeats": 100, "rounds": 2, "passes": 1,
                                                      "calibrate": 0}}},
                "pi4-ort": {"latency": {"like": "local-cpu"}, "energy": "analytic"}},
    "objectives": ["max accuracy", "min latency@local-cpu"],
    "budgets": BUDGETS,
    "accuracy": {"supernet": {"split": "val", "calib_images": 16}},
    "train": {"epochs": 1, "batch_size": 16, "calib_images": 16, "sampling": {"random_subnets": 1}},
    "search": {"controller": {"name": "evolution", "population": 4, "init": 4}, "budget": 8},
    "export": {"arch": "best", "measure_latency": True},
}


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = frozen_checkout(tmp_path_factory.mktemp("hybrid"))
    (cwd / "micro_hybrid.yaml").write_text(yaml.safe_dump(MICRO_HYBRID))
    (cwd / "hybrid.yaml").write_text(yaml.safe_dump(CONFIG))
    hwnas("run", "hybrid.yaml", "--runs", "runs", "--quiet", cwd=cwd)
    return only_run(cwd)


def test_the_hybrid_run_profiles_transformer_blocks_and_finishes(hybrid_run: Path) -> None:
    state = json.loads((hybrid_run / "run.json").read_text())
    assert state["status"] == "finished"
    lut = (hybrid_run / "profile" / "luts" / "local-cpu" / "micro_hybrid.csv").read_text()
    for op in ("patch_embed", "encoder", "token_pool", "mbconv"):
        assert f"{op} " in lut, op
    summary = json.loads((hybrid_run / "search" / "summary.json").read_text())
    assert summary["queries"] == CONFIG["search"]["budget"] and summary["front"]


def test_the_exported_hybrid_agrees_in_onnxruntime_and_meets_every_budget(hybrid_run: Path) -> None:
    import onnxruntime as ort
    import torch

    from nas.export import load

    folder = hybrid_run / "export" / "model"
    card = json.loads((folder / "card.json").read_text())
    assert [b["budget"] for b in card["budgets"]] == BUDGETS and all(b["met"] for b in card["budgets"])
    model = load(folder).eval()
    x = np.random.default_rng(0).standard_normal((3, *card["input"]["shape"][1:])).astype(np.float32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 10) and np.abs(got - want).max() <= 1e-4
    layers = [layer["op"] for layer in json.loads((folder / "arch.json").read_text())["layers"]]
    assert "encoder" in layers and "patch_embed" in layers
    assert card["onnx"]["opset"] == 17 and card["onnx"]["max_abs_diff"] <= card["onnx"]["tolerance"]
    assert card["costs"]["params"] == sum(p.numel() for p in model.parameters())
    assert card["measured_latency"]  # the exported graph timed whole in onnxruntime
    report = (hybrid_run / "report.html").read_text()
    assert "micro_hybrid" in report and "Budgets on the card" in report
