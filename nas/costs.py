"""One cost interface: every cost source answers `predict(archs) -> np.ndarray`.

A cost model names its metric and unit and scores a batch of archs of one space at
once (archs as Arch objects or as an N x D code matrix). Sources that can also give the
expected cost under per-decision probabilities as a differentiable torch expression
implement `expected(probs)`; gradient-based controllers use that as a penalty while
sampling controllers use `predict` as a filter. `interval(archs, level)` bounds the
true value at a confidence level: exact sources return the value twice, learned ones
a calibrated interval (nas.predictors.intervals), others say they have none.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nas.errors import NasError
from nas.space.arch import Arch
from nas.space.base import SearchSpace

if TYPE_CHECKING:
    import torch

COUNTER_UNITS = {"params": "count", "macs": "count", "peak_activation_bytes": "bytes", "weight_bytes": "bytes"}


def as_codes(space: SearchSpace, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
    """An N x D code matrix from archs or from codes already."""
    if isinstance(archs, np.ndarray):
        codes = np.atleast_2d(archs).astype(np.int64, copy=False)
        if codes.shape[1] != len(space.decisions):
            raise NasError(f"codes have {codes.shape[1]} columns; space {space.name} has {len(space.decisions)} decisions")
        return codes
    return space.encode_batch(list(archs))


class CostModel(ABC):
    """A named metric with a unit, predicted for batches of archs of one space."""

    metric: str
    unit: str
    space: SearchSpace

    @abstractmethod
    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        """One value per arch, as float64."""

    def expected(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected cost under independent per-decision choice probabilities."""
        raise NasError(f"{type(self).__name__} ({self.metric}) has no differentiable expectation")

    def interval(self, archs: Sequence[Arch] | np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds that hold the true value with probability `level`."""
        raise NasError(f"{type(self).__name__} ({self.metric}) gives no interval at a confidence level; "
                       "use a predictor file (hwnas predictor fit) for this cost")

    def describe(self) -> dict:
        return {"metric": self.metric, "unit": self.unit, "space": self.space.name, "source": type(self).__name__}


class CounterCost(CostModel):
    """An exact analytic counter (params, macs, peak_activation_bytes, weight_bytes)."""

    def __init__(self, space: SearchSpace, metric: str, resolution: int | None = None, dtype: str = "float32") -> None:
        self.space, self.metric = space, metric
        self.unit = COUNTER_UNITS.get(metric, "")
        self.table = space.table(metric, resolution, dtype)

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        return self.table(as_codes(self.space, archs))

    def expected(self, probs):
        return self.table.expected(probs)

    def interval(self, archs, level: float = 0.9):
        from nas.predictors.intervals import check_level

        check_level(level)
        values = self.predict(archs)
        return values, values.copy()  # counted, not estimated
