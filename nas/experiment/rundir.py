"""Run folders: runs/<id>/, one per run, never reused for another config or overwritten.

    run.json          id, experiment name, config digest, status, and each step's state
    config.yaml       the experiment file as given; experiment.json the validated settings
    environment.json  Python, OS, CPU, GPU, library versions, hwnas commit
    logs/run.log      what happened when: steps started, resumed, cached, finished, warnings
    profile/ train/ search/ export/   each step's folder (step.json once finished)
    report.html       the run as one self-contained page

An id is <name>-<UTC date>-<time>-<4 hex digits>, created with an exclusive mkdir. A
run being executed holds an advisory lock on runs/<id>/.lock, so two processes never
drive one run, and a killed run (lock released, status still "running") is found and
resumed by the next `hwnas run` of the same config.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import platform
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nas.atomic import write_atomic
from nas.catalog import package_dir
from nas.errors import NasError, closest
from nas.jsonfile import read_json

SCHEMA = "hwnas.run/1"
LIBRARIES = ("hwnas", "torch", "numpy", "onnx", "onnxruntime", "optuna", "scikit-learn", "scipy", "pandas",
             "pydantic", "matplotlib", "safetensors")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Run:
    """One run folder and its run.json."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.file = self.path / "run.json"
        self._lock_fh: Any = None

    @property
    def id(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------ creating and finding
    @classmethod
    def create(cls, root: Path, name: str, digest: str, config_text: str, experiment: dict[str, Any],
               config_file: Path) -> Run:
        """A new run folder with a fresh id, the config copies and the environment."""
        root.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            path = root / f"{name}-{stamp}-{secrets.token_hex(2)}"
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise NasError(f"cannot create a new run folder under {root}")
        run = cls(path)
        write_atomic(path / "config.yaml", config_text)
        write_atomic(path / "experiment.json", json.dumps(experiment, indent=2) + "\n")
        write_atomic(path / "environment.json", json.dumps(environment(), indent=2) + "\n")
        run.write({"schema": SCHEMA, "id": run.id, "name": name, "config_digest": digest,
                   "config_file": str(config_file), "created": now(), "status": "new", "steps": {}})
        return run

    @classmethod
    def resumable(cls, root: Path, name: str, digest: str) -> Run | None:
        """The latest unfinished run of this exact config that no process is running."""
        found = []
        for run in all_runs(root):
            try:
                state = run.read()
            except NasError:  # a damaged folder is no run to resume
                continue
            if state.get("name") == name and state.get("config_digest") == digest and state.get("status") != "finished" \
                    and not run.locked():
                found.append((state.get("created", ""), run.id, run))
        return max(found)[2] if found else None

    # ------------------------------------------------------------------ state
    def read(self) -> dict[str, Any]:
        return read_json(self.file, f"{self.path} is not a run folder (no run.json)", schema=SCHEMA)

    def write(self, state: dict[str, Any]) -> None:
        write_atomic(self.file, json.dumps(state, indent=2) + "\n")

    def update(self, **fields: Any) -> None:
        state = self.read()
        state.update(fields)
        self.write(state)

    def update_step(self, step: str, **fields: Any) -> None:
        state = self.read()
        state["steps"].setdefault(step, {}).update(fields)
        self.write(state)

    def log(self, message: str) -> None:
        """Append a timestamped line to logs/run.log."""
        log = self.path / "logs" / "run.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(f"{now()} {message}\n")

    # ------------------------------------------------------------------ lock
    def locked(self) -> bool:
        """True while another process drives this run."""
        if self._lock_fh is not None:
            return False
        try:
            with open(self.path / ".lock", "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
        except BlockingIOError:
            return True
        return False

    @contextmanager
    def lock(self) -> Iterator[None]:
        fh = open(self.path / ".lock", "a")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise NasError(f"run {self.id} is being run by another process") from None
        self._lock_fh = fh
        try:
            yield
        finally:
            self._lock_fh = None
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


def all_runs(root: Path) -> list[Run]:
    """Every run folder under `root`, oldest first."""
    if not Path(root).is_dir():
        return []
    runs = [Run(p.parent) for p in Path(root).glob("*/run.json")]
    return sorted(runs, key=lambda r: r.id)


def find_run(root: Path, ref: str) -> Run:
    """A run by folder path, id, or unique id prefix; an error listing close ids otherwise."""
    path = Path(ref)
    if (path / "run.json").is_file():
        return Run(path)
    runs = all_runs(root)
    ids = [r.id for r in runs]
    if ref in ids:
        return runs[ids.index(ref)]
    matches = [r for r in runs if r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise NasError(f"run {ref!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")
    raise NasError(f"no run {ref!r} under {root}{closest(ref, ids)}; 'hwnas runs list' shows them")


def environment() -> dict[str, Any]:
    """What a run ran on: Python, OS, CPU, GPU, library versions, the hwnas commit and the
    parallelism it started with (threads and how they were chosen, affinity, wait policy,
    workers, the load average at its start: a training time means little without them)."""
    from nas.provenance import library_versions
    from nas.hardware.devices import host_facts
    from nas.threads import ensure_configured

    return {"python": platform.python_version(), "platform": platform.platform(), "host": platform.node(),
            **{k: v for k, v in host_facts().items() if k != "machine"}, "gpu": _gpus(),
            "parallelism": ensure_configured().record(),
            "libraries": library_versions(LIBRARIES), "hwnas_commit": _commit(), "created": now()}


def _gpus() -> list[str]:
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch, or a CUDA runtime that cannot start: no usable GPU either way
        return []


def _commit() -> str | None:
    """The commit of the git checkout the running nas package lives in ('+dirty' when nas/
    has uncommitted changes); None for an installed package (site-packages, even inside a
    venv that sits in some repository: nas/ must be at the top of the work tree)."""
    root = package_dir().parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        lines = head.stdout.splitlines()
        if head.returncode or len(lines) != 2 or Path(lines[0]).resolve() != root.resolve():
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "nas"], capture_output=True,
                               text=True, timeout=10, check=False).stdout.strip()
        return lines[1] + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None
