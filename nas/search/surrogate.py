"""A Gaussian-process surrogate of an expensive metric, and acquisition functions.

When accuracy costs a query, the evolution controller breeds many more children than
it may evaluate and lets this surrogate pick the ones worth a query: expected
improvement for one objective, expected hypervolume improvement for a front. Inputs
are the project's LayerSpec-derived predictor features (nas.predictors.features) of
each arch's live structure (nas.search.equivalence), standardised over a sample of
the space. The GP is small on purpose: an RBF kernel whose length scale and noise are
picked by marginal likelihood on a grid, refitted in milliseconds on a few hundred
queries, deterministic given its data.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.special import ndtr

from nas.search.equivalence import function_codes
from nas.space.base import SearchSpace

LENGTH_SCALES = (0.1, 0.3, 1.0, 3.0)
NOISES = (1e-3, 1e-2, 3e-2, 0.1, 0.3)
MAX_CELLS = 20_000  # grid cells of the exact EHVI before falling back to ranking by the posterior mean


class Features:
    """codes -> standardised surrogate inputs (N x F), scaled so squared distances are O(1)."""

    def __init__(self, space: SearchSpace, feature_set: str = "coarse", seed: int = 0, reference: int = 4096) -> None:
        from nas.predictors.features import get_featurizer

        self.space = space
        self.featurizer = get_featurizer(space, feature_set)
        sample = self.featurizer.transform(function_codes(space, space.sample_codes(np.random.default_rng(seed), reference)))
        std = sample.std(axis=0)
        self.keep = std > 1e-12
        self.mean, self.scale = sample.mean(axis=0)[self.keep], std[self.keep] * np.sqrt(max(1, int(self.keep.sum())))

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        raw = self.featurizer.transform(function_codes(self.space, codes))
        return (raw[:, self.keep] - self.mean) / self.scale


class GaussianProcess:
    """GP regression with an RBF kernel on standardised targets; hyperparameters by
    maximum marginal likelihood over a small grid, or given (a refit between searches)."""

    def fit(self, X: np.ndarray, y: np.ndarray, hyper: tuple[float, float] | None = None) -> GaussianProcess:
        self.X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.y_mean) / self.y_std
        sq = _sqdist(self.X, self.X)
        best = None
        for length, noise in [hyper] if hyper is not None else itertools.product(LENGTH_SCALES, NOISES):
            K = np.exp(-sq / (2 * length**2)) + noise * np.eye(len(z))
            L = np.linalg.cholesky(K)
            alpha = cho_solve((L, True), z)
            loglik = -0.5 * z @ alpha - np.log(np.diag(L)).sum()
            if best is None or loglik > best[0]:
                best = (loglik, length, noise, L, alpha)
        _, self.length, self.noise, self._L, self._alpha = best
        return self

    @property
    def hyper(self) -> tuple[float, float]:
        return self.length, self.noise

    def predict(self, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of a new observation (observation noise included:
        a twin of a queried arch still has the spread its twins showed)."""
        Ks = np.exp(-_sqdist(np.asarray(Xs, dtype=np.float64), self.X) / (2 * self.length**2))
        mean = Ks @ self._alpha
        v = solve_triangular(self._L, Ks.T, lower=True)
        var = np.clip(1.0 + self.noise - np.einsum("ij,ij->j", v, v), 1e-12, None)
        return mean * self.y_std + self.y_mean, np.sqrt(var) * self.y_std


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0, None)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: np.ndarray | float) -> np.ndarray:
    """E[max(0, best - Y)] for Y ~ N(mean, std) (minimisation); the plain improvement where std is 0."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    gap = np.asarray(best, dtype=np.float64) - mean
    safe = np.where(std > 0, std, 1.0)
    z = gap / safe
    ei = gap * ndtr(z) + safe * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return np.where(std > 0, np.maximum(ei, 0.0), np.maximum(gap, 0.0))


def probability_below(mean: np.ndarray, std: np.ndarray, bound: float) -> np.ndarray:
    """P(Y <= bound) for Y ~ N(mean, std)."""
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, ndtr((bound - mean) / safe), (mean <= bound).astype(np.float64))


def expected_hvi(mean: np.ndarray, std: np.ndarray, known: np.ndarray, front: np.ndarray,
                 ref: np.ndarray) -> np.ndarray | None:
    """Expected hypervolume improvement (minimisation) of candidates whose first objective
    is uncertain (mean, std) and whose other objectives (`known`, N x k) are exact.

    For a candidate at known coordinates x0, the new dominated region at x >= x0 spans
    [a, G(x)] in the first objective, G(x) being the best first objective of the front
    among points at or below x; G is constant on the cells of the grid the front's
    coordinates cut, so the expectation is a sum of expected improvements, one per cell,
    weighted by the cell's volume. `front` holds the front's points (M x (1 + k)),
    `ref` the reference point. None when the grid is too large (many exact objectives).
    """
    k = known.shape[1]
    edges = [np.unique(np.concatenate([[-np.inf], front[:, 1 + j][front[:, 1 + j] < ref[1 + j]], [ref[1 + j]]]))
             for j in range(k)]
    cells = int(np.prod([len(e) - 1 for e in edges]))
    if cells > MAX_CELLS:
        return None
    total = np.zeros(len(mean))
    for index in itertools.product(*(range(len(e) - 1) for e in edges)):
        lo = np.array([edges[j][i] for j, i in enumerate(index)])
        hi = np.array([edges[j][i + 1] for j, i in enumerate(index)])
        below = np.all(front[:, 1:] <= lo, axis=1) if len(front) else np.zeros(0, dtype=bool)
        level = min(ref[0], front[below, 0].min()) if below.any() else ref[0]
        width = np.prod(np.clip(hi - np.maximum(known, lo), 0.0, None), axis=1)
        if not width.any():
            continue
        total += width * expected_improvement(mean, std, level)
    return total
