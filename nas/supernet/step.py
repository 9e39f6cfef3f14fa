"""The loss of one micro-batch over all subnets of a step, as one module call.

Under the sandwich rule the first subnet is the largest: it learns from the labels
(with label smoothing) and the others learn from its soft predictions (inplace
distillation, BigNAS). All subnets run in one forward so that one backward follows:
DistributedDataParallel then sees every parameter the step uses in a single graph
(with one forward and backward per subnet, parameters that only earlier subnets used
would escape its gradient averaging).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.space.arch import Arch
from nas.supernet.evaluation import resize
from nas.supernet.tasks import Task


class SubnetsStep(nn.Module):
    """Wraps a task's module; set `archs` before calling it on (images, labels)."""

    def __init__(self, task: Task, label_smoothing: float, temperature: float, autocast: dict) -> None:
        super().__init__()
        self.model = task.model
        self.task = task
        self.label_smoothing, self.temperature, self.autocast = label_smoothing, temperature, autocast
        self.archs: list[Arch] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed loss of all subnets, first subnet's loss, first subnet's logits), the
        last two detached, for progress reports."""
        total, soft = torch.zeros((), device=x.device), None
        for i, arch in enumerate(self.archs):
            self.task.activate(arch)
            with torch.autocast(**self.autocast):
                logits = self.model(resize(x, self.task.space.resolution(arch))).float()
            if soft is None:
                loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            else:
                loss = distillation(logits, soft, self.temperature)
            if i == 0:
                first_loss, first_logits = loss.detach(), logits.detach()
                if self.task.distill:
                    soft = F.softmax(first_logits / self.temperature, dim=1)
            total = total + loss
        return total, first_loss, first_logits


def distillation(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence from the teacher's soft labels (scaled by T^2, as Hinton et al.)."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_p, soft, reduction="batchmean") * temperature**2
