"""Model kinds by name, constructed with the feature groups and seed they take."""
from __future__ import annotations

import inspect
from collections.abc import Sequence

from nas.errors import NasError, closest
from nas.predictors.models.base import MODELS


def make_model(kind: str, groups: Sequence[str] | None = None, seed: int = 0, **params):
    """A fresh, unfitted model of a registered kind."""
    if kind not in MODELS:
        raise NasError(f"unknown model {kind!r}{closest(kind, MODELS)}; known: {', '.join(sorted(MODELS))}")
    cls = MODELS[kind]
    accepted = inspect.signature(cls.__init__).parameters
    if "groups" in accepted:
        params.setdefault("groups", list(groups) if groups is not None else None)
    if "random_state" in accepted:
        params.setdefault("random_state", seed)
    return cls(**params)
