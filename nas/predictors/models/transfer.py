"""The few-shot transfer model: fixed pretrained source models and two adapted heads.

See nas.predictors.transfer for the method; this module holds only the estimator, so
that predictor files of kind "transfer" load through the model registry.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from nas.predictors.features import COARSE
from nas.predictors.models.base import check_xy, nest_states, register, unnest_states
from nas.threads import one_thread
from nas.predictors.models.linear import GroupRidge


@register("transfer")
class TransferModel(RegressorMixin, BaseEstimator):
    """Pretrained source models (fixed) + the two heads fitted by fit(X, y) on K rows."""

    def __init__(self, sources: Sequence | None = None, groups: Sequence[str] | None = None) -> None:
        self.sources = sources
        self.groups = groups

    def _shared_features(self, X: np.ndarray) -> np.ndarray:
        Z = np.stack([m.predict(X) for m in self.sources_], axis=1)
        return np.hstack([Z, np.log(Z), X[:, self.coarse_]])

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> "TransferModel":
        X, y = check_xy(X, y, positive=True)
        if not self.sources:
            raise ValueError("transfer needs at least one pretrained source model")
        self.sources_ = list(self.sources)
        groups = list(self.groups) if self.groups is not None else ["net"] * X.shape[1]
        self.coarse_ = np.array([i for i, g in enumerate(groups) if g in COARSE], dtype=np.int64)
        shared_groups = ["net"] * (2 * len(self.sources_)) + ["layer"] * len(self.coarse_)
        self.shared_ = GroupRidge(groups=shared_groups).fit(self._shared_features(X), y)
        self.direct_ = GroupRidge(groups=groups).fit(X, y)
        return self

    def predict(self, X: np.ndarray, return_std: bool = False):
        X = np.asarray(X, dtype=np.float64)
        logs = np.log(np.stack([self.shared_.predict(self._shared_features(X)), self.direct_.predict(X)]))
        mean = np.exp(logs.mean(axis=0))
        return (mean, logs.std(axis=0)) if return_std else mean

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        specs, arrays = nest_states([*self.sources_, self.shared_, self.direct_])
        arrays["coarse"] = self.coarse_
        return {"members": specs, "n_sources": len(self.sources_)}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "TransferModel":
        models = unnest_states(params["members"], {k: v for k, v in arrays.items() if k != "coarse"})
        model = cls()
        n = params["n_sources"]
        model.sources_, model.shared_, model.direct_ = models[:n], models[n], models[n + 1]
        model.coarse_ = arrays["coarse"]
        return model
