"""Export a found architecture: weights (safetensors), a verified ONNX graph, a model card,
a loader that needs no pickle, and fine-tuning.

    from nas.export import export_arch, load, finetune
    export_arch("tiny_mbconv", arch, "out/", supernet="runs/supernet")   # -> Path("out/")
    model = load("out/")                                                # a plain torch nn.Module
    finetune("out/", data="digits", epochs=5)                           # -> final accuracy, card updated

Names load on first use so that `hwnas` commands that never export do not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"export_arch": "nas.export.export", "load": "nas.export.loader", "finetune": "nas.export.finetuning",
            "read_card": "nas.export.card", "check_budgets": "nas.export.budgets"}
__all__ = ["check_budgets", "export_arch", "finetune", "load", "read_card"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
