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


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads contending with
    other work made training about 30x slower (186 s instead of 5.4 s for the micro run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
