"""Tree ensembles: scikit-learn grows them, plain arrays predict with them.

After fitting, every tree is copied into flat arrays (feature, threshold, children,
leaf value; leaves point to themselves) and the sklearn objects are dropped. Prediction
walks all trees at once, one level per step, over row chunks; files store exactly those
arrays, so a loaded model predicts bit for bit as the fitted one did. Comparisons follow
scikit-learn: features are rounded to float32, thresholds stay float64, and x <= t goes
left. Both models fit log y: trees predict piecewise constants, and a constant error in
log space is a constant relative error.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

from nas.predictors.models.base import check_xy, register
from nas.threads import one_thread

CHUNK = 4096


class TreeArrays:
    """Trees as flat arrays with per-tree root offsets; prediction is the sum over trees."""

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
                 value: np.ndarray, roots: np.ndarray, depth: int) -> None:
        self.feature, self.threshold, self.left, self.right = feature, threshold, left, right
        self.value, self.roots, self.depth = value, roots, depth

    @classmethod
    def from_sklearn(cls, trees: list) -> "TreeArrays":
        parts = {k: [] for k in ("feature", "threshold", "left", "right", "value")}
        roots, offset, depth = [], 0, 0
        for tree in trees:
            t = tree.tree_
            leaf = t.children_left < 0
            own = np.arange(t.node_count)
            parts["feature"].append(np.where(leaf, 0, t.feature).astype(np.int64))
            parts["threshold"].append(np.where(leaf, np.inf, t.threshold).astype(np.float64))
            parts["left"].append(np.where(leaf, own, t.children_left).astype(np.int64) + offset)
            parts["right"].append(np.where(leaf, own, t.children_right).astype(np.int64) + offset)
            parts["value"].append(t.value.reshape(t.node_count).astype(np.float64))
            roots.append(offset)
            offset += t.node_count
            depth = max(depth, int(t.max_depth))
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(**arrays, roots=np.array(roots, dtype=np.int64), depth=depth)

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """N x T: the leaf value each row reaches in each tree."""
        X = np.asarray(X, dtype=np.float32)
        out = np.empty((len(X), len(self.roots)))
        for start in range(0, len(X), CHUNK):
            x = X[start:start + CHUNK]
            rows = np.arange(len(x))[:, None]
            node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
            for _ in range(self.depth):
                go_left = x[rows, self.feature[node]] <= self.threshold[node]
                node = np.where(go_left, self.left[node], self.right[node])
            out[start:start + CHUNK] = self.value[node]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"feature": self.feature, "threshold": self.threshold, "left": self.left, "right": self.right,
                "value": self.value, "roots": self.roots}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], depth: int) -> "TreeArrays":
        return cls(arrays["feature"], arrays["threshold"], arrays["left"], arrays["right"], arrays["value"],
                   arrays["roots"], depth)


class _TreeModel(RegressorMixin, BaseEstimator):
    """Shared persistence and prediction: log y = offset + scale x sum of leaf values."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self.offset_ + self.scale_ * self.trees_.leaf_values(X).sum(axis=1))

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"offset": self.offset_, "scale": self.scale_, "depth": self.trees_.depth}, self.trees_.arrays()

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "_TreeModel":
        model = cls()
        model.offset_, model.scale_ = params["offset"], params["scale"]
        model.trees_ = TreeArrays.from_arrays(arrays, params["depth"])
        return model


@register("gbt")
class GradientBoostedTrees(_TreeModel):
    """Gradient-boosted regression trees on log y (shallow trees, row and column subsampling)."""

    def __init__(self, n_estimators: int = 300, max_depth: int = 3, learning_rate: float = 0.05,
                 subsample: float = 0.8, max_features: float = 0.3, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.max_features = max_features
        self.random_state = random_state

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> "GradientBoostedTrees":
        X, y = check_xy(X, y, positive=True)
        gbr = GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                        learning_rate=self.learning_rate, subsample=self.subsample,
                                        max_features=self.max_features, random_state=self.random_state)
        gbr.fit(X, np.log(y))
        self.trees_ = TreeArrays.from_sklearn([t[0] for t in gbr.estimators_])
        self.offset_ = float(np.asarray(gbr.init_.constant_).ravel()[0])
        self.scale_ = float(self.learning_rate)
        return self


@register("forest")
class RandomForest(_TreeModel):
    """A random forest on log y; depth is capped so prediction stays a bounded walk."""

    def __init__(self, n_estimators: int = 100, max_depth: int = 14, max_features: float = 0.5,
                 min_samples_leaf: int = 1, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    @one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> "RandomForest":
        X, y = check_xy(X, y, positive=True)
        forest = RandomForestRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                       max_features=self.max_features, min_samples_leaf=self.min_samples_leaf,
                                       random_state=self.random_state, n_jobs=1)
        forest.fit(X, np.log(y))
        self.trees_ = TreeArrays.from_sklearn(list(forest.estimators_))
        self.offset_ = 0.0
        self.scale_ = 1.0 / len(forest.estimators_)
        return self
