"""Prediction intervals: calibration residuals from the fit, widened by model disagreement.

A predictor's interval at level L is prediction x exp(+-w(x)), with

    w(x) = sqrt(q_L^2 + (z_L s(x))^2)

q_L is the split-conformal quantile of the absolute log errors the model made on its
own training rows when each was left out (closed-form leave-one-out for the group
ridge and every head of a transfer model, k-fold cross-validation for models without
one), so a 90 % interval covers about 90 % of archs drawn like the training rows.
s(x) is the spread of an ensemble's members or a transfer model's heads on that arch
(zero for single models), z_L the normal quantile: archs where the members disagree,
which lie away from the training rows, get wider intervals. With fewer rows than the
level needs (under 9 rows at 90 %), q_L is the largest error seen, and the interval
under-covers; `hwnas bench predictors` reports the coverage reached on left-out devices.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from nas.errors import NasError

CV_FOLDS = 5


def check_level(level: float) -> float:
    """A confidence level in (0, 1), else a one-line error."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise NasError(f"confidence level {level!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise NasError(f"confidence level {level} must be between 0 and 1 (exclusive), e.g. 0.9")
    return value


def conformal_quantile(log_residuals: np.ndarray, level: float) -> float:
    """The ceil((n + 1) L)-th smallest absolute log residual (the largest when n is too
    small for the level)."""
    r = np.sort(np.abs(np.asarray(log_residuals, dtype=np.float64)))
    if len(r) == 0:
        raise NasError("no calibration residuals: the predictor cannot give an interval")
    k = math.ceil((len(r) + 1) * check_level(level))
    return float(r[min(k, len(r)) - 1])


def model_residuals(model) -> np.ndarray | None:
    """Signed leave-one-out log residuals of a fitted model, when it has them in closed form."""
    from nas.predictors.models.composite import LUTResidual
    from nas.predictors.models.linear import GroupRidge
    from nas.predictors.models.transfer import TransferModel

    if isinstance(model, GroupRidge):
        return model.loo_log_residuals_
    if isinstance(model, LUTResidual):
        return model.correction_.loo_log_residuals_
    if isinstance(model, TransferModel):  # the heads' log average: its LOO residual is their mean
        heads = [model.models_[h].loo_log_residuals_ for h in model.heads_]
        return None if any(h is None for h in heads) else np.mean(heads, axis=0)
    return None


def cv_residuals(make: Callable[[], object], X: np.ndarray, y: np.ndarray, seed: int = 0,
                 folds: int = CV_FOLDS) -> np.ndarray:
    """Signed k-fold log residuals, for models without a closed-form leave-one-out."""
    order = np.random.default_rng(seed).permutation(len(y))
    out = np.empty(len(y))
    for part in np.array_split(order, min(folds, len(y))):
        train = np.setdiff1d(order, part)
        out[part] = np.log(y[part]) - np.log(make().fit(X[train], y[train]).predict(X[part]))
    return out


def calibration_residuals(model, make: Callable[[], object], X: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    residuals = model_residuals(model)
    return residuals if residuals is not None else cv_residuals(make, X, y, seed)


def log_halfwidth(residuals: np.ndarray, spread: np.ndarray, level: float) -> np.ndarray:
    """w(x) of the module doc, one per arch."""
    q = conformal_quantile(residuals, level)
    z = float(stats.norm.ppf(0.5 + check_level(level) / 2))
    return np.sqrt(q ** 2 + (z * np.asarray(spread, dtype=np.float64)) ** 2)
