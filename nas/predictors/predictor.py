"""A learned predictor: features of a space + a fitted model + provenance, as a CostModel.

`fit_predictor` trains on a table column (n_train random rows, seeded) and records
which archs it used; `evaluate` scores a predictor on a table while leaving those archs
out, so nobody reports training error by mistake. `Predictor.load` rebuilds the
features from the space and refuses a file whose feature set does not match what this
hwnas computes for that space.
"""
from __future__ import annotations

import datetime as _dt
import inspect
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.costs import CostModel, as_codes
from nas.errors import DataError, NasError
from nas.metrics import regression_report
from nas.predictors.features import Featurizer, get_featurizer
from nas.predictors.intervals import calibration_residuals
from nas.predictors.models import build_model, make_model, model_state
from nas.predictors.store import SCHEMA, load_arrays, save_arrays
from nas.predictors.tables import ArchTable
from nas.provenance import library_versions
from nas.space.arch import Arch
from nas.space.base import SearchSpace

CHUNK = 8192
UNITS = {"latency": "ms", "energy": "mJ", "accuracy": "%"}
# fewest training rows per model kind: the ridge's leave-one-out needs a few, trees and
# networks with their 5-fold calibration need a few rows per fold
MIN_ROWS = {"ridge": 5, "lut_residual": 5, "transfer": 5, "gbt": 10, "forest": 10, "boosted": 10, "mlp": 20, "ensemble": 20}


def infer_metric(column: str) -> tuple[str, str, str | None]:
    """(metric, unit, device) read off a column name such as 'edgegpu_energy',
    'measured_ms' (hwnas lut validate / measure) or 'cifar10_val_acc'."""
    name = column.lower()
    if "acc" in name:
        return "accuracy", "%", None
    for metric in ("latency", "energy"):
        if name.endswith("_" + metric):
            return metric, UNITS[metric], column[: -len(metric) - 1]
    if name.endswith("_ms"):
        return "latency", "ms", None
    if name.endswith("_mj"):
        return "energy", "mJ", None
    return column, "", None


class Predictor(CostModel):
    """predict(archs) of a fitted model over the space's LayerSpec features."""

    def __init__(self, space: SearchSpace, featurizer: Featurizer, model: Any, meta: dict[str, Any]) -> None:
        self.space, self.featurizer, self.model, self.meta = space, featurizer, model, meta
        self.metric, self.unit = meta["metric"], meta["unit"]

    def predict(self, archs: Sequence[Arch] | np.ndarray, return_std: bool = False):
        """One value per arch; with return_std, also the relative uncertainty of each
        (the spread of an ensemble's members in log space; zeros for single models)."""
        codes = as_codes(self.space, archs)
        out = np.empty(len(codes))
        std = np.zeros(len(codes))
        with_std = "return_std" in inspect.signature(self.model.predict).parameters
        for start in range(0, len(codes), CHUNK):
            X = self.featurizer.transform(codes[start:start + CHUNK])
            if with_std:
                out[start:start + CHUNK], std[start:start + CHUNK] = self.model.predict(X, return_std=True)
            else:
                out[start:start + CHUNK] = self.model.predict(X)
        return (out, std) if return_std else out

    def interval(self, archs: Sequence[Arch] | np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) at the confidence level: the calibration residuals of the fit,
        widened where the model's members disagree (nas.predictors.intervals)."""
        from nas.predictors.intervals import log_halfwidth

        residuals = self.meta.get("calibration", {}).get("log_residuals")
        if not residuals:
            raise NasError(f"this {self.meta.get('model')} predictor of {self.meta.get('target')} has no calibration "
                           "residuals (made before intervals existed); refit it")
        values, spread = self.predict(archs, return_std=True)
        width = np.exp(log_halfwidth(np.asarray(residuals), spread, level))
        return values / width, values * width

    @property
    def used_arch_ids(self) -> set[str]:
        """Archs this predictor saw while training or adapting: never evaluate on them."""
        return set(self.meta.get("training", {}).get("arch_ids", []))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": self.meta.get("device"), "model": self.meta.get("model"),
                "feature_set": self.featurizer.feature_set, "target": self.meta.get("target")}

    # -- files ------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        spec, arrays = model_state(self.model)
        save_arrays(path, {**self.meta, "model_state": spec}, arrays)

    @classmethod
    def load(cls, path: Path | str, space: SearchSpace | None = None) -> "Predictor":
        """A predictor from its file. Refuses a file made for another space than `space`
        (when given) or for a feature set this hwnas does not compute the same way."""
        from nas.space import load_space

        meta, arrays = load_arrays(path)
        if space is not None and space.name != meta.get("space"):
            raise NasError(f"{path} predicts for space {meta.get('space')!r}, not {space.name!r}")
        space = space or load_space(meta["space"])
        lut = meta.get("lut")
        featurizer = get_featurizer(space, meta["feature_set"], lut["values"] if lut else None)
        if featurizer.fingerprint != meta.get("feature_fingerprint"):
            raise NasError(f"{path} was made with {meta['feature_set']!r} features of {meta['space']} that differ from "
                           f"this hwnas's ({meta.get('n_features')} vs {len(featurizer.names)} columns, fingerprint "
                           f"{meta.get('feature_fingerprint')} vs {featurizer.fingerprint}); refit it")
        try:
            model = build_model(meta["model_state"], arrays)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise DataError(f"{path}: the model's arrays are incomplete or garbled ({type(exc).__name__}: {exc}); "
                            "refit the predictor") from None
        predictor = cls(space, featurizer, model, {k: v for k, v in meta.items() if k != "model_state"})
        predictor._probe(path)
        return predictor

    def _probe(self, path: Path | str) -> None:
        """Predict a few random archs once at load: arrays of the
        wrong shape fail here rather than mid-search, and NaN coefficients, which would
        predict NaN for every arch without a word, are refused."""
        codes = self.space.sample_codes(0, 16)
        try:
            values = np.asarray(self.predict(codes), dtype=float)
        except (ValueError, IndexError, TypeError) as exc:
            raise DataError(f"{path}: the model's arrays do not fit its features ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); refit the predictor") from None
        if values.shape != (len(codes),) or not np.isfinite(values).all():
            raise DataError(f"{path}: the model predicts NaN or infinite values (its coefficients are corrupt); "
                            "refit the predictor")


def base_meta(featurizer: Featurizer, target: str, metric: str | None, unit: str | None, device: str | None,
              table: ArchTable | None) -> dict[str, Any]:
    """Metadata every predictor file carries."""
    inferred_metric, inferred_unit, inferred_device = infer_metric(target)
    meta: dict[str, Any] = {
        "schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "space": featurizer.space.name, "feature_set": featurizer.feature_set,
        "feature_fingerprint": featurizer.fingerprint, "n_features": len(featurizer.names),
        "target": target, "metric": metric or inferred_metric, "unit": unit if unit is not None else inferred_unit,
        "device": device or inferred_device, "versions": predictor_versions(),
    }
    if table is not None:
        meta["tables"] = {Path(s).name: table.digests[s] for s in table.sources}
        meta["table_hash"] = table.digest
    if featurizer.lut_values is not None:
        meta["lut"] = {"values": featurizer.lut_values}
    return meta


def predictor_versions() -> dict[str, str]:
    """The libraries a predictor file's numbers depend on; torch only when it is loaded
    (the MLP trained with it)."""
    return library_versions(["python", "numpy", "scikit-learn", "scipy", "hwnas",
                             *(["torch"] if "torch" in sys.modules else [])])


def split_rows(n_rows: int, n_train: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, rest): a seeded random permutation of row positions cut at n_train."""
    if n_train is not None and not 2 <= n_train <= n_rows:
        raise NasError(f"--n-train {n_train} must be between 2 and the {n_rows} rows with a value")
    order = np.random.default_rng(seed).permutation(n_rows)
    cut = n_rows if n_train is None else n_train
    return order[:cut], order[cut:]


def default_model(metric: str, space: SearchSpace | None = None, device: str | None = None) -> str:
    """The model `--model auto` picks. Costs: transfer from the space's shipped
    predictors of other devices when there are any (chosen by leave-one-device-out,
    nested, on every shared device table: docs/benchmarks.md, issue 17), else the group
    ridge, as costs add up over layers. Accuracy: boosted trees, as it does not
    (NB201 CIFAR-10 accuracy at n=900, Spearman 0.93 for gbt against 0.83 for ridge)."""
    if metric == "accuracy":
        return "gbt"
    if space is not None:
        from nas import catalog

        names = [n.partition("/") for n in catalog.predictor_files(space.name)]
        if any(stem.endswith(("_latency", "_energy")) and folder != device for folder, _, stem in names):
            return "transfer"
    return "ridge"


def fit_predictor(table: ArchTable, target: str, n_train: int | None = None, seed: int = 0, model: str = "auto",
                  feature_set: str = "layerspec", lut_values: Mapping[str, float] | None = None,
                  metric: str | None = None, unit: str | None = None, device: str | None = None) -> Predictor:
    """Fit a predictor of `target` on n_train random rows of the table (all rows if None)."""
    inferred_metric, _, inferred_device = infer_metric(target)
    device = device or inferred_device
    if model == "auto":
        model = default_model(metric or inferred_metric, table.space, device)
    rows, y, column = table.target(target)
    train, _ = split_rows(len(rows), n_train, seed)
    if len(train) < MIN_ROWS.get(model, 2):
        ridge = f" or use --model ridge (from {MIN_ROWS['ridge']})" if MIN_ROWS[model] > MIN_ROWS["ridge"] else ""
        raise NasError(f"model {model} needs at least {MIN_ROWS[model]} measurements, got {len(train)} of {target}; "
                       f"measure more archs{ridge}")
    featurizer = get_featurizer(table.space, feature_set, lut_values)
    if model == "lut_residual" and lut_values is None:
        raise NasError("model lut_residual needs a LUT (--lut): it learns the correction to the LUT's sum")
    extra: dict[str, Any] = {"base_column": featurizer.names.index("net.lut_sum")} if model == "lut_residual" else {}
    source_names: list[str] = []
    if model == "transfer":
        from nas.predictors.transfer import DEFAULT_HEADS, shipped_sources

        if feature_set != "layerspec":
            raise NasError("model transfer uses the shipped predictors' layerspec features; drop --features")
        source_names, sources = shipped_sources(table.space, device)
        if not sources:
            raise NasError(f"model transfer needs predictors of other devices for {table.space.name} "
                           "(predictors/<device>/<space>_latency.npz); none found: use --model ridge")
        extra = {"sources": sources, "heads": DEFAULT_HEADS}
    estimator = make_model(model, featurizer.groups, seed, **extra)
    X = featurizer.transform(table.subset(rows[train]))
    try:
        estimator.fit(X, y[train])
        residuals = calibration_residuals(estimator, lambda: make_model(model, featurizer.groups, seed, **extra),
                                          X, y[train], seed)
    except ValueError as exc:
        raise NasError(f"fitting {model} on {target}: {exc}") from None
    meta = base_meta(featurizer, target, metric, unit, device, table)
    meta["model"] = model
    meta["calibration"] = calibration_meta(residuals, estimator)
    if source_names:
        meta["transfer"] = {"sources": source_names, "adapted_on": f"{len(train)} random rows (seed {seed})"}
    meta["training"] = {"n_train": int(len(train)), "seed": seed, "dropped_missing": column.missing,
                        "arch_ids": [table.arch_ids[i] for i in rows[train]]}
    return Predictor(table.space, featurizer, estimator, meta)


def calibration_meta(residuals: np.ndarray, model: Any) -> dict[str, Any]:
    """What a file keeps to give intervals: the signed log residuals and how they were made."""
    from nas.predictors.intervals import CV_FOLDS, model_residuals

    how = "leave-one-out" if model_residuals(model) is not None else f"{CV_FOLDS}-fold cross-validation"
    return {"method": how, "log_residuals": [float(r) for r in residuals]}


def evaluate(predictor: Predictor, table: ArchTable, target: str) -> dict[str, Any]:
    """The regression report of the predictor on every row with a value, except archs it
    was trained or adapted on (their number is reported as `excluded`)."""
    if table.space.name != predictor.space.name:
        raise NasError(f"the table is read as space {table.space.name}, the predictor is for {predictor.space.name}")
    rows, y, column = table.rows(target)
    used = predictor.used_arch_ids
    keep = np.array([table.arch_ids[i] not in used for i in rows], dtype=bool)
    if keep.sum() < 2:
        raise NasError(f"fewer than 2 rows of {target} are left after excluding the {int((~keep).sum())} archs the "
                       "predictor was trained on")
    predicted = predictor.predict(table.subset(rows[keep]))
    nonzero = y[keep] != 0
    report = regression_report(predicted[nonzero], y[keep][nonzero])
    if predictor.meta.get("calibration"):  # how often the 90 % interval holds the measured value
        lower, upper = predictor.interval(table.subset(rows[keep][nonzero]), 0.9)
        measured = y[keep][nonzero]
        report["coverage_90"] = float(np.mean((measured >= lower) & (measured <= upper)))
        report["interval_90_median_halfwidth"] = float(np.median((upper - lower) / (upper + lower)))
    report["excluded"] = int((~keep).sum())
    report["dropped_missing"] = column.missing
    return report
