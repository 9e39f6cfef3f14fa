"""Optimizer and learning-rate schedule from the config.

The schedule is a function of the global step, not an object with state: a resumed
run recomputes the same rate for the same step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nas.supernet.config import OptimizerConfig, ScheduleConfig


_NO_DECAY = ("kernel_transforms", "pos_embed", "cls_token")  # parameter names (pos_embeds: the supernet's)


def make_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Weight decay on conv and linear weights only: batch- and layer-norm scales, biases,
    the kernel transformations (which start as the identity) and a transformer's class
    token and position embeddings (ViT's and DeiT's practice) are not pulled towards 0."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and not any(part in name for part in _NO_DECAY) else plain).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """The learning rate of global step `step` (0-based) of `total_steps`."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "step":
        return base_lr * cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    progress = (step - warmup) / max(1, total_steps - warmup)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
