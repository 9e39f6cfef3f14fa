"""Ridge regression with a penalty per feature group, tuned by exact leave-one-out.

Cost targets (latency, energy) span a factor of 10 to 10,000 over a space, and what the
field reports is relative error, so the fit minimises relative error: either on log y
(`loss="log"`) or as a weighted least squares of y with weights 1/y^2 (`"relative"`,
which keeps the model additive in the per-op costs, as latency is). The coarse feature
groups (network and stage aggregates) get the base penalty and the fine ones (per-layer
vectors, one-hot ops) a multiple of it, so 20 measurements fit the aggregates and
hundreds the detail. Penalty, fine-group multiple and loss are all chosen by the
closed-form leave-one-out error on the training rows alone, from one SVD per setting.
The leave-one-out log errors of the chosen setting are kept: they are the model's
calibration residuals (nas.predictors.intervals), at no extra fit.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from nas.predictors.features import COARSE
from nas.predictors.models.base import check_xy, register
from nas.threads import one_thread

ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 15))
FINE_MULTIPLES = (1.0, 10.0, 100.0, 1000.0)
LOSSES = ("log", "relative")
FLOOR = 1e-3  # smallest prediction, relative to the geometric mean of the training targets
INTERCEPT_COLUMN = 1e3  # a large constant column: its ridge penalty is negligible


@register("ridge")
class GroupRidge(RegressorMixin, BaseEstimator):
    """Linear model of a positive target with group-wise ridge penalties.

    groups: the group name of each feature column (see nas.predictors.features); None
    treats every column as coarse. loss: "log", "relative" or "auto" (chosen by LOO).
    """

    def __init__(self, groups: Sequence[str] | None = None, loss: str = "auto",
                 alphas: Sequence[float] = ALPHAS, fine_multiples: Sequence[float] = FINE_MULTIPLES) -> None:
        self.groups = groups
        self.loss = loss
        self.alphas = alphas
        self.fine_multiples = fine_multiples

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> "GroupRidge":
        if self.loss not in (*LOSSES, "auto"):
            raise ValueError(f"loss must be one of {LOSSES} or 'auto', got {self.loss!r}")
        X, y = check_xy(X, y, positive=True)
        self.target_scale_ = float(np.exp(np.mean(np.log(y))))  # makes the penalties unit-free
        y = y / self.target_scale_
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        Z = (X - self.mean_) / self.scale_
        fine = self._fine_mask(X.shape[1])
        best = None
        multiples = self.fine_multiples if fine.any() and not fine.all() else (1.0,)
        for loss in (LOSSES if self.loss == "auto" else (self.loss,)):
            for multiple in multiples:
                weights = np.where(fine, 1.0 / np.sqrt(multiple), 1.0)
                for alpha, error, residual in _loo_path(Z * weights, y, loss, self.alphas):
                    if best is None or error < best[0]:
                        best = (error, loss, multiple, alpha, residual)
        _, self.loss_, self.fine_multiple_, self.alpha_, residual = best
        self.loo_error_ = float(best[0])
        self.loo_log_residuals_ = _log_ratio(residual, self.loss_)
        weights = np.where(fine, 1.0 / np.sqrt(self.fine_multiple_), 1.0)
        coef, self.intercept_ = _solve(Z * weights, y, self.loss_, self.alpha_)
        self.coef_ = coef * weights / self.scale_  # in units of the raw features
        self.intercept_ -= float(self.mean_ @ self.coef_)
        return self

    def _fine_mask(self, n: int) -> np.ndarray:
        if self.groups is None:
            return np.zeros(n, dtype=bool)
        if len(self.groups) != n:
            raise ValueError(f"groups names {len(self.groups)} columns, X has {n}")
        return np.array([g not in COARSE for g in self.groups])

    def predict(self, X: np.ndarray) -> np.ndarray:
        raw = np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_
        if self.loss_ == "log":
            return np.exp(raw) * self.target_scale_
        # an additive model can extrapolate below zero far from its data; a cost cannot
        return np.maximum(raw, FLOOR) * self.target_scale_

    # -- persistence ----------------------------------------------------------------
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        params = {"loss": self.loss_, "alpha": self.alpha_, "fine_multiple": self.fine_multiple_,
                  "loo_error": self.loo_error_, "intercept": self.intercept_, "target_scale": self.target_scale_}
        arrays = {"coef": self.coef_}
        if self.loo_log_residuals_ is not None:
            arrays["loo_log_residuals"] = self.loo_log_residuals_
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "GroupRidge":
        model = cls(loss=params["loss"])
        model.loss_, model.alpha_, model.fine_multiple_ = params["loss"], params["alpha"], params["fine_multiple"]
        model.loo_error_, model.intercept_ = params["loo_error"], params["intercept"]
        model.target_scale_ = params["target_scale"]
        model.coef_ = arrays["coef"]
        model.loo_log_residuals_ = arrays.get("loo_log_residuals")  # absent in files made before intervals
        return model


def _system(Z: np.ndarray, y: np.ndarray, loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(design with an intercept column, target, row weights) of the least-squares problem
    whose residuals are the loss's relative errors."""
    design = np.hstack([Z, np.full((len(Z), 1), INTERCEPT_COLUMN)])
    if loss == "log":
        return design, np.log(y), np.ones_like(y)
    return design, y, 1.0 / y


def _loo_path(Z: np.ndarray, y: np.ndarray, loss: str, alphas: Sequence[float]):
    """(alpha, leave-one-out error) for each alpha, from one thin SVD.

    For ridge, the LOO residual is the ordinary residual divided by 1 - h_ii, where
    h_ii is the leverage; both come from the SVD for every alpha at once."""
    design, target, w = _system(Z, y, loss)
    A, b = design * w[:, None], target * w
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    Ub = U.T @ b
    s2 = s ** 2
    for alpha in alphas:
        shrink = s2 / (s2 + alpha)
        fitted = U @ (shrink * Ub)
        leverage = np.einsum("ij,j,ij->i", U, shrink, U)
        residual = (b - fitted) / np.maximum(1.0 - leverage, 1e-9)
        yield alpha, _robust_error(residual, loss), residual


def _log_ratio(residual: np.ndarray, loss: str) -> np.ndarray:
    """log(y / leave-one-out prediction) from a residual of the loss's system."""
    # log: residual = log y - log p; relative: residual = 1 - p / y
    return residual.copy() if loss == "log" else -np.log(np.maximum(1.0 - residual, 1e-9))


def _robust_error(residual: np.ndarray, loss: str) -> float:
    """Mean absolute log ratio of prediction to target, each capped at log(2): both losses
    on one scale, and a few archs a linear model cannot fit (an NB201 cell whose output is
    cut off runs in microseconds on some runtimes) do not pick the hyperparameters."""
    ratio = np.abs(_log_ratio(residual, loss))
    return float(np.mean(np.minimum(ratio, np.log(2.0))))


def _solve(Z: np.ndarray, y: np.ndarray, loss: str, alpha: float) -> tuple[np.ndarray, float]:
    design, target, w = _system(Z, y, loss)
    A, b = design * w[:, None], target * w
    gram = A.T @ A + alpha * np.eye(A.shape[1])
    beta = np.linalg.solve(gram, A.T @ b)
    return beta[:-1], float(beta[-1] * INTERCEPT_COLUMN)
