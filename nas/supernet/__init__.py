"""Weight-sharing supernets: elastic chain supernets, the NB201 one-shot supernet, training
(sandwich rule, inplace distillation, progressive shrinking, DDP), BN recalibration and
the accuracy oracle for search.

Names load on first use, so `hwnas` commands that never touch a supernet do not pay for
importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Supernet": "nas.supernet.supernet", "TrainConfig": "nas.supernet.config", "load_config": "nas.supernet.config",
    "config_from_dict": "nas.supernet.config", "train": "nas.supernet.trainer",
    "SubnetEvaluator": "nas.supernet.evaluation", "RecalibratedScorer": "nas.supernet.evaluation",
    "recalibrate_bn": "nas.supernet.evaluation",
    "SupernetAccuracy": "nas.supernet.oracle", "load_supernet": "nas.supernet.oracle",
}
__all__ = ["RecalibratedScorer", "SubnetEvaluator", "Supernet", "SupernetAccuracy", "TrainConfig", "config_from_dict",
           "load_config", "load_supernet", "recalibrate_bn", "train"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.supernet' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
