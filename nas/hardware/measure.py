"""The measurement protocol: warm-up, interleaved rounds, robust summaries.

Runs are interleaved in rounds (every model runs a few times per round, all models
each round) so that slow drift of the machine (frequency, other load) hits every
model alike instead of biasing whichever was measured last. Interleaving only covers
models measured together; a `Yardstick` (one fixed model timed with every chunk)
carries that to chunks measured minutes or days apart. Each model's samples are
summarised by the median with p10/p90; samples further than 5 scaled MADs from the
median are rejected as outliers (interrupts, page faults) and counted.

This module needs only numpy (tqdm when present): the profiling kit ships it as is, so
remote devices measure with exactly this protocol.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

try:
    from tqdm import tqdm
except ImportError:  # on a remote device with only onnxruntime and numpy
    tqdm = None


@dataclass(frozen=True)
class Protocol:
    warmup: int = 10
    repeats: int = 60
    rounds: int = 6

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.rounds < 1:
            raise ValueError("warmup >= 0, repeats >= 1 and rounds >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """Robust summary of repeated measurements, in the samples' unit (ms for timings)."""

    median: float
    p10: float
    p90: float
    mean: float
    std: float
    n: int
    rejected: int

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative noise of this measurement."""
        return (self.p90 - self.p10) / self.median if self.median > 0 else math.inf

    def to_dict(self) -> dict:
        return asdict(self)

    def scaled(self, factor: float) -> "Summary":
        return Summary(self.median * factor, self.p10 * factor, self.p90 * factor, self.mean * factor,
                       self.std * factor, self.n, self.rejected)


def summarize(samples: Sequence[float]) -> Summary:
    x = np.asarray(samples, dtype=np.float64)
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median))) * 1.4826
    keep = x[np.abs(x - median) <= 5 * mad] if mad > 0 else x
    return Summary(
        median=float(np.median(keep)), p10=float(np.percentile(keep, 10)), p90=float(np.percentile(keep, 90)),
        mean=float(keep.mean()), std=float(keep.std()), n=int(keep.size), rejected=int(x.size - keep.size),
    )


def measure(runners: Sequence[Callable[[], object]], protocol: Protocol = Protocol(),
            desc: str | None = None) -> list[Summary]:
    """Time each runner (one inference per call) under the protocol, interleaved."""
    for run in runners:
        for _ in range(protocol.warmup):
            run()
    per_round = math.ceil(protocol.repeats / protocol.rounds)
    samples: list[list[float]] = [[] for _ in runners]
    clock = time.perf_counter_ns
    bar = tqdm(total=protocol.rounds * len(runners), desc=desc, unit="model", leave=False,
               disable=desc is None) if tqdm else None
    for _ in range(protocol.rounds):
        for i, run in enumerate(runners):
            times = samples[i]
            for _ in range(per_round):
                start = clock()
                run()
                times.append((clock() - start) / 1e6)
            if bar:
                bar.update()
    if bar:
        bar.close()
    return [summarize(s) for s in samples]


class Yardstick:
    """A fixed reference model timed inside every chunk, to put chunks on one scale.

    On a shared or thermally throttling machine the speed drifts by 10 % or more over
    minutes, while models measured together in one chunk agree to a few percent. Each
    chunk's timings are multiplied by baseline / (the reference's time in that chunk),
    so a LUT's blocks, its calibration set and later validation measurements all read
    as if taken at the moment the baseline was set. The factors are kept for reporting.
    """

    def __init__(self, run: Callable[[], object], baseline_ms: float | None = None) -> None:
        self.run = run
        self.baseline_ms = baseline_ms
        self.factors: list[float] = []

    def measure(self, runners: Sequence[Callable[[], object]], protocol: Protocol = Protocol(),
                desc: str | None = None) -> list[Summary]:
        """measure() with the reference interleaved; the first chunk sets a missing baseline."""
        *summaries, reference = measure([*runners, self.run], protocol, desc)
        if self.baseline_ms is None:
            self.baseline_ms = reference.median
        factor = self.baseline_ms / reference.median
        self.factors.append(factor)
        return [s.scaled(factor) for s in summaries]
