"""Leave-one-device-out: the protocol every predictor default is chosen and reported by.

The figures that count are measured on devices in none of the shared tables, so each
device of a table is in turn the unseen one. Its columns (latency and energy together;
one GPU at several batch sizes is one device) are the targets; the other devices are
the training world:

  fit n       n random rows of the target train, every other row with a value tests
  transfer K  models pretrained on the other devices' columns adapt with K rows of the
              target, chosen by the reference design (never by their values)

Nested choice: which model (fit) or transfer variant serves the unseen device is
decided by the same protocol run over the training devices only (each of them left
out in turn, the unseen device out of every source set), by mean Spearman; the
unseen device's own numbers never pick anything. Inner folds run the first seed only
and score a fixed random subsample of test rows, to save time; outer folds run every
seed and score every test row.

Share within +-10 % is the figure LitePred reports; on a column recorded in whole
milliseconds (some phones) a prediction within 1 ms also counts, since no predictor
can beat the recording's own rounding.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from nas.errors import NasError
from nas.predictors.features import get_featurizer
from nas.predictors.intervals import log_halfwidth, model_residuals
from nas.predictors.models import make_model
from nas.predictors.models.transfer import TransferModel
from nas.predictors.predictor import infer_metric, split_rows
from nas.predictors.reference import coarse_features, design_order
from nas.predictors.tables import ArchTable
from nas.predictors.transfer import N_PRETRAIN, pretrain

FIT_CANDIDATES = ("ridge", "boosted", "transfer")
TRANSFER_CANDIDATES = ("transfer", "transfer_mix", "transfer_mix_shared", "transfer_all", "transfer_simplex",
                       "transfer_simplex_direct")
CRITERION = "spearman_rho"
LEVEL = 0.9  # the interval whose coverage is reported
INNER_TEST_ROWS = 2000
INNER_SEEDS = 1  # inner folds run the first seed only: the choice costs (devices - 1) x the outer folds
MAX_DESIGN = 50
_BATCH = re.compile(r"^(.*)_(\d+)$")


def device_of(column: str) -> str:
    """The device a column was measured on: 'edgegpu' of 'edgegpu_energy'."""
    return infer_metric(column)[2] or column


def device_groups(columns: Sequence[str]) -> dict[str, str]:
    """Column -> device group. A trailing number is a batch size when another column
    shares the prefix with another number (1080ti_1, 1080ti_32, 1080ti_256: one GPU),
    else part of the name (gold_6226, titan_rtx_32)."""
    devices = {c: device_of(c) for c in columns}
    prefixes: dict[str, set[str]] = {}
    for d in devices.values():
        m = _BATCH.match(d)
        if m:
            prefixes.setdefault(m.group(1), set()).add(d)
    out = {}
    for c, d in devices.items():
        m = _BATCH.match(d)
        out[c] = m.group(1) if m and len(prefixes[m.group(1)]) > 1 else d
    return out


def whole_ms(values: np.ndarray) -> bool:
    """True for a column recorded in whole units (phones logged in integer ms)."""
    return bool(np.all(values == np.round(values)))


def score(predicted: np.ndarray, measured: np.ndarray, whole: bool = False,
          lower: np.ndarray | None = None, upper: np.ndarray | None = None) -> dict[str, float]:
    """Spearman, Kendall and the share within +-10 % (or +-1 unit on a whole-unit
    column); the coverage of an interval when one is given."""
    p, y = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    tolerance = 0.10 * np.abs(y)
    if whole:
        tolerance = np.maximum(tolerance, 1.0)
    out = {"spearman_rho": float(stats.spearmanr(p, y).statistic),
           "kendall_tau": float(stats.kendalltau(p, y).statistic),
           "within_10": float(np.mean(np.abs(p - y) <= tolerance)),
           "median_ape": float(np.median(np.abs(p - y) / np.abs(y)))}
    if lower is not None and upper is not None:
        out["coverage_90"] = float(np.mean((y >= lower) & (y <= upper)))
    return out


@dataclass
class Fold:
    """A model fitted on some rows of a target, scored on the others."""

    predicted: np.ndarray
    measured: np.ndarray
    whole: bool
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    def report(self) -> dict[str, float]:
        return score(self.predicted, self.measured, self.whole, self.lower, self.upper)


@dataclass
class World:
    """One table's features, cost columns, device groups and pretrained sources,
    computed once for every fold."""

    table: ArchTable
    columns: list[str]
    n_pretrain: int = N_PRETRAIN
    pretrained: dict[str, Any] | None = None  # column -> source model already fitted
    groups: dict[str, str] = field(init=False)
    X: np.ndarray = field(init=False)
    Z: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.featurizer = get_featurizer(self.table.space)
        self.groups = device_groups(self.columns)
        self.X = self.featurizer.transform(self.table.codes)
        self._rows = {c: self.table.rows(c, positive=True)[:2] for c in self.columns}
        for c in self.columns:
            rows, y = self._rows[c]
            if len(rows) < 2 * MAX_DESIGN or np.ptp(y) == 0:
                raise NasError(f"column {c} has {len(rows)} positive values"
                               f"{', all equal' if len(rows) and np.ptp(y) == 0 else ''}: nothing to learn or test")
        # a source model per column, pretrained once (the shipped predictors' analogue)
        self.Z = {}
        for c in self.columns:
            model = (self.pretrained or {}).get(c) or pretrain(self.table, self.featurizer, c, self.n_pretrain, 0)
            self.Z[c] = model.predict(self.X)
        self._design: dict[tuple[str, int], np.ndarray] = {}
        self._coarse = coarse_features(self.featurizer, self.table.codes)

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(self.groups[c] for c in self.columns))

    def rows(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        return self._rows[column]

    def sources(self, column: str, exclude: frozenset[str] = frozenset()) -> list[str]:
        """The columns of every device but the target's and the excluded ones."""
        out = {self.groups[column], *exclude}
        return [c for c in self.columns if self.groups[c] not in out]

    def design(self, column: str, k: int, seed: int) -> np.ndarray:
        """Positions (into rows(column)) of the first k archs of the reference design."""
        if (column, seed) not in self._design:
            rows, _ = self.rows(column)
            self._design[column, seed] = design_order(self._coarse[rows], max(MAX_DESIGN, k), seed)
        order = self._design[column, seed]
        return order[:k] if k <= len(order) else design_order(self._coarse[self.rows(column)[0]], k, seed)


# (world, target column, training positions, excluded devices) -> test positions ->
# (predictions, their log spread, the model's calibration residuals or None)
Fitter = Callable[[World, str, np.ndarray, frozenset], Callable[[np.ndarray], tuple]]


def _plain(kind: str) -> Fitter:
    def fit(world: World, column: str, train: np.ndarray, exclude: frozenset):
        rows, y = world.rows(column)
        model = make_model(kind, world.featurizer.groups, 0).fit(world.X[rows[train]], y[train])
        residuals = model_residuals(model)
        return lambda test: (model.predict(world.X[rows[test]]), 0.0, residuals)
    return fit


def _transfer(heads: tuple[str, ...]) -> Fitter:
    def fit(world: World, column: str, train: np.ndarray, exclude: frozenset):
        rows, y = world.rows(column)
        sources = world.sources(column, exclude)
        if not sources:
            raise NasError(f"no source device left for {column}")
        Z = np.stack([world.Z[c] for c in sources], axis=1)
        model = TransferModel(groups=world.featurizer.groups, heads=heads)
        model.fit(world.X[rows[train]], y[train], Z=Z[rows[train]])
        return lambda test: (*model.predict(world.X[rows[test]], return_std=True, Z=Z[rows[test]]),
                             model_residuals(model))
    return fit


# transfer variant -> the TransferModel heads it averages
TRANSFER_VARIANTS = {"transfer": ("shared", "direct"), "transfer_mix": ("mix", "direct"),
                     "transfer_mix_shared": ("mix", "shared"), "transfer_all": ("shared", "direct", "mix"),
                     "transfer_simplex": ("simplex", "mix", "shared"),
                     "transfer_simplex_direct": ("simplex", "shared", "direct")}
FITTERS: dict[str, Fitter] = {"ridge": _plain("ridge"), "boosted": _plain("boosted"), "gbt": _plain("gbt"),
                              "mlp": _plain("mlp"), **{k: _transfer(v) for k, v in TRANSFER_VARIANTS.items()}}
USES_SOURCES = set(TRANSFER_VARIANTS)


@dataclass
class Protocol:
    """Leave-one-device-out with nested choice over a table's cost columns."""

    world: World
    seeds: Sequence[int] = (0, 1, 2)
    _cache: dict = field(default_factory=dict)

    def fold(self, candidate: str, column: str, setting: str, size: int, seed: int, exclude: frozenset,
             inner: bool) -> dict[str, float]:
        """The report of one candidate on one target column: setting 'fit' trains on
        `size` random rows, 'transfer' on the first `size` archs of the design."""
        if candidate not in USES_SOURCES:
            exclude = frozenset()
        key = (candidate, column, setting, size, seed, exclude, inner)
        if key not in self._cache:
            rows, y = self.world.rows(column)
            if setting == "fit":
                train, test = split_rows(len(rows), size, seed)
            else:
                train = self.world.design(column, size, seed)
                test = np.setdiff1d(np.arange(len(rows)), train)
            if inner and len(test) > INNER_TEST_ROWS:
                test = np.sort(np.random.default_rng(seed).choice(test, INNER_TEST_ROWS, replace=False))
            predicted, spread, residuals = FITTERS[candidate](self.world, column, train, exclude)(test)
            lower = upper = None
            if residuals is not None:
                width = np.exp(log_halfwidth(residuals, np.broadcast_to(spread, predicted.shape), LEVEL))
                lower, upper = predicted / width, predicted * width
            self._cache[key] = Fold(predicted, y[test], whole_ms(y), lower, upper).report()
        return self._cache[key]

    def choose(self, candidates: Sequence[str], device: str, setting: str, size: int) -> tuple[str, dict[str, float]]:
        """The candidate with the best mean criterion over the training devices (each
        left out in turn, `device` out of every source set), and those means."""
        if len(candidates) == 1:
            return candidates[0], {}
        inner = [c for c in self.world.columns
                 if self.world.groups[c] != device and self.world.sources(c, frozenset({device}))]
        means = {}
        for cand in candidates:
            means[cand] = float(np.mean([self.fold(cand, c, setting, size, s, frozenset({device}), True)[CRITERION]
                                         for c in inner for s in self.seeds[:INNER_SEEDS]]))
        return max(means, key=means.get), means

    def run(self, fit_sizes: Sequence[int], ks: Sequence[int], fit_candidates: Sequence[str] = FIT_CANDIDATES,
            transfer_candidates: Sequence[str] = TRANSFER_CANDIDATES, log=print, progress: bool = True) -> dict:
        from tqdm import tqdm

        world, results = self.world, []
        plan = [("fit", n, list(fit_candidates)) for n in fit_sizes] + \
               [("transfer", k, list(transfer_candidates)) for k in ks]
        for device in tqdm(world.devices, desc=f"{world.table.space.name} leave one device out", unit="device",
                           disable=not progress, leave=False):
            for setting, size, candidates in plan:
                pick, inner = self.choose(candidates, device, setting, size)
                for column in (c for c in world.columns if world.groups[c] == device):
                    reports = [self.fold(pick, column, setting, size, s, frozenset(), False) for s in self.seeds]
                    mean = {k: float(np.mean([r[k] for r in reports])) for k in reports[0]}
                    results.append({"device": device, "column": column, "setting": setting, "size": size,
                                    "chosen": pick, "inner_means": inner, **mean})
            log(_device_line(device, [r for r in results if r["device"] == device]))
        return {"space": world.table.space.name, "columns": world.columns, "groups": world.groups,
                "seeds": list(self.seeds), "results": results, "summary": summarize(results)}


def _device_line(device: str, rows: list[dict]) -> str:
    parts = [f"{device:<14}"]
    for r in rows:
        label = f"n={r['size']}" if r["setting"] == "fit" else f"K={r['size']}"
        parts.append(f"{r['column'].removesuffix('_latency')[:10]} {label} {r['chosen']}: "
                     f"rho {r['spearman_rho']:.3f} ±10% {r['within_10']:.2f}")
    return "  ".join(parts)


def summarize(results: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per setting and size: mean and worst (column) of each figure."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        out.setdefault(f"{r['setting']} {r['size']}", []).append(r)
    summary = {}
    for key, rows in out.items():
        entry: dict[str, Any] = {"columns": len(rows)}
        for metric in ("spearman_rho", "kendall_tau", "within_10", "coverage_90"):
            if any(metric not in r for r in rows):
                continue
            values = [r[metric] for r in rows]
            worst = rows[int(np.argmin(values))]
            entry[metric] = {"mean": float(np.mean(values)), "worst": float(min(values)), "worst_column": worst["column"]}
        entry["chosen"] = sorted({r["chosen"] for r in rows})
        summary[key] = entry
    return summary


PROTOCOL_TEXT = """protocol: leave one device out over every latency/energy column of the table; a device's
columns leave together (one GPU at several batch sizes is one device). fit n: n random rows of the
unseen column train, the rest test. transfer K: models pretrained on {n_pretrain} rows of each other
device's columns adapt with the first K archs of the reference design. Nested: the model/variant for
the unseen device is the one with the best mean Spearman over the training devices (each left out in
turn; inner folds on seed 0 and {inner} test rows). Seeds {seeds}; figures are means over seeds, then mean and
worst over columns. Within ±10 %: or ±1 ms on a column recorded in whole ms."""
