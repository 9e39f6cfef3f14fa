"""Parallelism: how many processes and threads hwnas's CPU work runs, and how threads wait.

The one home of every parallelism decision (data-parallel training workers, torch's
intra-op pool, the BLAS pools of numpy and scipy, the OpenMP wait policy), for the CLI
and library code alike.

Why this is not torch's default. torch runs one OpenMP thread per core and splits every
operator evenly between them, so each operator ends at a barrier that waits for the
slowest thread. On a machine shared with other work (a cluster node, a CI runner, a
workstation) one thread shares its core with a neighbour and every barrier waits for
it; libgomp's waiting threads meanwhile spin (~300,000 iterations at each barrier),
burning the very core the late thread needs. On the 2-core VM a sandwich step of
tiny_mbconv took 13 s instead of 1.7 s on one thread with a single busy process beside
it (issue 16). Four levers, each measured in docs/benchmarks.md:

1. **Wait policy.** `OMP_WAIT_POLICY=PASSIVE` with a short spin (`GOMP_SPINCOUNT`
   `SPIN_COUNT`, ~0.3 ms instead of libgomp's ~3 ms): a waiting thread soon sleeps
   instead of spinning. libgomp reads both once, when it is loaded (at `import torch`), so
   `prepare_environment()` runs from `nas/__init__.py`, before any hwnas module imports
   torch; a value the user exported wins. When torch was imported before `nas`, the
   policy cannot change any more, and `Parallelism.wait_policy` says so.
2. **Usable cores.** `configure(None)` counts the cores of this process's affinity mask
   (and cgroup CPU quota) that were idle over a short window of /proc/stat and keeps one
   per core at least half free (`usable_cores`): 2 on a quiet 2-core machine, 1 beside
   a busy process.
3. **Data-parallel workers for training** (`plan_workers`). Training on CPU splits each
   step's global batch into a fixed number of micro-batches (the training config's
   `micro_batches`); with several usable cores it starts one single-threaded worker
   process per core (at most one per micro-batch: the largest divisor of
   `micro_batches` that fits; where usable cores outnumber the workers, each worker gets
   its share as threads), which synchronise once per step (a gradient all-reduce)
   instead of at every operator's barrier. One usable core costs nothing extra: the run
   stays in this process. Because the micro-batches are fixed, the result does not depend
   on how many workers ran them (up to float rounding): 1 worker accumulates what 2 split.
4. **A governor.** Neighbours come and go during a long run, so `retune()` (called by
   the training loops between steps, fine-tuning and supernet queries) re-measures every
   few seconds (the idle time of our CPUs plus what this process used itself) and resizes
   an in-process pool. Known limit: a worker's single thread has nothing to resize, and
   the number of workers is fixed when training starts; a neighbour that appears
   mid-run on a worker's core should make that worker, and so every step, about twice as
   slow (each step waits for the slowest worker): roughly one thread's pace, not a
   collapse, but not measured. Re-planning the workers at a checkpoint (the result would
   not change) is the step after this one.

An explicit count (`--threads`, an experiment's `threads:`, `OMP_NUM_THREADS`, or
`configure(n)`) is used as is, never resized, and keeps training in one process unless
workers are asked for too (`--workers`, `workers:`). Small linear algebra (the search's
Gaussian process, predictor fitting) and the measurement protocols (LUT validation,
memory checks: one pinned onnxruntime thread, as the LUT was timed) run single-threaded
whatever the policy: see `single_threaded()`.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

WAIT_POLICY = "PASSIVE"
# A short spin before sleeping (libgomp: ~100 spins per microsecond, so ~0.3 ms; its default
# is 300,000, PASSIVE alone is 0). Sleeping at once cost most of the second thread's gain on
# a quiet 2-core machine (a sandwich step 1.05x faster than one thread, against 1.5-1.8x with
# 10,000-300,000 spins: docs/benchmarks.md); a bounded spin keeps that gain and still yields
# the core within a fraction of a millisecond when a neighbour needs it.
SPIN_COUNT = 30_000
WINDOW_S = 0.2           # the idle sample behind a first choice
RETUNE_EVERY_S = 5.0     # how often retune() re-measures during a long loop
_OPENMP_LIBS = ("libgomp", "libiomp", "libomp")


# ---------------------------------------------------------------------- wait policy
def openmp_loaded() -> bool:
    """Whether an OpenMP runtime is already mapped into this process (then its wait
    policy is fixed). Without /proc: assume so when torch was imported."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return any(lib in line for line in fh for lib in _OPENMP_LIBS)
    except OSError:
        return "torch" in sys.modules


_WAIT: dict[str, str] = {}


def prepare_environment() -> str:
    """Set OMP_WAIT_POLICY=PASSIVE and a short GOMP_SPINCOUNT for the OpenMP runtime torch will
    load, unless the user chose a policy (or a spin count); returns the policy in effect ("unknown: ..." when OpenMP was loaded
    before hwnas could set it). Called on `import nas`; cheap (no torch import)."""
    if not _WAIT:
        user = os.environ.get("OMP_WAIT_POLICY")
        if user:
            _WAIT["policy"] = user.upper()
        elif openmp_loaded():
            _WAIT["policy"] = "unknown: OpenMP was loaded before hwnas (set OMP_WAIT_POLICY=PASSIVE yourself)"
        else:
            os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
            spin = os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
            _WAIT["policy"] = f"{WAIT_POLICY}, spin {spin}"
    return _WAIT["policy"]


# ---------------------------------------------------------------------- cores
def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_quota() -> float | None:
    """The cgroup v2 CPU limit in cores (a container's `--cpus`), None when unlimited."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def cpu_times(cpus: Sequence[int]) -> tuple[float, float] | None:
    """(idle, total) jiffies summed over `cpus` from /proc/stat; None without /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    idle = total = 0.0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            values = [float(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
            idle += values[3] + values[4]
            total += sum(values)
    return (idle, total) if total else None


class IdleMeter:
    """Cores free for this process since the last reading: the idle share of its CPUs plus
    the CPU time it used itself (its own threads are not competition)."""

    def __init__(self, cpus: Sequence[int]) -> None:
        self.cpus = list(cpus)
        self._mark()

    def _mark(self) -> None:
        self.times, self.own, self.wall = cpu_times(self.cpus), time.process_time(), time.monotonic()

    def read(self) -> float | None:
        """Free cores since the last read (None without /proc/stat or when no time passed)."""
        before, own, wall = self.times, self.own, self.wall
        self._mark()
        if before is None or self.times is None or self.times[1] <= before[1] or self.wall <= wall:
            return None
        idle_share = (self.times[0] - before[0]) / (self.times[1] - before[1])
        return idle_share * len(self.cpus) + (self.own - own) / (self.wall - wall)


def free_cores(cpus: Sequence[int], window: float = WINDOW_S) -> float:
    """Cores of `cpus` free now: idle over `window` seconds of /proc/stat, else (no /proc)
    the cores minus the 1-minute load average."""
    meter = IdleMeter(cpus)
    time.sleep(window)
    free = meter.read()
    if free is not None:
        return free
    try:
        return max(0.0, len(cpus) - os.getloadavg()[0])
    except OSError:
        return float(len(cpus))


def usable_cores(cores: int, free: float, quota: float | None = None) -> int:
    """Cores worth a thread (or a worker): one per core at least half free, at least 1, at
    most the cores this process may use (and its CPU quota). A thread on a core that a
    neighbour holds makes every operator (or step) wait for it, so a half-free core is not
    used unless most of it is ours."""
    limit = cores if quota is None else max(1, min(cores, math.floor(quota)))
    return max(1, min(limit, math.floor(free + 0.5)))


def choose_workers(usable: int, micro_batches: int) -> int:
    """Data-parallel workers for `usable` cores: the largest divisor of `micro_batches` that
    is at most `usable` (every worker runs the same number of micro-batches)."""
    return max(w for w in range(1, max(1, min(usable, micro_batches)) + 1) if micro_batches % w == 0)


# ---------------------------------------------------------------------- the decision
@dataclass
class Parallelism:
    """What a process runs with; `record()` is what runs write down (environment.json)."""

    threads: int                     # torch threads of this process (of each worker, when workers > 1)
    chosen_by: str                   # "--threads/threads:", "OMP_NUM_THREADS", "free cores"
    cpus: list[int]
    free_cores: float | None
    wait_policy: str
    workers: int                     # data-parallel processes: local workers (plan_workers) or torchrun's WORLD_SIZE
    adaptive: bool                   # retune() may resize the pool
    load_average: list[float] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["free_cores"] = None if self.free_cores is None else round(self.free_cores, 2)
        return out

    def summary(self) -> str:
        """One line for logs: '2 threads (free cores 1.93 of cpus 0-1, adaptive), wait PASSIVE, spin 30000, load 0.41',
        '2 workers x 1 thread (free cores 1.93 of cpus 0-1), wait ...'."""
        why = f"{self.chosen_by}; " if self.free_cores is None else f"free cores {self.free_cores:.2f} of "
        if len(self.cpus) == 1:
            cpus = f"cpu {self.cpus[0]}"
        elif self.cpus == list(range(self.cpus[0], self.cpus[-1] + 1)):
            cpus = f"cpus {self.cpus[0]}-{self.cpus[-1]}"
        else:
            cpus = f"cpus {','.join(map(str, self.cpus))}"
        workers = f"{self.workers} workers x " if self.workers > 1 else ""
        load = f", load {self.load_average[0]:.2f}" if self.load_average else ""
        return (f"{workers}{self.threads} thread{'s' * (self.threads != 1)} ({why}{cpus}{', adaptive' * self.adaptive})"
                f", wait {self.wait_policy}{load}")


_CURRENT: Parallelism | None = None
_METER: IdleMeter | None = None
_NEXT_CHECK = 0.0


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _env_threads() -> int | None:
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def configure(threads: int | None = None) -> Parallelism:
    """Size torch's intra-op pool for this process and remember the decision.

    `threads` (`--threads`, `threads:`) is an explicit override, also exported as
    OMP_NUM_THREADS so worker processes started from here inherit it; an
    OMP_NUM_THREADS set by the user or a launcher (torchrun sets 1 per worker) is
    honoured as explicit too. Otherwise the pool is sized to the free cores and
    `retune()` may resize it later."""
    global _CURRENT, _METER, _NEXT_CHECK
    import torch

    cpus = allowed_cpus()
    env = _env_threads()
    load = _load_average()  # before our own work adds to it
    free: float | None = None
    if threads is not None:
        n, chosen_by = threads, "--threads/threads:"
        os.environ["OMP_NUM_THREADS"] = str(threads)
    elif env is not None:
        n, chosen_by = env, "OMP_NUM_THREADS"
    else:
        free = free_cores(cpus)
        n, chosen_by = usable_cores(len(cpus), free, cpu_quota()), "free cores"
    torch.set_num_threads(n)
    adaptive = chosen_by == "free cores"
    _METER, _NEXT_CHECK = (IdleMeter(cpus) if adaptive else None), time.monotonic() + RETUNE_EVERY_S
    _CURRENT = Parallelism(n, chosen_by, cpus, free, prepare_environment(), int(os.environ.get("WORLD_SIZE", "1")),
                           adaptive, load)
    return _CURRENT


def ensure_configured() -> Parallelism:
    """The process's decision, making the default one if nothing chose yet (library use:
    `nas.supernet.train(...)` without the CLI)."""
    return _CURRENT if _CURRENT is not None else configure(None)


def current() -> Parallelism | None:
    return _CURRENT


def plan_workers(requested: int | None, micro_batches: int) -> Parallelism:
    """The parallelism of a CPU training run: how many local data-parallel workers to start
    and how many threads each runs (`workers` 1: train in this process, as configured).

    `requested` (`--workers`, `workers:`; the config checks that it divides
    `micro_batches`) is used as is. Otherwise an adaptive (default) configuration counts
    the free cores again, now that training starts (an experiment's earlier steps may
    have taken minutes), and starts one worker per usable core, at most one per
    micro-batch; an explicit thread count keeps training in one process. Each worker runs
    the explicit thread count, else the usable cores it has to itself (1 on a 2-core
    machine). For a process outside any process group (inside torchrun's, or as one of
    these workers, the launcher has decided)."""
    base = ensure_configured()
    if requested is None and not base.adaptive:
        return base
    free, usable = base.free_cores, base.threads
    if base.adaptive:
        free = free_cores(base.cpus)
        usable = usable_cores(len(base.cpus), free, cpu_quota())
    workers = requested if requested is not None else choose_workers(usable, micro_batches)
    if workers == 1:
        return base  # nothing to split, no process to start: this process's pool, as configured
    threads = base.threads if not base.adaptive else max(1, usable // workers)
    return replace(base, threads=threads, workers=workers, free_cores=free, adaptive=False)


def retune() -> int | None:
    """Resize an adaptive pool to the cores free since the last check; cheap to call every
    step (it reads /proc/stat at most every RETUNE_EVERY_S). Returns the new thread
    count when it changed."""
    global _NEXT_CHECK
    if _CURRENT is None or _METER is None or time.monotonic() < _NEXT_CHECK:
        return None
    _NEXT_CHECK = time.monotonic() + RETUNE_EVERY_S
    free = _METER.read()
    if free is None:
        return None
    n = usable_cores(len(_CURRENT.cpus), free, cpu_quota())
    _CURRENT.free_cores = free
    if n == _CURRENT.threads:
        return None
    import torch

    torch.set_num_threads(n)
    _CURRENT.threads = n
    return n


# ---------------------------------------------------------------------- fixed single thread
@contextlib.contextmanager
def single_threaded(torch_too: bool = True) -> Iterator[None]:
    """One BLAS/OpenMP thread (and one torch thread) inside the block, restored after.

    For work whose matrices are small (a GP on a few hundred queries, a predictor on a
    few hundred rows: a thread pool costs more than it saves, and on a shared 2-core
    machine a multithreaded SVD of a 100 x 150 matrix took 300x longer) and for work
    whose result must not depend on the machine (a fixed thread count keeps
    floating-point sums, hence fitted models, identical from run to run)."""
    from threadpoolctl import threadpool_limits

    before = None
    if torch_too and "torch" in sys.modules:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        if before is not None:
            import torch

            torch.set_num_threads(before)


def one_thread(method: Callable) -> Callable:
    """Decorator form of `single_threaded()` (predictor fits)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with single_threaded():
            return method(*args, **kwargs)

    return wrapper
