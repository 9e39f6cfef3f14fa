"""The measurement protocol: warm-up, interleaved rounds, passes, robust summaries.

Runs are interleaved in rounds (every model runs a few times per round, all models
each round) so that slow drift of the machine (frequency, other load) hits every
model alike instead of biasing whichever was measured last. Interleaving only covers
models measured together in one chunk; a `Yardstick` (one fixed model timed with
every chunk) carries that to chunks measured minutes or days apart.

One session of a model is not the model: where its buffers land in memory makes the
same network run a few percent faster or slower for as long as that session lives,
and a chunk's company and moment add their own offset. `measure_models` therefore
times every model in several passes, each with a freshly built session, in a
shuffled chunk, beside a freshly built reference, and pools the rescaled samples.
Each model's samples are summarised by the median with p10/p90; samples further than
5 scaled MADs from the median are rejected as outliers (interrupts, page faults) and
counted.

Which of those a measurement *is* is the protocol's `statistic`, p10 by default. A
neighbour on a shared machine only ever adds time, in bursts, so the low tail of a
model's samples moves less between passes than their middle: on 200 int8 networks timed
in repeated passes beside other work, the p10 cut the pass-to-pass noise against the
median by about 40 % on tiny_mbconv and 30 % on ofa_mbv3 (docs/benchmarks.md, issue 15). A LUT,
its calibration and every measurement compared with it use one statistic; a protocol
recorded before the field existed was the median (`Protocol.recorded`).

This module needs only numpy (tqdm when present): the profiling kit ships it as is, so
remote devices measure with exactly this protocol.
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

try:
    from tqdm import tqdm
except ImportError:  # on a remote device with only onnxruntime and numpy
    tqdm = None


STATISTICS = ("median", "p10")


def _check_statistic(statistic: str) -> str:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    return statistic


@dataclass(frozen=True)
class Protocol:
    warmup: int = 10
    repeats: int = 60  # per pass
    rounds: int = 6
    passes: int = 3
    statistic: str = "p10"  # which Summary field a measurement is: one of STATISTICS

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.rounds < 1 or self.passes < 1:
            raise ValueError("warmup >= 0, repeats >= 1, rounds >= 1 and passes >= 1")
        _check_statistic(self.statistic)

    @classmethod
    def recorded(cls, recorded: dict | None) -> "Protocol":
        """The protocol a LUT, table or kit recorded; one recorded before protocols named
        their statistic measured the median."""
        return cls(**{"statistic": "median", **(recorded or {})})

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The protocol as command-line options, shared by hwnas and the kit's runner."""
        d = Protocol()
        parser.add_argument("--warmup", type=_count(0), default=d.warmup, help=f"warm-up runs per model and pass (default {d.warmup})")
        parser.add_argument("--repeats", type=_count(1), default=d.repeats, help=f"timed runs per model and pass (default {d.repeats})")
        parser.add_argument("--rounds", type=_count(1), default=d.rounds, help=f"interleaved rounds per pass (default {d.rounds})")
        parser.add_argument("--passes", type=_count(1), default=d.passes,
                            help=f"passes, each with fresh sessions in a shuffled chunk (default {d.passes})")
        parser.add_argument("--statistic", choices=STATISTICS, default=d.statistic,
                            help=f"which summary of a model's samples is its time (default {d.statistic}: "
                                 "the low tail, least moved by a busy neighbour)")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> "Protocol":
        return cls(args.warmup, args.repeats, args.rounds, args.passes, args.statistic)


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value
    return parse


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

    def at(self, statistic: str) -> float:
        """The value of one of STATISTICS."""
        return getattr(self, _check_statistic(statistic))

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples: Sequence[float]) -> Summary:
    x = np.asarray(samples, dtype=np.float64)
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median))) * 1.4826
    keep = x[np.abs(x - median) <= 5 * mad] if mad > 0 else x
    return Summary(
        median=float(np.median(keep)), p10=float(np.percentile(keep, 10)), p90=float(np.percentile(keep, 90)),
        mean=float(keep.mean()), std=float(keep.std()), n=int(keep.size), rejected=int(x.size - keep.size),
    )


def sample(runners: Sequence[Callable[[], object]], protocol: Protocol = Protocol()) -> list[np.ndarray]:
    """Raw timings (ms) of each runner (one inference per call), interleaved in rounds."""
    for run in runners:
        for _ in range(protocol.warmup):
            run()
    per_round = math.ceil(protocol.repeats / protocol.rounds)
    samples: list[list[float]] = [[] for _ in runners]
    clock = time.perf_counter_ns
    for _ in range(protocol.rounds):
        for i, run in enumerate(runners):
            times = samples[i]
            for _ in range(per_round):
                start = clock()
                run()
                times.append((clock() - start) / 1e6)
    return [np.asarray(s) for s in samples]


def ort_session(ort, model: bytes | str, provider: str, threads: int):
    """An onnxruntime session as every measurement runs one: pinned intra-op threads,
    sequential execution, full graph optimisation. `ort` is the onnxruntime module,
    passed in so that this module still imports with numpy alone."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=[provider])


class Yardstick:
    """A fixed reference model timed inside every chunk, to put chunks on one scale.

    On a shared or thermally throttling machine the speed drifts by 10 % or more over
    minutes, while models measured together in one chunk agree to a few percent. The
    reference ties every chunk, and every run, to one baseline time: a LUT's blocks,
    its calibration set and later validation measurements all read as if taken at the
    moment the baseline was set. The reference is built afresh for every chunk
    (`make_reference`), so no single session's luck in memory placement tilts a whole
    run. The factors applied to each chunk are kept for reporting.
    """

    def __init__(self, make_reference: Callable[[], Callable[[], object]], baseline_ms: float | None = None) -> None:
        self.make_reference = make_reference
        self.baseline_ms = baseline_ms
        self.factors: list[float] = []


def measure_models(make_runners: Sequence[Callable[[], Callable[[], object]]], protocol: Protocol = Protocol(),
                   yardstick: Yardstick | None = None, chunk: int = 16, seed: int = 0,
                   desc: str | None = None) -> list[Summary]:
    """Time models given as runner factories: protocol.passes passes, each in shuffled chunks.

    Every pass builds each model's session afresh and puts it among different company,
    so per-session offsets average out over the passes, and each chunk's offset can be
    told from the models' own: it is what all members of the chunk (the reference
    too) share. `chunk_factors` estimates it; each model's samples, rescaled by their
    chunk's factor, are pooled over the passes into one Summary.
    """
    n = len(make_runners)
    if n == 0:
        return []
    runs: list[tuple[int, int, np.ndarray]] = []  # (model, chunk, samples); model n is the reference
    order_rng = np.random.default_rng(seed)
    bar = tqdm(total=protocol.passes * n, desc=desc, unit="model", disable=desc is None) if tqdm else None
    chunks = 0
    for _ in range(protocol.passes):
        order = order_rng.permutation(n)
        for start in range(0, n, chunk):
            members = [int(i) for i in order[start:start + chunk]]
            runners = [make_runners[i]() for i in members]
            if yardstick:
                members.append(n)
                runners.append(yardstick.make_reference())
            runs += [(m, chunks, s) for m, s in zip(members, sample(runners, protocol))]
            chunks += 1
            if bar:
                bar.update(len(runners) - bool(yardstick))
    if bar:
        bar.close()
    factors = chunk_factors([(m, c, summarize(s).at(protocol.statistic)) for m, c, s in runs], yardstick)
    pooled: list[list[np.ndarray]] = [[] for _ in range(n)]
    for m, c, s in runs:
        if m < n:
            pooled[m].append(s * factors[c])
    return [summarize(np.concatenate(p)) for p in pooled]


def chunk_factors(times: Sequence[tuple[int, int, float]], yardstick: Yardstick | None = None) -> np.ndarray:
    """Per chunk, the factor that puts its timings on the common scale.

    Fits log(time of model m in chunk c) = level(m) + offset(c) by least squares over
    all (model, chunk, time) triples: a chunk's offset is what its members share,
    estimated from all of them rather than from the reference alone. With a yardstick
    (its reference is the highest model index, in every chunk) the scale is its
    baseline: a factor maps the reference's fitted time in the chunk onto it, and a
    missing baseline is set to the reference's fitted level. Without one, offsets are
    only comparable between chunks that share models, so they are centred within each
    such group: chunks that share none (a single pass) keep factor 1.
    """
    models, chunk_ids, values = (np.array(v) for v in zip(*times))
    levels, offsets = _fit_levels_and_offsets(models, chunk_ids, np.log(values))
    n_chunks = len(offsets)
    if yardstick is None:
        group = _linked_chunks(models, chunk_ids, n_chunks)
        centre = np.bincount(group, offsets) / np.bincount(group)
        return np.exp(-(offsets - centre[group]))
    reference_in_chunk = levels[-1] + offsets  # invariant under the fit's free shift between levels and offsets
    if yardstick.baseline_ms is None:
        yardstick.baseline_ms = float(np.exp(np.mean(reference_in_chunk)))
    factors = yardstick.baseline_ms / np.exp(reference_in_chunk)
    yardstick.factors += [float(f) for f in factors]
    return factors


def _fit_levels_and_offsets(models: np.ndarray, chunk_ids: np.ndarray, y: np.ndarray,
                            tol: float = 1e-10, max_iter: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of y = level[model] + offset[chunk] by alternating exact updates.

    Each half-step is the exact least-squares answer given the other half, so the
    squared error falls monotonically to its minimum; it costs O(observations) per
    step and needs only numpy (kits ship this module), where a dense solve would grow
    with the square of the number of models.
    """
    per_model, per_chunk = np.bincount(models), np.bincount(chunk_ids)
    offsets = np.zeros(len(per_chunk))
    for _ in range(max_iter):
        levels = np.bincount(models, y - offsets[chunk_ids], len(per_model)) / per_model
        updated = np.bincount(chunk_ids, y - levels[models], len(per_chunk)) / per_chunk
        done = np.max(np.abs(updated - offsets)) < tol
        offsets = updated
        if done:
            break
    return levels, offsets


def _linked_chunks(models: np.ndarray, chunk_ids: np.ndarray, n_chunks: int) -> np.ndarray:
    """For every chunk, a label shared by all chunks linked to it through common models."""
    parent = list(range(n_chunks))

    def root(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    first_chunk: dict[int, int] = {}
    for m, c in zip(models.tolist(), chunk_ids.tolist()):
        parent[root(c)] = root(first_chunk.setdefault(m, c))
    return np.array([root(c) for c in range(n_chunks)])
