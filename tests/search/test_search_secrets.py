"""A storage URL's credentials never reach a file, a log, a report, stderr or a worker's argv."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from nas.experiment.steps.search import _start_workers, _wait
from nas.errors import NasError

REPO = Path(__file__).resolve().parents[2]
SECRET = "SECRETPASS"
URL = f"postgresql+psycopg2://user:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1: the open fails at once
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _files_with_secret(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def _search_config(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"space": "tiny_mbconv", "objectives": ["min params"], "controller": "random",
                                    "budget": 3, "out": str(tmp_path / "out")}))
    return path


def test_a_postgres_worker_experiment_writes_the_password_nowhere(tmp_path: Path) -> None:
    config = tmp_path / "sec.yaml"
    config.write_text(yaml.safe_dump({
        "name": "sec", "space": "nb201",
        "devices": {"edgegpu": {"latency": {"predictor": str(REPO / "predictors/edgegpu/nb201_latency.npz")}}},
        "accuracy": {"predictor": str(REPO / "predictors/accuracy/nb201_cifar10.npz")},
        "objectives": ["max accuracy"], "budgets": ["latency@edgegpu <= 8 ms"],
        "search": {"controller": "optuna-tpe", "budget": 5, "storage": "$HWNAS_STORAGE", "workers": 2}}))
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "run", str(config), "--runs", "runs", "--quiet"],
                          cwd=tmp_path, env={**ENV, "HWNAS_STORAGE": URL}, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "cannot open it" in proc.stderr and "user:***@127.0.0.1:1/db" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    assert (run / "search" / "search.yaml").is_file() and (run / "report.html").is_file()
    assert (run / "search" / "workers" / "w1.log").is_file()
    assert _files_with_secret(tmp_path) == []


def test_workers_get_the_url_through_the_environment_not_their_command_line(tmp_path: Path) -> None:
    out = tmp_path / "search"
    out.mkdir()
    (out / "search.yaml").write_text(_search_config(tmp_path).read_text())
    procs = _start_workers(out, URL, "study", 1)
    try:
        seen = []  # the command line from fork to exec to exit: none of it holds the password
        while procs[0][0].poll() is None and not any(b"nas.cli" in a for a in seen):
            seen.append(Path(f"/proc/{procs[0][0].pid}/cmdline").read_bytes())
        assert any(b"nas.cli" in a for a in seen) and not any(SECRET.encode() in a for a in seen)
    finally:
        try:
            _wait(procs)
        except NasError as exc:  # the worker cannot reach the server: it says so without the password
            assert SECRET not in str(exc) and "cannot open it" in str(exc)
    assert _files_with_secret(tmp_path) == []


def test_the_search_command_prints_no_password(tmp_path: Path) -> None:
    config = _search_config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(config), "--storage", URL, "--quiet"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert SECRET not in proc.stderr and "user:***@" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(config), "--quiet"], cwd=tmp_path,
                          env={**ENV, "HWNAS_STORAGE_URL": URL}, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2 and SECRET not in proc.stderr and "user:***@" in proc.stderr


def test_a_credential_in_a_sqlite_query_is_redacted_in_the_summary(tmp_path: Path) -> None:
    config = _search_config(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}?password={SECRET}"
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(config), "--storage", url, "--quiet",
                           "--json"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["storage"].endswith("?password=***")
    assert SECRET not in proc.stdout and _files_with_secret(tmp_path / "out") == []
