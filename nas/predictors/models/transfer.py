"""The few-shot transfer model: fixed pretrained source models and adapted heads.

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
    """Pretrained source models (fixed) + heads fitted by fit(X, y) on K rows, averaged
    in log space:

      shared  ridge over the source predictions, their logs and the coarse features
      direct  the group ridge on the features alone
      mix     ridge of log y over the log source predictions alone: the target as a
              power-law mix of known devices, nothing learned from the K rows' features
    """

    HEADS = ("shared", "direct", "mix")

    def __init__(self, sources: Sequence | None = None, groups: Sequence[str] | None = None,
                 heads: Sequence[str] = ("shared", "direct")) -> None:
        self.sources = sources
        self.groups = groups
        self.heads = heads

    def source_predictions(self, X: np.ndarray) -> np.ndarray:
        """N x S: each pretrained source model's prediction of the rows."""
        return np.stack([m.predict(X) for m in self.sources_], axis=1)

    def _shared_features(self, X: np.ndarray, Z: np.ndarray | None) -> np.ndarray:
        Z = self.source_predictions(X) if Z is None else np.asarray(Z, dtype=np.float64)
        return np.hstack([Z, np.log(Z), X[:, self.coarse_]])

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray, Z: np.ndarray | None = None) -> "TransferModel":
        """Z: the source models' predictions of X when already computed (the
        leave-one-device-out benchmark predicts every source once for all its folds)."""
        X, y = check_xy(X, y, positive=True)
        if not self.sources and Z is None:
            raise ValueError("transfer needs at least one pretrained source model")
        self.sources_ = list(self.sources or [])
        n_sources = len(self.sources_) if Z is None else np.shape(Z)[1]
        groups = list(self.groups) if self.groups is not None else ["net"] * X.shape[1]
        self.coarse_ = np.array([i for i, g in enumerate(groups) if g in COARSE], dtype=np.int64)
        unknown = [h for h in self.heads if h not in self.HEADS]
        if unknown or not self.heads:
            raise ValueError(f"heads must be some of {self.HEADS}, got {self.heads}")
        self.heads_ = tuple(self.heads)
        self.models_ = {}
        for head in self.heads_:
            if head == "shared":
                shared_groups = ["net"] * (2 * n_sources) + ["layer"] * len(self.coarse_)
                self.models_[head] = GroupRidge(groups=shared_groups).fit(self._shared_features(X, Z), y)
            elif head == "direct":
                self.models_[head] = GroupRidge(groups=groups).fit(X, y)
            else:
                self.models_[head] = GroupRidge(loss="log").fit(self._mix_features(X, Z), y)
        return self

    def _mix_features(self, X: np.ndarray, Z: np.ndarray | None) -> np.ndarray:
        return np.log(self.source_predictions(X) if Z is None else np.asarray(Z, dtype=np.float64))

    def head_predictions(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """H x N: each head's prediction."""
        X = np.asarray(X, dtype=np.float64)
        if Z is None and any(h != "direct" for h in self.heads_):
            Z = self.source_predictions(X)
        inputs = {"shared": lambda: self._shared_features(X, Z), "direct": lambda: X,
                  "mix": lambda: self._mix_features(X, Z)}
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
