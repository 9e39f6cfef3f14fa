"""Local data-parallel workers (nas.threads.plan_workers, nas.supernet.workers): how many
start, the explicit override and its bad values, real gloo training in 2 worker
processes that resumes and matches one process, and a worker's error reaching the user
as one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import CompatibilityError, NasError
from nas.space import load_space
from nas.supernet.checkpoint import load_checkpoint
from nas.supernet.config import config_from_dict
from nas.supernet.run import RunDir
from nas.supernet.trainer import train
from nas.threads import choose_workers
from tests.supernet_helpers import micro_space_yaml, one_thread  # noqa: F401 (autouse fixture)
from tests.test_threads import run_python


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("workers")
    (root / "micro.yaml").write_text(micro_space_yaml("micro"))
    digits = load_digits()
    x = np.rint(digits.images * 255 / 16).astype(np.uint8)
    np.savez(root / "digits120.npz", x=x[:120], y=digits.target[:120])
    return root


def micro(files: Path, **changes):
    data = {"space": str(files / "micro.yaml"), "data": {"source": str(files / "digits120.npz")}, "epochs": 1,
            "batch_size": 16, "checkpoint_every": 2, "calib_images": 16}
    return config_from_dict({**data, **changes})


@pytest.mark.parametrize("usable, micro_batches, expected", [
    (2, 2, 2),   # a quiet 2-core machine: one worker per micro-batch
    (1, 2, 1),   # a busy neighbour: one process accumulates both
    (4, 2, 2),   # more cores than micro-batches: at most one worker per micro-batch
    (3, 4, 2),   # every worker runs as many micro-batches as the others
    (5, 6, 3),
    (8, 6, 6),
    (2, 1, 1),
    (2, 3, 1),
])
def test_workers_are_the_largest_divisor_of_the_micro_batches_within_the_usable_cores(usable, micro_batches, expected):
    assert choose_workers(usable, micro_batches) == expected


def test_the_plan_keeps_one_core_or_explicit_threads_in_process_and_honours_a_worker_count():
    out = run_python("""
        import json, os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import nas.threads as t
        one = t.plan_workers(None, 2)          # one usable core: no worker to start, the pool keeps adapting
        asked = t.plan_workers(2, 2)           # --workers 2 on that core: as asked, one thread each
        t.configure(3)
        explicit = t.plan_workers(None, 2)     # --threads 3: one process with that pool
        both = t.plan_workers(2, 4)
        print(json.dumps([[p.workers, p.threads, p.adaptive] for p in (one, asked, explicit, both)]))""")
    assert json.loads(out.stdout) == [[1, 1, True], [2, 1, False], [1, 3, False], [2, 3, False]]


def test_a_worker_loads_the_trainer_without_the_onnx_stack():
    """Every data-parallel worker imports the trainer at start; onnx and the runtime's
    quantization tooling (~0.6 s) load only when an int8 arch is scored or exported."""
    found = run_python("""
        import sys
        import nas.supernet.trainer, nas.supernet.workers
        print(sorted(m for m in ("onnx", "onnxruntime", "ml_dtypes") if m in sys.modules))
    """).stdout.split()
    assert found == ["[]"]


def test_a_worker_count_is_validated_and_is_not_part_of_the_results(files, tmp_path):
    for changes, message in (({"workers": 0}, "at least 1"), ({"workers": 3}, "workers 3 must divide micro_batches"),
                             ({"batch_size": 15}, "batch_size 15 must divide into micro_batches"),
                             ({"micro_batches": 0}, "at least 1")):
        with pytest.raises(NasError, match=message):
            micro(files, **changes)
    space = load_space(str(files / "micro.yaml"))
    RunDir(tmp_path).prepare(micro(files, workers=2), space, None)
    RunDir(tmp_path).prepare(micro(files, workers=1), space, None)  # a run resumes with other workers
    with pytest.raises(CompatibilityError, match="micro_batches"):
        RunDir(tmp_path).prepare(micro(files, micro_batches=4), space, None)  # but not with other micro-batches
    legacy = micro(files).to_dict()
    legacy["accumulate"] = legacy.pop("micro_batches")  # a run folder written before micro_batches
    assert config_from_dict(legacy).micro_batches == 2
    done = subprocess.run([sys.executable, "-m", "nas.cli", "supernet", "train", "--workers", "0", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "--workers: 0 must be at least 1" in done.stderr


def _weights_close(a: Path, b: Path) -> None:
    x, y = load_checkpoint(a / "checkpoint.pt")["model"], load_checkpoint(b / "checkpoint.pt")["model"]
    weights = [k for k in x if "running_" not in k and "num_batches" not in k]  # BN statistics are recalibrated
    assert len(weights) > 40
    for key in weights:
        assert torch.allclose(x[key], y[key], atol=1e-6), key


def test_two_worker_processes_resume_a_run_and_end_with_the_weights_of_one_process(files, tmp_path):
    """A run stopped after 3 of 5 steps in one process (checkpoint at step 2) and finished by
    2 gloo workers (one micro-batch of 8 each), against one process accumulating the 2
    micro-batches uninterrupted: the result does not depend on how many cores were free."""
    assert train(micro(files, workers=1), tmp_path / "mixed", progress=False, max_steps=3) == []
    assert load_checkpoint(tmp_path / "mixed" / "checkpoint.pt")["step"] == 2
    history = train(micro(files, workers=2), tmp_path / "mixed", progress=False)
    assert [(h["epoch"], h["workers"], h["threads"]) for h in history] == [(1, 2, 1)]
    assert json.loads((tmp_path / "mixed" / "history.json").read_text()) == history  # rank 0 wrote the files
    train(micro(files, workers=1), tmp_path / "one", progress=False)
    _weights_close(tmp_path / "mixed", tmp_path / "one")


@pytest.mark.slow
def test_two_workers_stopped_and_resumed_match_and_the_benchmark_runs_them(files, tmp_path):
    from nas.supernet.bench import step_cost

    assert train(micro(files, workers=2), tmp_path / "two", progress=False, max_steps=3) == []
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pt")["step"] == 2
    train(micro(files, workers=2), tmp_path / "two", progress=False)
    train(micro(files, workers=1), tmp_path / "one", progress=False)
    _weights_close(tmp_path / "two", tmp_path / "one")
    row = step_cost(str(files / "micro.yaml"), batch_size=8, random_subnets=2, steps=2, pin=False, workers=2)
    assert row["parallelism"].startswith("2 workers x 1 thread") and row["sandwich_s"] > row["largest_alone_s"] > 0


def test_an_error_in_one_worker_is_the_commands_one_line_error(files, tmp_path, capsys):
    """Only rank 0 checks the run folder, so rank 1 is already waiting for it in DDP's
    first collective when rank 0 fails: the parent stops it and reports rank 0's error."""
    from nas.cli import main

    RunDir(tmp_path / "run").prepare(micro(files, epochs=2), load_space(str(files / "micro.yaml")), None)
    config = tmp_path / "micro.yaml"
    config.write_text(f"space: {files / 'micro.yaml'}\ndata: {{source: {files / 'digits120.npz'}}}\nepochs: 1\n"
                      "batch_size: 16\ncheckpoint_every: 2\ncalib_images: 16\n")
    assert main(["supernet", "train", str(config), "--workers", "2", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: ") and err.count("\n") == 1 and "other settings (epochs: 2" in err, err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoint.pt").exists()
