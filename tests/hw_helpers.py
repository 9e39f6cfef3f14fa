"""Small spaces and a fast protocol for hardware tests (real onnxruntime, few repeats)."""
from __future__ import annotations

from nas.hardware.measure import Protocol
from nas.space.registry import space_from_dict

FAST = Protocol(warmup=1, repeats=6, rounds=2, passes=1)

SMALL_SPACE = {
    "name": "small",
    "input": {"channels": 3, "resolution": 16},
    "classes": 10,
    "stem": [{"op": "conv", "out": 8, "kernel": 3, "stride": 2}],
    "stages": [
        {"depth": [1, 2], "width": [8, 16], "stride": 1, "block": {"kernel": [3, 5], "expand": [1, 3]}},
        {"depth": [1, 2], "width": 16, "stride": 2, "block": {"kernel": 3, "expand": [3, 6], "se": [0, 0.25]}},
    ],
    "head": [{"op": "gap"}, {"op": "linear", "out": "classes"}],
}


def small_space(name: str = "small"):
    return space_from_dict({**SMALL_SPACE, "name": name}, f"{name}.yaml")


def micro_space_yaml(name: str, resolution: str = "16") -> str:
    """The space YAML of a one-stage micro space (export and pruning tests): seconds to
    profile, train a step and export; `resolution` as written in the YAML (e.g. "[12, 16]")."""
    return f"""\
name: {name}
input: {{channels: 3, resolution: {resolution}}}
classes: 10
defaults: {{act: relu}}
stem: [{{op: conv, out: 8, kernel: 3, stride: 2}}]
stages:
  - {{depth: [1, 2], width: [8, 12], stride: 1, block: {{kernel: [3, 5], expand: [2, 3], se: [0, 0.25]}}}}
head: [{{op: conv, out: 32, kernel: 1}}, {{op: gap}}, {{op: linear, out: classes, act: none}}]
"""
