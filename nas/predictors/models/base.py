"""What every predictor model shares: input checks and a registry of model kinds.

Models follow scikit-learn's conventions (constructor arguments are hyperparameters,
fit(X, y) returns self, fitted state ends in '_', predict(X) returns an array) and
add to_state()/from_state(): plain JSON-able parameters plus named numpy arrays. A
predictor file names its model kind; loading looks the kind up in this registry, so
only these classes can ever be built from a file, and nothing in a file is executed.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

MODELS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        MODELS[name] = cls
        cls.kind = name
        return cls

    return add


def check_xy(X: np.ndarray, y: np.ndarray, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float64 copies of a feature matrix and target vector that fit together."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"X must be N x F and y of length N, got {X.shape} and {y.shape}")
    if len(y) < 2:
        raise ValueError("need at least 2 training rows")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    if positive and np.any(y <= 0):
        raise ValueError("this model fits relative error and needs a positive target")
    return X, y


def model_state(model) -> tuple[dict, dict[str, np.ndarray]]:
    """({"kind", "params"}, arrays) of a fitted model: what a predictor file stores."""
    params, arrays = model.to_state()
    return {"kind": model.kind, "params": params}, arrays


def build_model(spec: dict, arrays: dict[str, np.ndarray]):
    """The model a stored state describes; only registered kinds can be built."""
    from nas.errors import NasError

    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in MODELS:
        raise NasError(f"unknown model kind {kind!r} in predictor file; known: {', '.join(sorted(MODELS))}")
    return MODELS[kind].from_state(spec["params"], arrays)


def nest_states(models) -> tuple[list[dict], dict[str, np.ndarray]]:
    """States of sub-models, their arrays prefixed 'i/' so one flat namespace holds them."""
    specs, arrays = [], {}
    for i, model in enumerate(models):
        spec, sub = model_state(model)
        specs.append(spec)
        arrays.update({f"{i}/{name}": value for name, value in sub.items()})
    return specs, arrays


def unnest_states(specs: list[dict], arrays: dict[str, np.ndarray]) -> list:
    return [build_model(spec, {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{i}/")})
            for i, spec in enumerate(specs)]
