"""`hwnas run` end to end on a tiny config: real profiling, training, search and report.

The module's run is killed with SIGKILL inside the profile, train and search steps and
rerun each time; the tests then check that it finished in the same run folder without
redoing finished work, and use it for the cache, the results store and the report.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
# Small enough to run in about a minute, with steps long enough (seconds) to be killed inside
# even when this test process is descheduled for a while on a loaded machine.
TINY = {
    "name": "tiny", "seed": 0, "space": "tiny_mbconv",
    "dataset": {"source": "digits", "test_fraction": 0.9},
    "devices": {"local-cpu": {"latency": {"profile": {"warmup": 2, "repeats": 300, "rounds": 3, "passes": 1, "calibrate": 0}}},
                "pi4-ort": {"latency": {"like": "local-cpu"}, "energy": "analytic"}},
    "objectives": ["max accuracy"],
    "budgets": ["latency@local-cpu <= 0.6 ms", "energy@pi4-ort <= 4 mJ"],
    "accuracy": {"supernet": {"split": "val", "calib_images": 16}},
    "train": {"epochs": 1, "batch_size": 16, "calib_images": 16, "checkpoint_every": 2,
              "sampling": {"random_subnets": 0}},
    "search": {"controller": {"name": "evolution", "population": 4, "init": 4}, "budget": 10, "verify": ["local-cpu"]},
    "export": {"arch": "best", "measure_latency": True},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the machine is shared: no oversubscription


def frozen_checkout(folder: Path) -> Path:
    """A copy of the package, spaces and device profiles to run from: step keys hash the
    source code, and other work on this checkout must not change it halfway through."""
    for name in ("nas", "search_spaces", "latency_luts"):
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def hwnas(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    if check and proc.returncode:
        raise AssertionError(f"hwnas {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def run_until(cwd: Path, config: Path, ready, what: str) -> None:
    """Start `hwnas run`, SIGKILL it as soon as ready() holds."""
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "run", str(config), "--runs", "runs", "--quiet"], cwd=cwd,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def only_run(cwd: Path) -> Path:
    runs = [p for p in (cwd / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def step_status(run: Path, step: str) -> str | None:
    try:
        return json.loads((run / "run.json").read_text())["steps"].get(step, {}).get("status")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def lut_rows(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {row["key"]: row["median"] for row in csv.DictReader(fh)}


def completed_queries(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny experiment, killed once inside each of profile, train, search and export, then finished."""
    cwd = frozen_checkout(tmp_path_factory.mktemp("exp"))
    config = cwd / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    seen: dict = {}

    def run_dir() -> Path | None:
        found = [p for p in (cwd / "runs").glob("tiny-*")] if (cwd / "runs").is_dir() else []
        return found[0] if found else None

    def in_profile() -> bool:
        run = run_dir()
        lut = run / "profile" / "luts" / "local-cpu" / "tiny_mbconv.csv" if run else None
        return bool(lut and lut.with_suffix(".json").is_file() and lut.is_file() and lut_rows(lut))

    run_until(cwd, config, in_profile, "the first LUT chunk")
    run = only_run(cwd)
    seen["lut_before"] = lut_rows(run / "profile" / "luts" / "local-cpu" / "tiny_mbconv.csv")
    seen["profile_killed"] = step_status(run, "profile") == "running"
    assert not (run / "profile" / "step.json").exists()

    run_until(cwd, config, lambda: (run / "train" / "checkpoint.pt").is_file(), "a training checkpoint")
    seen["train_killed"] = step_status(run, "train") == "running"
    seen["profile_step"] = (run / "profile" / "step.json").read_text()

    run_until(cwd, config, lambda: completed_queries(run / "search" / "study.db") >= 2, "two search queries")
    seen["search_killed"] = step_status(run, "search") == "running"
    seen["train_step"] = (run / "train" / "step.json").read_text()
    with sqlite3.connect(run / "search" / "study.db") as conn:
        seen["queries_before"] = conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]

    run_until(cwd, config, lambda: step_status(run, "export") == "running", "the export")
    seen["search_step"] = (run / "search" / "step.json").read_text()

    seen["final"] = hwnas("run", config, "--runs", "runs", cwd=cwd)
    return {"cwd": cwd, "config": config, "run": only_run(cwd), **seen}


def test_killed_at_each_step_it_resumes_in_the_same_folder_without_redoing_work(killed_run: dict) -> None:
    run = killed_run["run"]
    assert killed_run["profile_killed"] and killed_run["train_killed"] and killed_run["search_killed"]
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "finished"
    assert {s: state["steps"][s]["status"] for s in ("profile", "train", "search", "export")} == \
        {"profile": "done", "train": "done", "search": "done", "export": "finished"}
    # steps finished before a later kill were not run again
    for step in ("profile", "train", "search"):
        assert (run / step / "step.json").read_text() == killed_run[f"{step}_step"]
    log = (run / "logs" / "run.log").read_text()
    for step in ("profile", "train", "search", "export"):
        assert f"{step}: resuming" in log
    # the profile build kept the blocks timed before the kill (re-timing would change them)
    final = lut_rows(run / "profile" / "luts" / "local-cpu" / "tiny_mbconv.csv")
    assert len(final) > len(killed_run["lut_before"])
    assert all(final[k] == v for k, v in killed_run["lut_before"].items())
    # the search replayed its recorded queries instead of spending them again
    summary = json.loads((run / "search" / "summary.json").read_text())
    assert summary["queries"] == TINY["search"]["budget"]
    assert summary["stats"]["replayed"] >= killed_run["queries_before"]
    assert summary["stats"]["queries"] == TINY["search"]["budget"] - killed_run["queries_before"]


def test_the_run_folder_holds_config_environment_logs_and_every_output(killed_run: dict) -> None:
    run = killed_run["run"]
    assert yaml.safe_load((run / "config.yaml").read_text()) == TINY
    env = json.loads((run / "environment.json").read_text())
    assert env["cpu"] and env["cores"] >= 1 and isinstance(env["gpu"], list)
    assert env["libraries"]["torch"] and env["libraries"]["onnxruntime"] and env["python"]
    assert env["parallelism"]["threads"] >= 1 and len(env["parallelism"]["load_average"]) == 3
    assert "parallelism" in (run / "logs" / "run.log").read_text()
    assert re.search(r"<th>parallelism</th><td>\d+ threads? \(", (run / "report.html").read_text())
    for name in ("profile/luts/local-cpu/tiny_mbconv.csv", "profile/luts/local-cpu/tiny_mbconv.json",
                 "train/checkpoint.pt", "train/history.json", "search/archs.csv", "search/front.png",
                 "search/summary.json", "search/search.yaml", "export/model/model.onnx", "export/model/card.json",
                 "export/model/MODEL_CARD.md", "export/model/model.safetensors", "report.html", "logs/run.log"):
        assert (run / name).is_file(), name
    with open(run / "search" / "archs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == TINY["search"]["budget"] and len({r["arch_id"] for r in rows}) == len(rows)
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows)


def test_the_exported_model_runs_the_same_in_onnxruntime_and_pytorch(killed_run: dict) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from nas.export import load

    folder = killed_run["run"] / "export" / "model"
    assert (killed_run["cwd"] / "nas").is_dir()  # the run used the frozen copy of the package
    card = json.loads((folder / "card.json").read_text())
    summary = json.loads((killed_run["run"] / "search" / "summary.json").read_text())
    # with `verify` the export is the best front arch that meets the budgets measured, which is the
    # search's best only when that one measures within them
    assert card["arch_id"] == summary["verified"]["best"]["arch_id"] and card["provenance"]["search_run"] == killed_run["run"].name
    lut_latency = [p for p in card["predictions"] if p["device"] == "local-cpu" and p["metric"] == "latency"]
    assert len(lut_latency) == 1, "the card predicts from the LUT the run profiled"
    lut_file = (killed_run["cwd"] / lut_latency[0]["source"]["file"]).resolve()
    assert lut_file.is_relative_to((killed_run["run"] / "profile").resolve())
    model = load(folder).eval()
    x = np.random.default_rng(0).standard_normal((2, *card["input"]["shape"][1:])).astype(np.float32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 10) and np.abs(got - want).max() <= 1e-4


def test_the_card_and_the_report_check_every_budget_of_the_run_from_the_search_sources(killed_run: dict) -> None:
    """pi4-ort has no LUT of its own: its latency is local-cpu's LUT (a stand-in) and its
    energy the analytic estimate over it. The card re-checks that budget, and every other
    one the search ran under, with the search's own sources: the same values, met or not."""
    import html

    run = killed_run["run"]
    card = json.loads((run / "export" / "model" / "card.json").read_text())
    summary = json.loads((run / "search" / "summary.json").read_text())
    assert [b["budget"] for b in card["budgets"]] == summary["problem"]["constraints"] == TINY["budgets"]
    searched = next(r["metrics"] for r in summary["front"] if r["arch_id"] == card["arch_id"])  # (verify's pick)
    for row in card["budgets"]:
        assert row["met"] is True, row  # the best feasible arch meets every budget it was searched under
        assert row["value"] == pytest.approx(searched[row["metric"]], rel=1e-12), row
    energy = next(b for b in card["budgets"] if b["metric"] == "energy@pi4-ort")
    assert energy["unit"] == "mJ" and "stand-in: latency@local-cpu" in energy["source"]
    assert card["sources"]["latency@pi4-ort"] == {"like": "local-cpu"} and card["sources"]["energy@pi4-ort"] == \
        {"analytic": True}
    predicted = [p for p in card["predictions"] if p["device"] == "pi4-ort"]
    assert {p["metric"] for p in predicted} == {"latency", "energy"}
    assert not [s for s in card["skipped"] if s.get("device") == "pi4-ort"]
    markdown = (run / "export" / "model" / "MODEL_CARD.md").read_text()
    report = (run / "report.html").read_text()
    section = report[report.index("Budgets on the card"):]
    for budget in TINY["budgets"]:
        assert f"| `{budget}` |" in markdown and html.escape(budget) in section
    assert markdown.count("| yes |") == len(TINY["budgets"]) and section.count("<td>met</td>") == len(TINY["budgets"])


def test_the_front_is_re_measured_and_the_export_is_the_best_arch_meeting_the_budgets_measured(killed_run: dict) -> None:
    run = killed_run["run"]
    summary = json.loads((run / "search" / "summary.json").read_text())
    verified = summary["verified"]
    assert [r["arch_id"] for r in verified["front"]] == [r["arch_id"] for r in summary["front"]]
    assert (run / "search" / "front_verified.csv").is_file()
    card = json.loads((run / "export" / "model" / "card.json").read_text())
    best = verified["best"]  # the uncalibrated LUT over-predicts whole networks: the best meets its budget measured
    assert best is not None and card["arch_id"] == best["arch_id"]
    assert all(r["meets_measured"] == (r["latency"]["latency@local-cpu"]["measured_ms"] <= 0.6)
               for r in verified["front"])
    assert card["provenance"]["verified_latency"] == best["latency"]
    markdown = (run / "export" / "model" / "MODEL_CARD.md").read_text()
    assert f"re-measured on the search's front before export: latency@local-cpu " \
           f"{best['latency']['latency@local-cpu']['measured_ms']:.4g} ms" in markdown


def test_a_finished_config_reruns_from_the_cache_and_from_step_recomputes(killed_run: dict) -> None:
    cwd, config, first = killed_run["cwd"], killed_run["config"], killed_run["run"]
    start = time.monotonic()
    hwnas("run", config, "--runs", "runs", "--quiet", cwd=cwd)
    runs = sorted(p for p in (cwd / "runs").glob("tiny-*") if p != first)
    assert len(runs) == 1, "a finished run is never reused: the rerun gets a new folder"
    cached = json.loads((runs[0] / "run.json").read_text())
    assert {s: cached["steps"][s]["status"] for s in ("profile", "train", "search", "export")} == \
        {"profile": "cached", "train": "cached", "search": "cached", "export": "cached"}
    assert cached["steps"]["train"]["cached_from"] == first.name
    assert time.monotonic() - start < 120
    # cached outputs are the same files (hard links), not copies
    assert (runs[0] / "train" / "checkpoint.pt").stat().st_ino == (first / "train" / "checkpoint.pt").stat().st_ino

    hwnas("run", config, "--runs", "runs", "--quiet", "--from", "search", cwd=cwd)
    third = sorted(set((cwd / "runs").glob("tiny-*")) - {first, runs[0]})
    assert len(third) == 1
    state = json.loads((third[0] / "run.json").read_text())
    assert (state["steps"]["profile"]["status"], state["steps"]["train"]["status"],
            state["steps"]["search"]["status"]) == ("cached", "cached", "finished")
    # same seed, same inputs: the recomputed search finds the same archs with the same accuracies
    with open(first / "search" / "archs.csv") as a, open(third[0] / "search" / "archs.csv") as b:
        assert a.read() == b.read()


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from nas.cli import main

    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_list_show_compare(killed_run: dict, capsys: pytest.CaptureFixture) -> None:
    runs, run = killed_run["cwd"] / "runs", killed_run["run"]
    code, listed, _ = cli(capsys, "runs", "list", "--runs", runs)
    assert code == 0 and run.name in listed and "finished" in listed and "accuracy" in listed
    summary = json.loads((run / "search" / "summary.json").read_text())
    code, shown, _ = cli(capsys, "runs", "show", run.name[:-3], "--runs", runs)
    assert code == 0 and summary["best"]["arch_id"] in shown and "latency@local-cpu" in shown
    facts = json.loads(cli(capsys, "runs", "show", run.name, "--runs", runs, "--json")[1])
    assert facts["best"] == summary["best"]["arch_id"] and facts["status"] == "finished"
    others = sorted(p.name for p in runs.glob("tiny-*"))
    code, table, _ = cli(capsys, "runs", "compare", *others, "--runs", runs)
    assert code == 0 and all(name in table for name in others) and "best arch" in table and "queries" in table
    code, _, err = cli(capsys, "runs", "show", run.name + "x", "--runs", runs)
    assert code == 2 and f"did you mean '{run.name}'" in err and err.count("\n") == 1


# ---------------------------------------------------------------------- the report in a browser
def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and running as root; else skip."""
    found = chromium_binary()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        if proc.returncode:
            pytest.skip(f"'{' '.join(cmd)}' failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return chromium_binary() or pytest.skip("apt-get installed chromium but no chromium binary is on PATH")


def headless(chromium: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--user-data-dir=" + str(cwd / "chromium-profile"), *args],
                          capture_output=True, text=True, timeout=180, cwd=cwd, check=False)


def test_report_is_self_contained_and_renders_in_chromium(killed_run: dict, chromium: str, tmp_path: Path) -> None:
    run = killed_run["run"]
    html = (run / "report.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 2  # training curve and the search plot
    # a copy elsewhere, with no run folder beside it, shows the same
    page = tmp_path / "report.html"
    page.write_text(html)
    dom = headless(chromium, "--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    summary = json.loads((run / "search" / "summary.json").read_text())
    for text in (run.name, "Summary", "Supernet training", "Search", summary["best"]["arch_id"], "finished",
                 "Exported model", "verified", "Environment", "latency@local-cpu"):
        assert text in dom.stdout, text
    shot = tmp_path / "shot.png"
    proc = headless(chromium, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri(), cwd=tmp_path)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert image.size == (1000, 1400)
    assert colours is None or len(colours) > 50  # text and plots, not a blank page
    white = sum(n for n, c in (colours or []) if c == (255, 255, 255))
    assert white < 0.97 * image.size[0] * image.size[1]


@pytest.mark.slow
def test_the_quickstart_finishes_within_ten_minutes_with_a_report(tmp_path: Path, chromium: str) -> None:
    """`make run`: experiments/quickstart.yaml as shipped, from an empty results folder."""
    cwd = frozen_checkout(tmp_path)
    shutil.copytree(REPO / "experiments", cwd / "experiments")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "run", "experiments/quickstart.yaml"], cwd=cwd,
                          env={**os.environ}, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds <= 600, f"the quickstart took {seconds:.0f} s"
    assert "%|" in proc.stderr  # progress bars
    run = only_run(cwd)
    state = json.loads((run / "run.json").read_text())
    assert [state["steps"][s]["status"] for s in ("profile", "train", "search", "export")] == ["finished"] * 4
    summary = json.loads((run / "search" / "summary.json").read_text())
    assert summary["best"]["metrics"]["accuracy"] >= 0.9  # the digits, learned
    card = json.loads((run / "export" / "model" / "card.json").read_text())
    assert card["onnx"]["max_abs_diff"] <= card["onnx"]["tolerance"]
    # every budget of the run on the card, met or not, the stand-in device's energy included
    assert [b["budget"] for b in card["budgets"]] == summary["problem"]["constraints"]
    assert "energy@pi4-ort" in [b["metric"] for b in card["budgets"]]
    assert all(b["met"] in (True, False) for b in card["budgets"])
    dom = headless(chromium, "--dump-dom", (run / "report.html").as_uri(), cwd=tmp_path)
    assert run.name in dom.stdout and summary["best"]["arch_id"] in dom.stdout
