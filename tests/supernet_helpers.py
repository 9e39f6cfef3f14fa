"""A micro chain space that trains in seconds, and one torch thread for training tests."""
from __future__ import annotations

import pytest
import torch


def micro_space_yaml(name: str) -> str:
    """Two elastic stages at 12-16 px: every kind of decision, a few seconds per epoch."""
    return f"""\
name: {name}
input: {{channels: 3, resolution: [12, 16]}}
classes: 10
defaults: {{act: relu}}
stem: [{{op: conv, out: 8, kernel: 3, stride: 2}}]
stages:
  - {{depth: [1, 2], width: [8, 12], stride: 1, block: {{kernel: [3, 5], expand: [2, 3], se: [0, 0.25]}}}}
  - {{depth: [1, 2], width: [16, 24], stride: 2, block: {{kernel: [3, 5], expand: [2, 4]}}}}
head: [{{op: conv, out: 32, kernel: 1}}, {{op: gap}}, {{op: linear, out: classes, act: none}}]
"""


def micro_int8_yaml(name: str) -> str:
    """The micro space with a precision decision (fp32 or int8) per stem, stage and head layer."""
    return f"""\
name: {name}
input: {{channels: 3, resolution: [12, 16]}}
classes: 10
defaults: {{act: relu}}
stem: [{{op: conv, out: 8, kernel: 3, stride: 2, precision: [fp32, int8]}}]
stages:
  - {{depth: [1, 2], width: [8, 12], stride: 1,
     block: {{kernel: [3, 5], expand: [2, 3], se: [0, 0.25], precision: {{choices: [fp32, int8], per: stage}}}}}}
  - {{depth: [1, 2], width: [16, 24], stride: 2,
     block: {{kernel: [3, 5], expand: [2, 4], precision: {{choices: [fp32, int8], per: stage}}}}}}
head: [{{op: conv, out: 32, kernel: 1, precision: [fp32, int8]}}, {{op: gap, precision: [fp32, int8]}},
       {{op: linear, out: classes, act: none, precision: [fp32, int8]}}]
"""


def with_precision(space, seed: int, precision: str):
    """Arch `seed` of `space` with every precision decision set to `precision`."""
    names = [d.name for d in space.decisions if d.name.endswith("precision")]
    return space.arch({**dict(space.sample(seed)), **{n: precision for n in names}})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads contending with
    other work made training about 30x slower (186 s instead of 5.4 s for the micro run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
