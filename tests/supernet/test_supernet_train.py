"""Supernet training for real on small data: learning, kill-and-resume, DDP, the CLI and the oracle."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.errors import NasError
from nas.space import load_space
from nas.supernet.checkpoint import load_checkpoint, save_checkpoint
from nas.supernet.config import ScheduleConfig, config_from_dict, load_config
from nas.supernet.optim import lr_at
from nas.supernet.oracle import SupernetAccuracy, load_supernet
from nas.supernet.supernet import Supernet
from nas.supernet.trainer import train
from tests.supernet_helpers import one_thread, micro_space_yaml  # noqa: F401 (autouse fixture)


MICRO_SPACE = micro_space_yaml("micro")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A small chain space, a tiny NB201 space and 600 real digits as .npz."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("supernet")
    (root / "micro.yaml").write_text(MICRO_SPACE)
    (root / "nb201_micro.yaml").write_text("name: nb201_micro\ntype: nb201\nchannels: 4\ncells_per_stage: 1\n"
                                           "resolution: 16\n")
    digits = load_digits()
    x = np.rint(digits.images * 255 / 16).astype(np.uint8)
    np.savez(root / "digits600.npz", x=x[:600], y=digits.target[:600])
    np.savez(root / "digits300.npz", x=x[:300], y=digits.target[:300])
    return root


def micro_config(files: Path, **changes):
    data = {"space": str(files / "micro.yaml"), "data": {"source": str(files / "digits600.npz"), "crop_padding": 0},
            "epochs": 4, "batch_size": 16, "checkpoint_every": 10, "progressive": {"epochs": [1, 1, 2]}}
    data.update(changes)
    return config_from_dict(data)


@pytest.fixture(scope="module")
def trained(files) -> Path:
    """A micro supernet trained uninterrupted with progressive shrinking (sorting at two phase starts)."""
    out = files / "uninterrupted"
    train(micro_config(files), out, progress=False)
    return out


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if torch.is_tensor(value):
            assert torch.equal(value, b[key]), key
        elif isinstance(value, dict):
            _states_equal(value, b[key])
        else:
            assert value == b[key], key


def test_supernet_learns_the_digits(trained):
    history = json.loads((trained / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"] - 0.5
    assert history[-1]["val_acc_largest"] >= 0.45  # 10 classes: chance is 0.1
    assert history[-1]["val_acc_smallest"] >= 0.25
    state = load_checkpoint(trained / "checkpoint.pt")
    assert state["epoch"] == 4 and state["step"] == 0


def test_kill_and_resume_reproduces_the_uninterrupted_run(files, trained):
    out = files / "killed"
    config = micro_config(files)
    train(config, out, progress=False, max_steps=35)  # killed 8 steps into epoch 2: back to its start
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    train(config, out, progress=False, max_steps=20)  # killed after step 20 of epoch 2: back to step 10
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 10)
    train(config, out, progress=False)
    a, b = load_checkpoint(trained / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    _states_equal(a["model"], b["model"])
    _states_equal(a["optimizer"], b["optimizer"])
    drop = lambda h: [{k: v for k, v in e.items() if k != "images_per_s"} for e in h]
    assert drop(a["history"]) == drop(b["history"])
    assert train(config, out, progress=False) == b["history"]  # finished: nothing left to do


def test_resuming_with_other_settings_is_refused(files, trained):
    with pytest.raises(NasError, match="other settings.*epochs: 4 there, 5 now"):
        train(micro_config(files, epochs=5, progressive=None), trained, progress=False)
    train(micro_config(files, checkpoint_every=3), trained, progress=False)  # reporting settings may change


def test_eval_command_scores_archs_with_recalibrated_bn(files, trained, capsys):
    assert main(["supernet", "eval", str(trained), "--archs", "max", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    history = json.loads((trained / "history.json").read_text())
    space = load_space(str(files / "micro.yaml"))
    largest = space.extreme(True)
    assert rows == [{"arch_id": largest.arch_id, "accuracy": history[-1]["val_acc_largest"], "arch": dict(largest)}]
    assert space.arch(rows[0]["arch"]) == largest  # other tools rebuild the arch from the JSON
    archs = files / "archs.jsonl"
    assert main(["space", "sample", str(files / "micro.yaml"), "-n", "3", "--seed", "4"]) == 0
    archs.write_text(capsys.readouterr().out)
    assert main(["supernet", "eval", str(trained), "--archs", str(archs), "--split", "test", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["arch_id"] for r in rows] == [json.loads(line)["arch_id"] for line in archs.read_text().splitlines()]
    assert [r["arch"] for r in rows] == [json.loads(line)["arch"] for line in archs.read_text().splitlines()]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_oracle_is_a_cost_model_over_archs_or_codes(files, trained):
    oracle = SupernetAccuracy(trained, split="test", calib_images=64)
    space = oracle.space
    archs = [space.extreme(True), space.extreme(False)]
    by_arch, by_code = oracle.predict(archs), oracle.predict(space.encode_batch(archs))
    assert by_arch.dtype == np.float64 and np.array_equal(by_arch, by_code)
    assert by_arch[0] > 0.3 and oracle.metric == "accuracy"
    config, supernet = load_supernet(trained)
    assert config.epochs == 4 and not supernet.training
    _, from_file = load_supernet(trained / "checkpoint.pt")  # the checkpoint file names its run too
    _states_equal(from_file.state_dict(), supernet.state_dict())
    assert from_file.space.name == "micro"


def test_bn_recalibration_replaces_the_mixed_statistics_of_the_supernet(files, trained):
    """The supernet's running statistics average every subnet it trained; the smallest
    subnet scores far better with statistics of its own, and scoring leaves the supernet as it was."""
    from nas.supernet import SubnetEvaluator
    from nas.supernet.evaluation import accuracy, channels_last, resize
    from nas.supernet.trainer import dataset_for

    config, supernet = load_supernet(trained)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    data = dataset_for(config, supernet.space)
    smallest = supernet.space.extreme(False)
    images = resize(channels_last(data.normalize(data.to_float(data.val.images))), supernet.space.resolution(smallest))
    mixed = accuracy(supernet.extract(smallest), images, data.val.labels, 32)
    recalibrated = SubnetEvaluator(supernet, data, "val", calib_images=128, batch_size=32).accuracy(smallest)
    assert recalibrated >= mixed + 0.1, (mixed, recalibrated)
    _states_equal(supernet.state_dict(), before)


def test_recalibrate_bn_sets_each_norm_to_its_input_statistics(files):
    from nas.supernet import recalibrate_bn

    space = load_space(str(files / "micro.yaml"))
    net = space.build(space.sample(2)).eval()
    images = torch.randn(96, 3, 16, 16) * 2 + 0.5
    first_bn = net[0][1]
    assert isinstance(first_bn, torch.nn.BatchNorm2d)
    momentum = first_bn.momentum
    recalibrate_bn(net, images, batch_size=32)
    with torch.no_grad():
        features = net[0][0](images)  # the stem conv feeding the first norm
    assert not net.training and first_bn.momentum == momentum
    assert torch.allclose(first_bn.running_mean, features.mean((0, 2, 3)), atol=1e-4)
    per_batch = torch.stack([f.var((0, 2, 3)) for f in features.split(32)])  # unbiased, as BN keeps it
    assert torch.allclose(first_bn.running_var, per_batch.mean(0), rtol=1e-4)


def test_standalone_training_of_one_arch_uses_the_same_loop(files):
    space = load_space(str(files / "micro.yaml"))
    arch = space.extreme(True)
    history = train(micro_config(files, epochs=2, progressive=None), files / "alone", arch=arch, progress=False)
    assert history[-1]["val_acc"] > 0.2
    with pytest.raises(NasError, match="stand-alone training"):
        load_supernet(files / "alone")


def test_nb201_one_shot_supernet_trains_with_uniform_single_paths(files):
    config = micro_config(files, space=str(files / "nb201_micro.yaml"), epochs=2, progressive=None,
                          sampling={"random_subnets": 1})
    out = files / "nb201"
    history = train(config, out, progress=False)
    assert history[-1]["loss"] < history[0]["loss"] and "val_acc_sampled" in history[-1]
    _, supernet = load_supernet(out)
    space = supernet.space
    arch = space.from_string("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|")
    supernet.set_active(arch)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (supernet(x) - supernet.extract(arch)(x)).abs().max() <= 1e-5


def test_benchmark_helpers_spread_archs_and_time_steps(files):
    from nas.supernet.bench import spread_archs, step_cost

    space = load_space(str(files / "micro.yaml"))
    archs = spread_archs(space, 6, seed=0)
    macs = space.table("macs")(space.encode_batch(archs))
    assert archs[0] == space.extreme(False) and archs[-1] == space.extreme(True) and np.all(np.diff(macs) > 0)
    row = step_cost(str(files / "micro.yaml"), batch_size=8, random_subnets=2, steps=2, pin=False)
    assert row["subnets"] == 4 and row["sandwich_s"] > row["largest_alone_s"] > 0


def test_archs_file_may_hold_a_json_list_with_nb201_strings(files, tmp_path):
    from nas.supernet.commands import read_archs

    space = load_space(str(files / "nb201_micro.yaml"))
    text = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"
    path = tmp_path / "archs.json"
    path.write_text(json.dumps([text, space.extreme(True).to_dict()]))
    assert read_archs(space, str(path)) == [space.from_string(text), space.extreme(True)]
    path.write_text("{not json")
    with pytest.raises(NasError, match="JSON lines or a JSON list"):
        read_archs(space, str(path))
    path.write_text(json.dumps([text, {"1<-0": "conv_9x9"}]))
    with pytest.raises(NasError, match=r"archs.json: arch 2: .*lacks decision"):
        read_archs(space, str(path))
    path.write_text("[1]")
    with pytest.raises(NasError, match="arch 1 is 1; expected a decision mapping"):
        read_archs(space, str(path))


# ----------------------------------------------------------------------------- files and errors
def test_checkpoints_refuse_arbitrary_pickled_objects(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(2)})
    assert load_checkpoint(path)["epoch"] == 1 and not list(tmp_path.glob(".*tmp"))
    torch.save({"format": "hwnas.supernet-checkpoint/1", "obj": NasError("x")}, path)
    with pytest.raises(NasError, match="not a readable hwnas checkpoint"):
        load_checkpoint(path)


def test_cli_errors_are_one_line(files, tmp_path, capsys):
    assert main(["supernet", "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and "one subfolder per class" in err
    assert not (tmp_path / "r").exists()  # nothing written that a corrected rerun would trip over
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\noptimiser: {lr: 0.1}\n")
    assert main(["supernet", "train", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "unknown setting 'optimiser' (did you mean 'optimizer'?)" in capsys.readouterr().err
    assert main(["supernet", "eval", str(tmp_path), "--archs", "max"]) == 2
    assert "not a training run" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["supernet", "train", "--data", str(files / "digits300.npz"), "--out", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert main(["supernet", "eval", str(tmp_path / "missing"), "--archs", "max"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written files left behind


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nprogressive: true\noptimizer: {name: adamw, lr: 0.003}\n")
    config = load_config(path, {"epochs": 3, "data.source": "x.npz", "seed": None})
    assert config.epochs == 3 and config.data.source == "x.npz" and config.optimizer.name == "adamw"
    assert config.phase_epochs() == [1, 1, 1]
    for text, message in (("batch_size: 0\n", "at least 1"), ("schedule: {name: linear}\n", "choose cosine"),
                          ("progressive: {epochs: [1, 1]}\n", "add up to epochs"), ("amp: maybe\n", "true or false")):
        path.write_text(text)
        with pytest.raises(NasError, match=message):
            load_config(path)


def test_learning_rate_schedule():
    cosine = ScheduleConfig(warmup_epochs=1)
    rates = [lr_at(s, 100, 10, 0.1, cosine) for s in range(100)]
    assert rates[0] == pytest.approx(0.01) and rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.1) and rates[-1] < 1e-3 and all(a >= b for a, b in itertools.pairwise(rates[9:]))
    step = ScheduleConfig(name="step", step_epochs=2, gamma=0.5)
    assert [lr_at(s, 100, 10, 0.1, step) for s in (0, 19, 20, 45)] == pytest.approx([0.1, 0.1, 0.05, 0.025])


# ----------------------------------------------------------------------------- distributed
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(files, tmp_path):
    """torchrun with 2 gloo processes (8 images each) against 1 process accumulating the
    config's 2 micro-batches of 8."""
    config = tmp_path / "ddp.yaml"
    config.write_text(f"space: {files / 'micro.yaml'}\ndata: {{source: {files / 'digits300.npz'}}}\n"
                      "epochs: 1\nbatch_size: 16\ncheckpoint_every: 0\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nas.cli", "supernet", "train", str(config), "--out", str(tmp_path / "ddp"), "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    single = load_config(config, {"workers": 1})
    train(single, tmp_path / "single", progress=False)
    a = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model"]
    weights = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert len(weights) > 40
    for key in weights:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    initial = Supernet(load_space(str(files / "micro.yaml"))).state_dict()
    assert sum(not torch.equal(a[k], initial[k]) for k in weights) > 0.9 * len(weights)  # it did train


def test_sigkill_during_cli_training_then_rerun_gives_the_uninterrupted_result(files, trained, tmp_path):
    """A real kill -9 of `hwnas supernet train` mid-epoch (after a progressive phase
    started and channels were sorted), then the same command again: the final weights and
    optimizer state are bit-identical to the run that never stopped."""
    import signal
    import time

    config = tmp_path / "micro.yaml"
    config.write_text(f"space: {files / 'micro.yaml'}\ndata: {{source: {files / 'digits600.npz'}, crop_padding: 0}}\n"
                      "epochs: 4\nbatch_size: 16\ncheckpoint_every: 10\nprogressive: {epochs: [1, 1, 2]}\n")
    args = ["supernet", "train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    deadline, position, seen = time.time() + 120, (0, 0), None
    while time.time() < deadline and position < (1, 10) and proc.poll() is None:
        time.sleep(0.05)
        stamp = checkpoint.stat().st_mtime_ns if checkpoint.is_file() else None
        if stamp != seen:
            state, seen = load_checkpoint(checkpoint), stamp
            position = (state["epoch"], state["step"])
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    state = load_checkpoint(checkpoint)
    assert (1, 10) <= (state["epoch"], state["step"]) < (4, 0)
    assert main(args) == 0  # the same command again (in this process: one interpreter start less)
    a, b = load_checkpoint(trained / "checkpoint.pt"), load_checkpoint(checkpoint)
    assert (b["epoch"], b["step"]) == (4, 0)
    _states_equal(a["model"], b["model"])
    _states_equal(a["optimizer"], b["optimizer"])
