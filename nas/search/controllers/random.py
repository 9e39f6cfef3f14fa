"""Random search over feasible networks: the baseline every controller must beat.

Candidates are uniform over the space's codes, filtered on the cheap budgets, so the
budget is spent only on archs that meet them (the strongest form of random search).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from nas.search.controllers.base import AskTellController, ControllerSettings


class RandomSettings(ControllerSettings):
    name: Literal["random"] = "random"


class RandomSearch(AskTellController):
    name = "random"
    Settings = RandomSettings

    def ask(self, n: int) -> np.ndarray:
        codes, _ = self.random_candidates(n)
        return codes
