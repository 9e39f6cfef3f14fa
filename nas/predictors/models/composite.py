"""Models built from other models: a base times a learned correction, and ensembles.

`lut_residual` corrects a LUT: the prediction is the arch's LUT sum (a feature column)
times a ridge model of measured / LUT, so the learned part only has to explain what
isolated block timings miss (fusion, caches, per-inference overhead). `boosted` is the
same idea with the ridge model as the base and gradient-boosted trees fitting its
log residual: the linear model carries the additive structure, the trees the
interactions it cannot express. `ensemble` averages members in log space and reports
their spread as a per-prediction relative uncertainty.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from nas.predictors.models.base import MODELS, check_xy, nest_states, register, unnest_states
from nas.threads import one_thread
from nas.predictors.models.linear import GroupRidge
from nas.predictors.models.trees import GradientBoostedTrees


@register("lut_residual")
class LUTResidual(RegressorMixin, BaseEstimator):
    """measured ~= LUT sum x ridge(features); base_column is the LUT sum's column."""

    def __init__(self, base_column: int = 0, groups: Sequence[str] | None = None) -> None:
        self.base_column = base_column
        self.groups = groups

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> "LUTResidual":
        X, y = check_xy(X, y, positive=True)
        base = X[:, self.base_column]
        if np.any(base <= 0):
            raise ValueError("the LUT sum must be positive for every training arch")
        self.correction_ = GroupRidge(groups=self.groups).fit(X, y / base)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return X[:, self.base_column] * self.correction_.predict(X)

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        specs, arrays = nest_states([self.correction_])
        return {"base_column": self.base_column, "members": specs}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "LUTResidual":
        model = cls(base_column=params["base_column"])
        (model.correction_,) = unnest_states(params["members"], arrays)
        return model


@register("boosted")
class Boosted(RegressorMixin, BaseEstimator):
    """ridge(features) x exp(trees(features)): trees fit the ridge model's log residual."""

    def __init__(self, groups: Sequence[str] | None = None, random_state: int = 0) -> None:
        self.groups = groups
        self.random_state = random_state

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Boosted":
        X, y = check_xy(X, y, positive=True)
        self.base_ = GroupRidge(groups=self.groups).fit(X, y)
        self.correction_ = GradientBoostedTrees(n_estimators=200, random_state=self.random_state)
        self.correction_.fit(X, y / self.base_.predict(X))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.base_.predict(X) * self.correction_.predict(X)

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        specs, arrays = nest_states([self.base_, self.correction_])
        return {"members": specs}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "Boosted":
        model = cls()
        model.base_, model.correction_ = unnest_states(params["members"], arrays)
        return model


@register("ensemble")
class Ensemble(RegressorMixin, BaseEstimator):
    """Geometric mean of member models; predict(X, return_std=True) adds the standard
    deviation of the members' log predictions (0.05 reads as about +-5 %)."""

    def __init__(self, members: Sequence[str] = ("ridge", "boosted", "mlp"), groups: Sequence[str] | None = None,
                 random_state: int = 0) -> None:
        self.members = members
        self.groups = groups
        self.random_state = random_state

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Ensemble":
        from nas.predictors.models.factory import make_model

        X, y = check_xy(X, y, positive=True)
        unknown = [m for m in self.members if m not in MODELS or m == "ensemble"]
        if unknown or len(self.members) < 2:
            raise ValueError(f"an ensemble needs at least two member kinds from {sorted(MODELS)}, got {self.members}")
        self.models_ = [make_model(kind, self.groups, self.random_state + i).fit(X, y)
                        for i, kind in enumerate(self.members)]
        return self

    def predict(self, X: np.ndarray, return_std: bool = False):
        logs = np.log(np.stack([m.predict(X) for m in self.models_]))
        mean = np.exp(logs.mean(axis=0))
        return (mean, logs.std(axis=0)) if return_std else mean

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        specs, arrays = nest_states(self.models_)
        return {"members": specs}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "Ensemble":
        model = cls(members=tuple(spec["kind"] for spec in params["members"]))
        model.models_ = unnest_states(params["members"], arrays)
        return model
