"""Local data-parallel worker processes: one training run as W processes on this machine.

`launch(target, kwargs, parallelism)` starts `parallelism.workers` fresh interpreters
(`python -m nas.supernet.workers`), each joining one gloo process group on 127.0.0.1 as
torchrun's workers would (RANK, WORLD_SIZE, MASTER_ADDR/PORT, OMP_NUM_THREADS), and calls
the importable function `target` with the JSON `kwargs` in every one of them; rank 0's
return value comes back. Why processes and not threads: each worker's single torch thread
never waits at another's operator barrier; they meet once per step, at the gradient
all-reduce (nas/threads.py).

The parent only supervises, so it never blocks inside a collective: it hosts the
rendezvous store (on a port the OS picks, so two runs cannot race for one), waits for
the workers, and when one fails stops the others and raises its error: a NasError of a
worker is raised again here as the same class and message (the CLI's one line and exit
2); anything else prints that worker's traceback and raises RuntimeError. Workers read
their job from stdin and keep it open: when the parent dies (even by SIGKILL) they see
end-of-file and exit, so nothing trains on unsupervised; what they leave is the last
checkpoint, as after any kill. Jobs and results are JSON, never pickle.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nas import errors
from nas.atomic import write_atomic
from nas.threads import Parallelism

POLL_S = 0.05
GRACE_S = 2.0    # how long the other workers get to report their own error after one fails


def launch(target: str, kwargs: dict[str, Any], parallelism: Parallelism) -> Any:
    """Run `target` ("module:function") with `kwargs` in `parallelism.workers` processes of
    `parallelism.threads` torch threads each; returns rank 0's result."""
    from torch.distributed import TCPStore

    world = parallelism.workers
    store = TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="hwnas-workers-") as tmp:
        job = json.dumps({"target": target, "kwargs": kwargs, "results": tmp}) + "\n"
        env = {**os.environ, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
               "TORCHELASTIC_USE_AGENT_STORE": "True", "OMP_NUM_THREADS": str(parallelism.threads)}
        procs: list[subprocess.Popen] = []
        try:
            for rank in range(world):
                proc = subprocess.Popen([sys.executable, "-m", "nas.supernet.workers"], stdin=subprocess.PIPE,
                                        stdout=_stderr(), text=True,
                                        env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)})
                proc.stdin.write(job)
                proc.stdin.flush()
                procs.append(proc)
            _wait(procs)
        finally:
            for proc in procs:  # after an error or an interrupt here: no worker outlives its run
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdin.close()
        reports = [_read(Path(tmp) / f"rank{r}.json") for r in range(world)]
    failed = [(r, rep, p.returncode) for r, (rep, p) in enumerate(zip(reports, procs)) if p.returncode or "error" in rep]
    if not failed:
        return reports[0]["result"]
    for rank, rep, _ in failed:  # a user's mistake first: the others failed because it left
        cls = getattr(errors, rep.get("kind") or "", None)
        if isinstance(cls, type) and issubclass(cls, errors.NasError):
            raise cls(rep["error"])
    rank, rep, code = failed[0]
    if "traceback" in rep:
        print(rep["traceback"], file=sys.stderr, end="")
        raise RuntimeError(f"training worker {rank} failed: {rep['error']} (its traceback is above)")
    raise RuntimeError(f"training worker {rank} exited with code {code} without a report (killed?)")


def _wait(procs: list[subprocess.Popen]) -> None:
    """Until every worker exits; once one fails, the others get GRACE_S to finish failing."""
    failed_at = None
    while any(p.poll() is None for p in procs):
        if failed_at is None and any(p.returncode for p in procs):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            return
        time.sleep(POLL_S)


def _stderr() -> int | None:
    """Workers print to our stderr (stdout carries the command's result), or inherit stdout
    where stderr is no file (a test's captured stream)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _exit_with_parent() -> None:
    """The parent holds our stdin open; end-of-file means it is gone. (os.read on the file
    descriptor: a daemon thread holding sys.stdin's lock can abort the interpreter's exit.)"""
    while os.read(0, 4096):
        pass
    os._exit(1)


def main() -> None:
    job = json.loads(sys.stdin.readline())
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    rank = int(os.environ["RANK"])
    if rank:
        import warnings

        warnings.simplefilter("ignore")  # rank 0 shows the run's warnings once
    out = Path(job["results"]) / f"rank{rank}.json"
    module, name = job["target"].split(":")
    try:
        result = getattr(importlib.import_module(module), name)(**job["kwargs"])
        report: dict[str, Any] = {"result": result}
    except errors.NasError as exc:
        report = {"error": str(exc), "kind": type(exc).__name__}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides what the user sees
        report = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    write_atomic(out, json.dumps(report, default=str))
    sys.exit(1 if "error" in report else 0)


if __name__ == "__main__":
    main()
