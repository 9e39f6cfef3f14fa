"""Export with a trained supernet, and fine-tuning, for real on the digits.

A micro supernet trains for two epochs on the built-in digits (about 10 s); archs are
exported from it, scored by the supernet's own oracle, fine-tuned (with and without
distillation), killed and resumed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.errors import NasError
from nas.export import export_arch, finetune, load, read_card
from nas.export.bundle import ARCH_FILE, FINETUNE_DIR, FINETUNED_ONNX, FINETUNED_WEIGHTS
from nas.export.finetuning import evaluate
from nas.space import load_space
from tests.supernet_helpers import one_thread, micro_space_yaml  # noqa: F401 (autouse fixture)

torch.set_num_threads(1)

MICRO = micro_space_yaml("micro_sn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    """A micro supernet trained two epochs on the digits."""
    from nas.supernet import train
    from nas.supernet.config import config_from_dict

    root = tmp_path_factory.mktemp("export_sn")
    (root / "micro_sn.yaml").write_text(MICRO)
    config = config_from_dict({"space": str(root / "micro_sn.yaml"), "data": {"source": "digits", "crop_padding": 0},
                               "epochs": 2, "batch_size": 32, "checkpoint_every": 0})
    train(config, root / "supernet", progress=False)
    return root / "supernet", load_space(root / "micro_sn.yaml")


@pytest.fixture(scope="module")
def oracle(trained):
    """The supernet's accuracy oracle, as search uses it (independent of the export)."""
    from nas.supernet import SupernetAccuracy

    return SupernetAccuracy(trained[0])


def _data(run_dir: Path):
    from nas.data import load_dataset
    from nas.supernet.run import RunDir

    config = RunDir(run_dir).config()
    space = load_space(config.space)
    d = config.data
    return load_dataset(d.source, space.resolution(space.extreme(True)), space.in_channels,
                        val_fraction=d.val_fraction, test_fraction=d.test_fraction, split_seed=d.split_seed)


@pytest.mark.parametrize("seed", [0, 5])
def test_exported_accuracy_equals_the_supernet_oracle(trained, oracle, tmp_path, seed) -> None:
    run_dir, space = trained
    arch = space.sample(seed)
    out = export_arch(space, arch, tmp_path / "out", supernet=run_dir, latency_protocol=None)
    card = read_card(out)
    inherited = float(oracle.predict([arch])[0])
    model = load(out)
    exported = evaluate(model, _data(run_dir), "val", space.resolution(arch))
    assert card["accuracy"]["value"] == inherited == exported
    assert inherited > 0.3  # learned something: the equality is not between two chance levels
    # weights (not BN statistics, which are recalibrated) are the supernet's
    extracted = oracle.supernet.extract(arch).state_dict()
    for name, tensor in model.state_dict().items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(tensor, extracted[name].cpu()), name
    assert card["input"]["preprocessing"]["dataset"] == "digits"


def test_nb201_exports_keep_the_supernet_accuracy(tmp_path) -> None:
    """The cell space too: a one-shot NB201 supernet, two archs, accuracy and ONNX as the oracle sees them."""
    from nas.supernet import SupernetAccuracy, train
    from nas.supernet.config import config_from_dict

    (tmp_path / "nb201_micro.yaml").write_text("name: nb201_micro\ntype: nb201\nchannels: 4\ncells_per_stage: 1\n"
                                               "resolution: 16\n")
    config = config_from_dict({"space": str(tmp_path / "nb201_micro.yaml"), "epochs": 1, "batch_size": 32,
                               "data": {"source": "digits", "crop_padding": 0}, "checkpoint_every": 0})
    train(config, tmp_path / "supernet", progress=False)
    space = load_space(tmp_path / "nb201_micro.yaml")
    oracle = SupernetAccuracy(tmp_path / "supernet")
    for i, arch in enumerate([space.parse_arch("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+"
                                               "|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"), space.sample(4)]):
        out = export_arch(space, arch, tmp_path / f"out{i}", supernet=tmp_path / "supernet", latency_protocol=None)
        card = read_card(out)
        assert card["accuracy"]["value"] == float(oracle.predict([arch])[0])
        assert evaluate(load(out), _data(tmp_path / "supernet"), "val", 16) == card["accuracy"]["value"]
        assert card["onnx"]["max_abs_diff"] <= 1e-4


def test_finetuning_improves_accuracy_and_updates_the_card(trained, tmp_path, capsys) -> None:
    run_dir, space = trained
    arch = space.extreme(False)
    out = export_arch(space, arch, tmp_path / "out", supernet=run_dir, latency_protocol=None)
    before = read_card(out)["accuracy"]["value"]
    code = main(["finetune", str(out), "--data", "digits", "--epochs", "3", "--lr", "0.05", "--quiet"])
    printed = capsys.readouterr().out
    card = read_card(out)
    ft = card["finetune"]
    assert code == 0 and "->" in printed
    assert ft["accuracy_before"] == before and ft["accuracy"] > before + 0.02, (before, ft["accuracy"])
    assert len(ft["history"]) == 3 and ft["onnx"]["max_abs_diff"] <= 1e-4
    record = json.loads((out / ARCH_FILE).read_text())
    assert {FINETUNED_WEIGHTS, FINETUNED_ONNX} <= set(record["files"])
    tuned = load(out)
    assert evaluate(tuned, _data(run_dir), "val", space.resolution(arch)) == ft["accuracy"]
    assert not all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(),
                                                       load(out, finetuned=False).state_dict().values()))
    assert "fine-tuned 3 epochs" in (out / "MODEL_CARD.md").read_text()


def test_a_killed_finetune_resumes_to_the_uninterrupted_result(trained, tmp_path) -> None:
    run_dir, space = trained
    arch = space.sample(2)
    runs = {}
    for name in ("straight", "killed"):
        runs[name] = export_arch(space, arch, tmp_path / name, supernet=run_dir, latency_protocol=None)
    finetune(runs["straight"], "digits", 2, progress=False)
    assert finetune(runs["killed"], "digits", 2, progress=False, max_steps=60) == {}  # killed in epoch 2 (40 steps per epoch)
    assert (runs["killed"] / FINETUNE_DIR / "checkpoint.pt").is_file()
    assert "finetune" not in read_card(runs["killed"]) or read_card(runs["killed"])["finetune"] is None
    finetune(runs["killed"], "digits", 2, progress=False)
    a, b = load(runs["straight"]).state_dict(), load(runs["killed"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_card(runs["straight"])["finetune"]["history"] == read_card(runs["killed"])["finetune"]["history"]


def test_distillation_from_the_largest_subnet(trained, tmp_path) -> None:
    run_dir, space = trained
    out = export_arch(space, space.extreme(False), tmp_path / "out", supernet=run_dir, latency_protocol=None)
    result = finetune(out, "digits", 2, distill_from=run_dir / "checkpoint.pt", lr=0.05, progress=False)
    assert result["distill_from"].endswith("checkpoint.pt") and result["accuracy"] > result["accuracy_before"]


def test_rerunning_a_finetune_with_other_settings_is_refused(trained, tmp_path) -> None:
    run_dir, space = trained
    out = export_arch(space, space.sample(1), tmp_path / "out", supernet=run_dir, latency_protocol=None)
    finetune(out, "digits", 1, progress=False, max_steps=3)
    with pytest.raises(NasError, match="other settings \\(epochs\\)"):
        finetune(out, "digits", 2, progress=False)


def test_a_damaged_finetune_checkpoint_is_refused(trained, tmp_path) -> None:
    run_dir, space = trained
    out = export_arch(space, space.sample(1), tmp_path / "out", supernet=run_dir, latency_protocol=None)
    finetune(out, "digits", 2, progress=False, max_steps=60)  # killed in epoch 2 (40 steps per epoch)
    path = out / FINETUNE_DIR / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(NasError, match="not a readable checkpoint"):
        finetune(out, "digits", 2, progress=False)


# ----------------------------------------------------------------------------- bad input
def test_an_arch_outside_the_supernets_space_is_refused(trained, tmp_path, capsys) -> None:
    run_dir, space = trained
    arch = dict(space.sample(0))
    arch["s1.width"] = 10  # not a choice
    code = main(["export", "--space", str(space.source), "--arch", json.dumps(arch), "--supernet", str(run_dir),
                 "-o", str(tmp_path / "out"), "--no-measure"])
    err = capsys.readouterr().err
    assert code == 2 and "'s1.width' = 10 is not allowed" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_supernet_of_another_space_is_refused(trained, tmp_path, capsys) -> None:
    run_dir, _ = trained
    code = main(["export", "--space", "tiny_mbconv", "--arch", "min", "--supernet", str(run_dir),
                 "-o", str(tmp_path / "out"), "--no-measure"])
    err = capsys.readouterr().err
    assert code == 2 and "was trained on space 'micro_sn'" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_space_edited_since_training_is_refused(trained, tmp_path) -> None:
    run_dir, _ = trained
    edited = tmp_path / "micro_sn.yaml"
    edited.write_text(MICRO.replace("out: 32", "out: 40"))
    with pytest.raises(NasError, match="was trained on space|has changed"):
        export_arch(load_space(edited), "min", tmp_path / "out", supernet=run_dir, latency_protocol=None)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_supernet_checkpoint_is_refused(trained, tmp_path, damage) -> None:
    import shutil

    run_dir, space = trained
    copy = tmp_path / "supernet"
    shutil.copytree(run_dir, copy)
    path = copy / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:4096] if damage == "truncate" else b"not a checkpoint at all")
    with pytest.raises(NasError, match="checkpoint"):
        export_arch(space, "min", tmp_path / "out", supernet=copy, latency_protocol=None)
    assert not (tmp_path / "out").exists()


def test_a_lut_a_supernet_run_and_an_export_of_one_space_share_its_fingerprint(trained, tmp_path) -> None:
    """One identity: the LUT's metadata, the run's config.json (beside its checkpoint) and
    the export's arch.json all record space.fingerprint(), and a LUT that predates it (the
    old block-only fingerprint) is still used while it holds every block, with a warning."""
    import warnings

    from nas.errors import CompatibilityError, CompatibilityWarning
    from nas.hardware.devices import load_device
    from nas.hardware.lut import LUT, LUTCost
    from nas.hardware.profiling import build_lut
    from nas.supernet.run import RunDir
    from tests.hw_helpers import FAST

    run_dir, space = trained
    device = load_device("local-cpu")
    lut = build_lut(space, device, out=tmp_path / "micro.csv", protocol=FAST, calibrate=0)
    out = export_arch(space, "min", tmp_path / "out", supernet=run_dir, latency_protocol=None,
                      sources={"latency@local-cpu": {"lut": str(tmp_path / "micro.csv")}})
    fingerprints = {"lut": LUT.load(tmp_path / "micro.csv").meta["space_fingerprint"],
                    "run": RunDir(run_dir).read()["space_fingerprint"],
                    "export": json.loads((out / ARCH_FILE).read_text())["space_fingerprint"]}
    assert fingerprints == dict.fromkeys(fingerprints, space.fingerprint())
    assert load_space(run_dir.parent / "micro_sn.yaml").fingerprint() == space.fingerprint()  # stable across loads

    old = LUT({**lut.meta, "space_fingerprint": "0123456789abcdef"}, lut.entries)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LUTCost(old, space, device=device)
    assert [w.category for w in caught] == [CompatibilityWarning]
    assert "0123456789abcdef" in str(caught[0].message) and space.fingerprint() in str(caught[0].message)
    gone = next(iter(lut.entries))
    with pytest.raises(CompatibilityError, match=f"another version of space micro_sn.*lacks 1 of its blocks, e.g. {gone!r}"):
        LUTCost(LUT(old.meta, {k: v for k, v in lut.entries.items() if k != gone}), space, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LUTCost(lut, space, device=device)  # the current fingerprint: no warning

    edited = tmp_path / "micro_sn.yaml"
    edited.write_text(MICRO.replace("out: 32", "out: 40"))
    run = RunDir(run_dir)
    with pytest.raises(CompatibilityError, match="another version of space micro_sn") as caught:
        run.prepare(run.config(), load_space(edited), None)
    assert space.fingerprint() in str(caught.value) and load_space(edited).fingerprint() in str(caught.value)
