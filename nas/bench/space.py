"""Throughput of the space machinery: sampling + encoding and the vectorised counters.

Counters are timed over one batch of N random archs after their tables are built; the
one-off table build is reported separately because a search pays it once per space.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas.space import load_space

COUNTERS = ("params", "macs", "peak_activation_bytes")


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pin_one_core() -> str:
    """Run on one core (the first this process may use) so figures are per core."""
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"core {core}"
    return "unpinned (no sched_setaffinity on this OS)"


def bench_space(name: str, n: int, seed: int, repeats: int) -> dict[str, Any]:
    space = load_space(name)
    rng = np.random.default_rng(seed)
    row: dict[str, Any] = {"space": space.name, "decisions": len(space.decisions), "n": n}
    t = median_seconds(lambda: space.sample_codes(rng, n), repeats)
    row["sample_encoded_per_s"] = n / t
    m = min(n, 2000)  # the per-object path is for single archs; time a smaller batch
    t = median_seconds(lambda: space.encode_batch([space.sample(rng) for _ in range(m)]), 1)
    row["sample_arch_objects_per_s"] = m / t
    codes = space.sample_codes(rng, n)
    for metric in COUNTERS:
        start = time.perf_counter()
        table = space.table(metric)
        row[f"{metric}_table_build_s"] = time.perf_counter() - start
        row[f"{metric}_per_s"] = n / median_seconds(lambda: table(codes), repeats)
    return row


def bench_spaces(names: Sequence[str], n: int, seed: int, repeats: int, one_core: bool = True) -> list[dict[str, Any]]:
    pinned = pin_one_core() if one_core else "all cores"
    rows = [bench_space(name, n, seed, repeats) for name in names]
    for row in rows:
        row["cpu"] = pinned
        row["machine"] = platform.processor() or platform.machine()
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'space':<14} {'sample+encode/s':>16} {'Arch objects/s':>15} " + " ".join(f"{m + '/s':>26}" for m in COUNTERS)
    lines = [head]
    for r in rows:
        counters = " ".join(f"{r[m + '_per_s']:>26,.0f}" for m in COUNTERS)
        lines.append(f"{r['space']:<14} {r['sample_encoded_per_s']:>16,.0f} {r['sample_arch_objects_per_s']:>15,.0f} {counters}")
    builds = ", ".join(f"{r['space']} {sum(r[m + '_table_build_s'] for m in COUNTERS):.2f}s" for r in rows)
    lines.append(f"(n = {rows[0]['n']:,} archs per batch, {rows[0]['cpu']}; one-off table builds: {builds})" if rows else "")
    return "\n".join(lines)
