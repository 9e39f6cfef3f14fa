"""The few-shot transfer model: fixed pretrained source models and adapted heads.

See nas.predictors.transfer for the method; this module holds only the estimator, so
that predictor files of kind "transfer" load through the model registry.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats
from sklearn.base import BaseEstimator, RegressorMixin

from nas.predictors.features import COARSE
from nas.predictors.models.base import check_xy, nest_states, register, unnest_states
from nas.threads import one_thread
from nas.predictors.models.linear import GroupRidge

LOO_ROWS = 50  # up to this many rows, a simplex head's calibration residuals are exact leave-one-out


@register("simplex")
class SimplexMix(RegressorMixin, BaseEstimator):
    """log y = a + b * sum_s w_s log z_s with w_s >= 0 summing to one and b >= 0: the
    target as a weighted geometric mean of the source devices' predictions, scaled.

    Why: with K = 20 rows and ten or more sources an unconstrained (even penalised)
    regression on the logs can give a source a negative weight, betting against a
    device; non-negative weights pick the few sources that move with the target and
    ignore the rest, and need no penalty to tune. Fitted as non-negative least squares
    on the centred logs (v = b w, so b = sum v and w = v / b). When no source moves
    with the target (v = 0), the one whose ranking of the rows agrees best takes the
    weight. Calibration residuals: leave-one-out refits up to LOO_ROWS rows, else
    LOO_ROWS-fold.
    """

    def fit(self, L: np.ndarray, y: np.ndarray) -> "SimplexMix":
        """L: N x S log source predictions."""
        L, y = check_xy(L, y, positive=True)
        self.weights_, self.scale_, self.intercept_ = _simplex(L, np.log(y))
        order = np.arange(len(y))
        residuals = np.empty(len(y))
        for part in np.array_split(order, min(LOO_ROWS, len(y))):
            keep = np.setdiff1d(order, part)
            w, b, a = _simplex(L[keep], np.log(y[keep]))
            residuals[part] = np.log(y[part]) - (a + b * L[part] @ w)
        self.loo_log_residuals_ = residuals
        return self

    def predict(self, L: np.ndarray) -> np.ndarray:
        return np.exp(self.intercept_ + self.scale_ * np.asarray(L, dtype=np.float64) @ self.weights_)

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return ({"scale": self.scale_, "intercept": self.intercept_},
                {"weights": self.weights_, "loo_log_residuals": self.loo_log_residuals_})

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "SimplexMix":
        model = cls()
        model.scale_, model.intercept_ = params["scale"], params["intercept"]
        model.weights_, model.loo_log_residuals_ = arrays["weights"], arrays["loo_log_residuals"]
        return model


def _simplex(L: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(w on the simplex, b >= 0, a) minimising |t - a - b L w|^2."""
    mean_L, mean_t = L.mean(axis=0), float(t.mean())
    Lc = L - mean_L
    v, _ = optimize.nnls(Lc, t - mean_t)
    if v.sum() <= 0:  # nothing moves with the target: the best-ranked source, with its least-squares slope
        rho = [stats.spearmanr(Lc[:, s], t).statistic if np.ptp(Lc[:, s]) > 0 else -1.0 for s in range(L.shape[1])]
        best = int(np.nanargmax(rho))
        v = np.zeros(L.shape[1])
        v[best] = max(float(Lc[:, best] @ (t - mean_t)) / max(float(Lc[:, best] @ Lc[:, best]), 1e-12), 1e-6)
    b = float(v.sum())
    return v / b, b, mean_t - b * float(mean_L @ (v / b))


@register("transfer")
class TransferModel(RegressorMixin, BaseEstimator):
    """Pretrained source models (fixed) + heads fitted by fit(X, y) on K rows, averaged
    in log space:

      shared  ridge over the source predictions, their logs and the coarse features
      direct  the group ridge on the features alone
      mix     ridge of log y over the log source predictions alone: the target as a
              power-law mix of known devices, nothing learned from the K rows' features
      simplex the same mix with non-negative weights summing to one, times a free
              exponent (SimplexMix): a weighted geometric mean of known devices
    """

    HEADS = ("shared", "direct", "mix", "simplex")

    def __init__(self, sources: Sequence | None = None, groups: Sequence[str] | None = None,
                 heads: Sequence[str] = ("shared", "direct")) -> None:
        self.sources = sources
        self.groups = groups
        self.heads = heads

    def source_predictions(self, X: np.ndarray) -> np.ndarray:
        """N x S: each pretrained source model's prediction of the rows."""
        return np.stack([m.predict(X) for m in self.sources_], axis=1)

    def _shared_features(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        return np.hstack([Z, np.log(Z), X[:, self.coarse_]])

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray, Z: np.ndarray | None = None) -> "TransferModel":
        """Z: the source models' predictions of X when already computed (the
        leave-one-device-out benchmark predicts every source once for all its folds)."""
        X, y = check_xy(X, y, positive=True)
        if not self.sources and Z is None:
            raise ValueError("transfer needs at least one pretrained source model")
        self.sources_ = list(self.sources or [])
        groups = list(self.groups) if self.groups is not None else ["net"] * X.shape[1]
        self.coarse_ = np.array([i for i, g in enumerate(groups) if g in COARSE], dtype=np.int64)
        unknown = [h for h in self.heads if h not in self.HEADS]
        if unknown or not self.heads:
            raise ValueError(f"heads must be some of {self.HEADS}, got {self.heads}")
        self.heads_ = tuple(self.heads)
        Z = self._sources_of(X, Z)  # once for every head that reads them
        n_sources = len(self.sources_) if Z is None else Z.shape[1]
        self.models_ = {}
        for head in self.heads_:
            if head == "shared":
                shared_groups = ["net"] * (2 * n_sources) + ["layer"] * len(self.coarse_)
                self.models_[head] = GroupRidge(groups=shared_groups).fit(self._shared_features(X, Z), y)
            elif head == "direct":
                self.models_[head] = GroupRidge(groups=groups).fit(X, y)
            elif head == "mix":
                self.models_[head] = GroupRidge(loss="log").fit(np.log(Z), y)
            else:
                self.models_[head] = SimplexMix().fit(np.log(Z), y)
        return self

    def _sources_of(self, X: np.ndarray, Z: np.ndarray | None) -> np.ndarray | None:
        """The source predictions of X (Z when given), or None when only `direct` is used."""
        if Z is not None:
            return np.asarray(Z, dtype=np.float64)
        return self.source_predictions(X) if any(h != "direct" for h in self.heads_) else None

    def head_predictions(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """H x N: each head's prediction."""
        X = np.asarray(X, dtype=np.float64)
        Z = self._sources_of(X, Z)
        inputs = {"shared": lambda: self._shared_features(X, Z), "direct": lambda: X,
                  "mix": lambda: np.log(Z), "simplex": lambda: np.log(Z)}
        return np.stack([self.models_[h].predict(inputs[h]()) for h in self.heads_])

    def predict(self, X: np.ndarray, return_std: bool = False, Z: np.ndarray | None = None):
        logs = np.log(self.head_predictions(X, Z))
        mean = np.exp(logs.mean(axis=0))
        return (mean, logs.std(axis=0)) if return_std else mean

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        specs, arrays = nest_states([*self.sources_, *(self.models_[h] for h in self.heads_)])
        arrays["coarse"] = self.coarse_
        return {"members": specs, "n_sources": len(self.sources_), "heads": list(self.heads_)}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "TransferModel":
        models = unnest_states(params["members"], {k: v for k, v in arrays.items() if k != "coarse"})
        heads = tuple(params.get("heads", ("shared", "direct")))  # files before heads were a choice
        model = cls(heads=heads)
        n = params["n_sources"]
        model.sources_, model.heads_ = models[:n], heads
        model.models_ = dict(zip(heads, models[n:]))
        model.coarse_ = arrays["coarse"]
        return model
