"""The parallelism policy (nas/threads.py): its decisions on given inputs, and that the
wait policy reaches torch's OpenMP runtime in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nas.threads import SPIN_COUNT, Parallelism, choose_workers, free_cores, usable_cores

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter importing this checkout's nas (OpenMP's settings are
    per process and fixed when it loads, so they can only be checked in a new one)."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS",
                                                             "OMP_DISPLAY_ENV", *drop)}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.parametrize("cores, free, quota, expected", [
    (2, 1.97, None, 2),   # a quiet 2-core machine: both cores
    (2, 1.02, None, 1),   # one busy neighbour: the free core only
    (2, 0.10, None, 1),   # everything busy: still one thread
    (2, 1.49, None, 1),   # a core half held by a neighbour is not worth a thread
    (8, 5.60, None, 6),
    (8, 7.90, 2.5, 2),    # a container's CPU quota caps the pool
    (8, 7.90, 0.5, 1),
    (1, 0.00, None, 1),
])
def test_threads_follow_the_free_cores_within_the_affinity_mask_and_quota(cores: int, free: float,
                                                                         quota: float | None, expected: int) -> None:
    assert usable_cores(cores, free, quota) == expected


def test_the_wait_policy_is_passive_in_torchs_openmp_when_nas_is_imported_first() -> None:
    # OMP_DISPLAY_ENV makes libgomp print the settings it read when it loaded
    out = run_python("import nas, torch; torch.ones(8).sum()", {"OMP_DISPLAY_ENV": "VERBOSE"})
    assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" in out.stderr  # waiting threads soon sleep instead of spinning
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in out.stderr
    plain = subprocess.run([sys.executable, "-c", "import torch; torch.ones(8).sum()"], capture_output=True, text=True,
                           env={**{k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))},
                                "OMP_DISPLAY_ENV": "VERBOSE"}, timeout=120, check=True)
    assert "GOMP_SPINCOUNT = '0'" not in plain.stderr and "GOMP_SPINCOUNT" in plain.stderr


def test_a_users_wait_policy_wins_and_torch_imported_first_is_reported() -> None:
    out = run_python("""
        import os, nas.threads as t
        print(os.environ['OMP_WAIT_POLICY'], t.prepare_environment())""", {"OMP_WAIT_POLICY": "active"})
    assert out.stdout.split() == ["active", "ACTIVE"]
    out = run_python("""
        import torch, os
        import nas.threads as t
        print(repr(os.environ.get('OMP_WAIT_POLICY')), t.prepare_environment())""")
    assert out.stdout.startswith("None unknown: OpenMP was loaded before hwnas")


def test_the_default_sizes_torchs_pool_from_the_free_cores_and_keeps_adapting() -> None:
    out = run_python("""
        import json, os, nas.threads as t, torch
        p = t.configure(None)
        print(json.dumps({**p.record(), "torch": torch.get_num_threads(), "env": os.environ.get("OMP_NUM_THREADS")}))""")
    rec = json.loads(out.stdout)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    assert rec["chosen_by"] == "free cores" and rec["adaptive"] and rec["cpus"] == cpus
    assert 1 <= rec["threads"] == rec["torch"] <= len(cpus) and 0 <= rec["free_cores"] <= len(cpus) + 0.5
    assert rec["wait_policy"] == f"PASSIVE, spin {SPIN_COUNT}" and rec["workers"] == 1 and len(rec["load_average"]) == 3
    assert rec["env"] is None  # children size their own pools


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
def test_an_affinity_mask_of_one_cpu_gives_one_thread() -> None:
    out = run_python("""
        import json, os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import nas.threads as t, torch
        p = t.configure(None)
        print(json.dumps([p.threads, p.cpus, torch.get_num_threads()]))""")
    threads, cpus, torch_threads = json.loads(out.stdout)
    assert threads == torch_threads == 1 and cpus == [min(os.sched_getaffinity(0))]


def test_an_explicit_count_overrides_is_exported_and_never_resized() -> None:
    out = run_python("""
        import json, os, nas.threads as t, torch
        t.RETUNE_EVERY_S = 0
        p = t.configure(3)
        t.retune()
        print(json.dumps([p.record(), torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]]))""")
    rec, torch_threads, env = json.loads(out.stdout)
    assert rec["threads"] == torch_threads == 3 and env == "3"
    assert rec["chosen_by"] == "--threads/threads:" and not rec["adaptive"] and rec["free_cores"] is None
    out = run_python("""
        import json, nas.threads as t, torch
        p = t.configure(None)
        print(json.dumps([p.threads, p.chosen_by, torch.get_num_threads()]))""", {"OMP_NUM_THREADS": "1"})
    assert json.loads(out.stdout) == [1, "OMP_NUM_THREADS", 1]  # what torchrun sets for each worker


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
def test_a_busy_neighbour_on_our_cpu_leaves_no_free_core() -> None:
    cpu = min(os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        time.sleep(0.3)
        assert free_cores([cpu], window=0.3) < 0.5
    finally:
        busy.kill()
        busy.wait()


def test_the_summary_line_names_every_setting() -> None:
    p = Parallelism(2, "free cores", [0, 1], 1.93, "PASSIVE", 1, True, [0.41, 0.5, 0.6])
    assert p.summary() == "2 threads (free cores 1.93 of cpus 0-1, adaptive), wait PASSIVE, load 0.41"
    p = Parallelism(1, "--threads/threads:", [0, 2], None, "PASSIVE", 2, False, [])
    assert p.summary() == "2 workers x 1 thread (--threads/threads:; cpus 0,2), wait PASSIVE"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs sched_setaffinity and two CPUs")
def test_an_adaptive_pool_shrinks_when_neighbours_take_its_cores() -> None:
    out = run_python("""
        import json, os, subprocess, sys, time
        cpus = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, set(cpus))
        import nas.threads as t, torch
        t.RETUNE_EVERY_S = 0
        p = t.configure(None)
        torch.set_num_threads(2); p.threads = 2   # as on a quiet machine
        busy = [subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{c}}})\\nwhile True: pass"])
                for c in cpus]
        try:
            time.sleep(0.5)
            changed = t.retune()                   # the window since configure(): both cores busy
        finally:
            for b in busy: b.kill()
        print(json.dumps([changed, p.threads, torch.get_num_threads()]))""")
    assert json.loads(out.stdout) == [1, 1, 1]
