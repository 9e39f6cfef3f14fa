"""Hardware-aware compression after search: LUT-driven channel pruning of an export to
device budgets (NetAdapt-style rounds), distillation from the parent, verified export.

    from nas.prune import prune_export
    prune_export("out/", ["latency@local-cpu <= 0.2 ms"], "pruned/", data="digits")
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "prune_export":
        from nas.prune.prune import prune_export

        return prune_export
    raise AttributeError(f"module 'nas.prune' has no attribute {name!r}")
