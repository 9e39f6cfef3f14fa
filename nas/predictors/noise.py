"""Measurement noise of a device column, and the ceiling it puts on any predictor.

The public tables hold one measurement per arch and device, but NB201 holds pairs of
archs that are one network to any device (`NB201Space.isomorphic_codes`: nodes 1 and
2 swapped when no edge joins them). Their two measured latencies are two repeats of
one network, so their log ratio d = e1 - e2 is pure measurement noise (the simulated
devices, which have none, give d = 0 on every pair). From those pairs:

  noise     the distribution of one measurement's log error e, by deconvolving d
            (a scale mixture of zero-mean normals, fitted by maximum likelihood on d,
            whose density is the mixture convolved with itself; on a whole-ms column
            each d is only known to an interval, from the rounding): phones and CPUs
            have heavy tails (most repeats agree within a few per cent, a few are off
            by tens of per cent), which one normal would misstate
  ceiling   what a perfect predictor, one that knows each arch's noise-free latency,
            would score against these noisy measurements: Spearman, Kendall and the
            share within +-10 % (+-1 ms on whole-ms columns, as nas.predictors.loo
            scores), by simulating measurements of the column's own latencies
            (shrunk to remove the noise variance) with the fitted noise, rounded
            again on whole-ms columns
  twins     a model-free bracket: one twin's measurement as the prediction of the
            other's, a predictor as good as a second measurement (its error carries
            two noises, so it sits below the ceiling)

Only twins without dead ops count (see `isomorphic_edges`): about 680 pairs per
NB201 column. A space without isomorphic archs (FBNet: 22 distinct positions) has no
pairs, so its columns get no estimate here. (Borrowing the same device's NB201
noise does not work: relative noise shrinks on FBNet's longer runs, and FBNet's
Pixel 3, Raspberry Pi and Xeon Silver 4114 columns are predicted far better than
such a ceiling would allow.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from nas.errors import NasError
from nas.predictors.loo import score, whole_ms
from nas.predictors.tables import ArchTable

SCALES = np.concatenate([[1e-6], np.geomspace(1e-3, 3.0, 35)])  # component sds (log latency); 1e-6: no noise
ITERATIONS = 400
NOISE_SCHEMA = "hwnas.noise/1"
NO_NOISE = 1e-5
REPEATS = 5  # simulated measurement sets per ceiling
# |p - y| <= 0.1 y  <=>  log(y / p) in [-log 1.1, -log 0.9]: a band of this half-width
# around a centre the best constant offset picks
BAND = 0.5 * np.log(1.1 / 0.9)
SHIFTS = np.linspace(-0.1, 0.1, 41)  # constant log offsets tried for the best within-share


@dataclass(frozen=True)
class NoiseModel:
    """One measurement's log error: a mixture of N(0, scale^2) with these weights."""

    scales: np.ndarray
    weights: np.ndarray

    @property
    def sd(self) -> float:
        return float(np.sqrt(np.sum(self.weights * self.scales ** 2)))

    def share_within(self, tolerance: float) -> float:
        """P(|e| <= tolerance)."""
        return float(np.sum(self.weights * (2 * stats.norm.cdf(tolerance / self.scales) - 1)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws; a component below NO_NOISE draws exactly 0, so a deterministic
        column keeps its ties (a simulator's equal latencies stay equal)."""
        scales = np.where(self.scales < NO_NOISE, 0.0, self.scales)
        return rng.normal(0.0, scales[rng.choice(len(scales), n, p=self.weights)])


def fit_noise(diffs: np.ndarray, scales: np.ndarray = SCALES, iterations: int = ITERATIONS,
              upper: np.ndarray | None = None) -> NoiseModel:
    """The mixture whose self-convolution best explains the twin differences d = e1 - e2.

    d's density is sum_jk w_j w_k N(d; 0, s_j^2 + s_k^2); the weights climb its
    likelihood by the multiplicative (minorise-maximise) update of mixture weights,
    each datum's responsibility split over the (j, k) pairs that could have made it.
    With `upper`, each difference is only known to lie in [diffs, upper] (a column
    recorded in whole ms: the unrounded values lie within half a unit of the recorded
    ones), and the likelihood is the probability of that interval."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 20:
        raise NasError(f"{len(d)} twin pairs are too few to estimate measurement noise (need 20)")
    sd = np.sqrt(scales[:, None] ** 2 + scales[None, :] ** 2)
    if upper is None:
        kernel = stats.norm.pdf(d[:, None, None] / sd) / sd  # n x S x S
    else:
        hi = np.asarray(upper, dtype=np.float64)
        kernel = stats.norm.cdf(hi[:, None, None] / sd) - stats.norm.cdf(d[:, None, None] / sd)
    kernel = np.maximum(kernel, 1e-300)
    w = np.full(len(scales), 1.0 / len(scales))
    for _ in range(iterations):
        kw = kernel @ w  # n x S
        density = kw @ w
        w = w * np.mean(kw / density[:, None], axis=0)
        w /= w.sum()
    return NoiseModel(scales.copy(), w)


def twin_rows(table: ArchTable) -> np.ndarray:
    """P x 2 row indices of the table's arch pairs that are one network (empty when the
    space has no isomorphic archs)."""
    canonical = getattr(table.space, "isomorphic_codes", None)
    if canonical is None:
        return np.empty((0, 2), dtype=np.int64)
    keys = canonical(table.codes) @ (np.max(table.codes) + 1) ** np.arange(table.codes.shape[1])
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    pairs = np.stack([order[:-1][same], order[1:][same]], axis=1)
    if len(np.unique(pairs)) != 2 * len(pairs):
        raise NasError(f"space {table.space.name}: an isomorphism class holds more than two archs of the table")
    return pairs


def _no_twins(table: ArchTable, column: str) -> NasError:
    return NasError(f"{column}: no two archs of the table are one network, so its noise cannot be estimated "
                    f"(space {table.space.name} has no isomorphic archs)")


def ceiling(values: np.ndarray, noise: NoiseModel, whole: bool, seed: int = 0,
            repeats: int = REPEATS) -> dict[str, float]:
    """Mean scores of the perfect predictor over simulated re-measurements of a column.

    The column's noise-free log latencies are taken to be its measured ones pulled
    toward their mean until the noise variance is removed; each simulated measurement
    adds a draw of the noise. On a whole-ms column the noise-free values are spread
    over their recorded unit first and each simulated measurement is rounded, as the
    device's log was. The within-share is the best over a constant offset of the
    predictions (a perfect predictor of the noise's centre)."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=np.float64)
    if whole:
        values = np.maximum(values + rng.uniform(-0.5, 0.5, len(values)), 0.5 * values.min())
    log_y = np.log(values)
    mean, var = log_y.mean(), log_y.var()
    shrink = np.sqrt(max(var - noise.sd ** 2, 0.01 * var) / var)
    truth = mean + (log_y - mean) * shrink
    reports = []
    for _ in range(repeats):
        measured = np.exp(truth + noise.sample(rng, len(truth)))
        if whole:  # a log in whole units records at least one
            measured = np.maximum(np.round(measured), 1.0)
        report = score(np.exp(truth), measured, whole)
        report["within_10"] = max(score(np.exp(truth + s), measured, whole)["within_10"] for s in SHIFTS)
        reports.append(report)
    return {k: float(np.mean([r[k] for r in reports])) for k in ("spearman_rho", "kendall_tau", "within_10")}


def _pair_noise(a: np.ndarray, b: np.ndarray, whole: bool) -> NoiseModel:
    if whole:  # the unrounded values lie within half a unit of the recorded ones
        low, high = np.maximum(a - 0.5, 0.5 * a), np.maximum(b - 0.5, 0.5 * b)
        return fit_noise(np.log(low) - np.log(b + 0.5), upper=np.log(a + 0.5) - np.log(high))
    return fit_noise(np.log(a) - np.log(b))


def column_noise(table: ArchTable, column: str, seed: int = 0, bootstrap: int = 0) -> dict[str, Any]:
    """Noise estimate and predictor ceiling of one cost column (see the module doc).
    `bootstrap` > 0 adds a 90 % interval of the ceiling over that many resamplings of
    the twin pairs (each refits the noise and re-simulates)."""
    rows, y, _ = table.rows(column, positive=True)
    pairs = twin_rows(table)
    value = np.full(len(table.codes), np.nan)
    value[rows] = y
    pairs = pairs[~np.isnan(value[pairs]).any(axis=1)]
    if len(pairs) == 0:
        raise _no_twins(table, column)
    a, b = value[pairs[:, 0]], value[pairs[:, 1]]
    whole = whole_ms(y)
    noise = _pair_noise(a, b, whole)
    d = np.log(a) - np.log(b)
    twins = [score(b, a, whole)["within_10"], score(a, b, whole)["within_10"]]
    mad = float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))
    out = {"column": column, "pairs": int(len(pairs)), "whole_ms": whole,
           "noise_sd": noise.sd, "noise_robust_sd": mad,
           "noise_within_10": noise.share_within(BAND),
           "twin_spearman": float(stats.spearmanr(a, b).statistic), "twin_within_10": float(np.mean(twins)),
           "mixture": {"scales": noise.scales.tolist(), "weights": noise.weights.tolist()},
           "ceiling": ceiling(y, noise, whole, seed)}
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = []
        for i in range(bootstrap):
            pick = rng.integers(0, len(a), len(a))
            draws.append(ceiling(y, _pair_noise(a[pick], b[pick], whole), whole, seed + 1 + i, repeats=1))
        out["ceiling_90"] = {k: [float(np.quantile([d[k] for d in draws], q)) for q in (0.05, 0.95)]
                             for k in ("spearman_rho", "kendall_tau", "within_10")}
    return out


def table_noise(table: ArchTable, columns: list[str], seed: int = 0, bootstrap: int = 0,
                log=print, progress: bool = False) -> list[dict[str, Any]]:
    """column_noise of each column, a line each to `log`."""
    from tqdm import tqdm

    if columns and not len(twin_rows(table)):  # found before any work starts
        raise _no_twins(table, columns[0])
    out = []
    for column in tqdm(columns, desc=f"{table.space.name} noise", unit="column", disable=not progress, leave=False):
        entry = column_noise(table, column, seed, bootstrap)
        c, ci = entry["ceiling"], entry.get("ceiling_90")
        band = (lambda k: f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]") if ci else (lambda k: "")
        log(f"{column:<24} {entry['pairs']:>5} pairs  noise sd {entry['noise_sd']:.3f} "
            f"(robust {entry['noise_robust_sd']:.3f})  ceiling: Spearman {c['spearman_rho']:.3f}{band('spearman_rho')} "
            f"Kendall {c['kendall_tau']:.3f} within ±10 % {c['within_10']:.3f}{band('within_10')}  "
            f"twin as predictor: within ±10 % {entry['twin_within_10']:.3f}")
        out.append(entry)
    return out
