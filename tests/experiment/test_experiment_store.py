"""The step cache (content hashes, hard-linked copies) and run folders (unique ids, resume choice)."""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.experiment.cache import StepCache, step_key
from nas.experiment.rundir import Run, all_runs, find_run


def key(**changes) -> str:
    args = {"step": "train", "inputs": {"epochs": 1}, "upstream": {"profile": "abc"}, "code": ("nas/space",),
            "libraries": ("numpy",), "files": ()}
    args.update(changes)
    return step_key(args.pop("step"), **args)[0]


def test_a_key_changes_with_every_input_and_only_with_them(tmp_path: Path) -> None:
    data = tmp_path / "table.csv"
    data.write_text("a,b\n1,2\n")
    base = key(files=(str(data),))
    assert key(files=(str(data),)) == base
    assert key(inputs={"epochs": 2}, files=(str(data),)) != base
    assert key(upstream={"profile": "abd"}, files=(str(data),)) != base
    assert key(code=("nas/space", "nas/search"), files=(str(data),)) != base
    assert key(libraries=("numpy", "torch"), files=(str(data),)) != base
    assert key(step="search", files=(str(data),)) != base
    data.write_text("a,b\n1,3\n")
    assert key(files=(str(data),)) != base
    record = step_key("train", {"epochs": 1}, {}, ("nas/space",), ("numpy",))[1]
    assert record["libraries"]["numpy"] and record["code"] and record["inputs"] == {"epochs": 1}


def test_cache_publishes_once_and_restores_hard_links(tmp_path: Path) -> None:
    folder = tmp_path / "run1" / "train"
    (folder / "sub").mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"weights")
    (folder / "sub" / "history.json").write_text("[]")
    (folder / "step.json").write_text("{}")
    (folder / ".checkpoint.pt.123.tmp").write_text("half-written")
    cache = StepCache(tmp_path / "cache")
    assert cache.lookup("train", "k1") is None
    cache.publish("train", "k1", folder)
    entry = cache.lookup("train", "k1")
    assert entry is not None and not (entry / ".checkpoint.pt.123.tmp").exists()
    assert (entry / "checkpoint.pt").stat().st_ino == (folder / "checkpoint.pt").stat().st_ino
    (folder / "checkpoint.pt").unlink()
    (folder / "checkpoint.pt").write_bytes(b"other")
    cache.publish("train", "k1", folder)  # the first copy of a key stays
    assert (entry / "checkpoint.pt").read_bytes() == b"weights"
    target = tmp_path / "run2" / "train"
    target.mkdir(parents=True)
    (target / "partial").write_text("stale")
    cache.restore("train", "k1", target)
    assert sorted(p.name for p in target.rglob("*")) == ["checkpoint.pt", "history.json", "step.json", "sub"]
    assert (target / "checkpoint.pt").read_bytes() == b"weights"


def make_run(root: Path, name: str = "exp", digest: str = "d1") -> Run:
    return Run.create(root, name, digest, "name: exp\n", {"name": name}, root / "exp.yaml")


def test_run_ids_are_unique_and_a_run_records_its_config_and_environment(tmp_path: Path) -> None:
    runs = [make_run(tmp_path) for _ in range(5)]
    assert len({r.id for r in runs}) == 5 and all(r.id.startswith("exp-") for r in runs)
    run = runs[0]
    assert (run.path / "config.yaml").read_text() == "name: exp\n"
    env = json.loads((run.path / "environment.json").read_text())
    assert {"python", "cpu", "cores", "gpu", "libraries", "hwnas_commit", "parallelism"} <= set(env)
    parallel = env["parallelism"]  # what a training time depends on
    assert {"threads", "chosen_by", "cpus", "free_cores", "wait_policy", "workers", "adaptive", "load_average"} <= set(parallel)
    assert parallel["threads"] >= 1 and parallel["workers"] == 1 and parallel["cpus"]
    assert run.read()["status"] == "new" and [r.id for r in all_runs(tmp_path)] == sorted(r.id for r in runs)


def _hold_lock(path: str, ready, release) -> None:
    with Run(Path(path)).lock():
        ready.set()
        release.wait(30)


def test_resume_picks_the_latest_unfinished_run_of_the_same_config_not_being_run(tmp_path: Path) -> None:
    assert Run.resumable(tmp_path, "exp", "d1") is None
    old, new = make_run(tmp_path), make_run(tmp_path)
    make_run(tmp_path, digest="d2")
    make_run(tmp_path, name="other")
    latest = Run.resumable(tmp_path, "exp", "d1")
    assert latest is not None and latest.id in (old.id, new.id)
    latest.update(status="finished")
    earlier = Run.resumable(tmp_path, "exp", "d1")
    assert earlier is not None and earlier.id in (old.id, new.id) and earlier.id != latest.id
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(earlier.path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        assert earlier.locked() and Run.resumable(tmp_path, "exp", "d1") is None
        with pytest.raises(NasError, match="being run by another process"), earlier.lock():
            pass
    finally:
        release.set()
        holder.join(30)
    assert not earlier.locked() and Run.resumable(tmp_path, "exp", "d1").id == earlier.id
    (tmp_path / "exp-damaged").mkdir()
    (tmp_path / "exp-damaged" / "run.json").write_text("{")
    assert Run.resumable(tmp_path, "exp", "d1").id == earlier.id


def test_find_run_by_id_prefix_or_folder_with_clear_errors(tmp_path: Path) -> None:
    a = make_run(tmp_path, name="alpha")
    b = make_run(tmp_path, name="beta")
    assert find_run(tmp_path, a.id).id == a.id
    assert find_run(tmp_path, "bet").id == b.id
    assert find_run(tmp_path, str(b.path)).id == b.id
    make_run(tmp_path, name="beta")
    with pytest.raises(NasError, match="ambiguous"):
        find_run(tmp_path, "beta")
    with pytest.raises(NasError, match=f"did you mean '{a.id}'"):
        find_run(tmp_path, a.id[:-1] + "z")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{")
    with pytest.raises(NasError, match="not valid JSON"):
        Run(tmp_path / "broken").read()
    assert os.path.isdir(tmp_path / a.id)


def test_runs_list_shows_a_damaged_run_without_hiding_the_others(tmp_path: Path) -> None:
    from nas.experiment.runs import format_table, list_table

    good = make_run(tmp_path, name="good")
    bad = make_run(tmp_path, name="bad")
    bad.file.write_text('{"schema": "something else"}')
    header, rows = list_table(all_runs(tmp_path))
    by_id = {r[0]: r for r in rows}
    assert by_id[good.id][1] == "new" and by_id[bad.id][1] == "unreadable"
    lines = format_table(header, rows)
    assert lines[0].split()[:2] == ["run", "status"] and len(lines) == 4


def finished_run(root: Path, name: str, metrics: dict, queries: int, val_acc: float) -> Run:
    """A run folder as the runner leaves it after its train and search steps."""
    experiment = {"name": name, "space": "tiny_mbconv", "dataset": {"source": "digits"},
                  "accuracy": {"supernet": {"split": "val"}}, "budgets": ["latency@local-cpu <= 0.5 ms"],
                  "objectives": ["max accuracy"], "search": {"controller": {"name": "random"}}}
    run = Run.create(root, name, "d", f"name: {name}\n", experiment, root / f"{name}.yaml")
    summary = {"queries": queries, "feasible": queries - 1, "best": {"arch_id": f"{name}-best", "metrics": metrics}}
    (run.path / "search").mkdir()
    (run.path / "search" / "step.json").write_text(json.dumps({"result": {"summary": summary}}))
    (run.path / "train").mkdir()
    (run.path / "train" / "step.json").write_text(json.dumps({"result": {"last": {"val_acc": val_acc}}}))
    for step, seconds in (("train", 12.5), ("search", 3.0)):
        run.update_step(step, status="finished", seconds=seconds)
    run.update(status="finished")
    return run


def test_runs_compare_saves_a_table_one_row_per_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from nas.cli import main

    a = finished_run(tmp_path / "runs", "alpha", {"accuracy": 0.91, "latency@local-cpu": 0.42}, 40, 0.875)
    b = finished_run(tmp_path / "runs", "beta", {"accuracy": 0.88}, 12, 0.5)
    out = tmp_path / "tables" / "compare.csv"
    assert main(["runs", "compare", a.id, "beta", "--runs", str(tmp_path / "runs"), "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert a.id in printed and b.id in printed and "0.91" in printed  # the text table is still shown
    table = pd.read_csv(out, index_col="run")
    assert table.index.tolist() == [a.id, b.id]
    assert table.loc[a.id, "accuracy"] == 0.91 and table.loc[b.id, "accuracy"] == 0.88
    assert table.loc[a.id, "latency@local-cpu"] == 0.42 and pd.isna(table.loc[b.id, "latency@local-cpu"])
    assert table["queries"].tolist() == [40, 12] and table["seconds"].tolist() == [15.5, 15.5]
    assert table.loc[b.id, "train val_acc"] == 0.5 and table.loc[a.id, "best arch"] == "alpha-best"
    assert (table["status"] == "finished").all() and (table["controller"] == "random").all()
    assert not list(out.parent.glob(".*.tmp"))  # written through a temporary file
    from nas.experiment.runs import compare_dataframe

    pd.testing.assert_frame_equal(compare_dataframe([a, b]), table, check_dtype=False)
