"""Standard training augmentation on batched tensors: random crop with padding, flip, noise.

The random choices for a whole global batch are drawn first (`draw`) and applied to
any slice of it (`apply`), so a batch split over processes or accumulation steps is
augmented exactly as the same batch processed in one piece.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentDraw:
    """The random choices for a batch: crop offsets, flips and per-image noise."""

    dy: np.ndarray
    dx: np.ndarray
    flip: np.ndarray
    noise: np.ndarray | None

    def take(self, rows: slice) -> AugmentDraw:
        return AugmentDraw(self.dy[rows], self.dx[rows], self.flip[rows], None if self.noise is None else self.noise[rows])


@dataclass(frozen=True)
class Augment:
    """crop_padding: pixels of zero padding before a random crop back to size (0: none);
    flip: random horizontal flips; noise: std of Gaussian noise (0..1 pixel units)."""

    crop_padding: int = 0
    flip: bool = False
    noise: float = 0.0

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> AugmentDraw:
        n = shape[0]
        dy = rng.integers(0, 2 * self.crop_padding + 1, n)
        dx = rng.integers(0, 2 * self.crop_padding + 1, n)
        flip = rng.random(n) < 0.5 if self.flip else np.zeros(n, dtype=bool)
        noise = rng.standard_normal(shape, dtype=np.float32) * self.noise if self.noise else None
        return AugmentDraw(dy, dx, flip, noise)

    def apply(self, images: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        """Augment floats in 0..1 (N x C x H x W) with the choices in `draw` (N rows)."""
        x = images
        if self.crop_padding:
            p = self.crop_padding
            n, c, h, w = x.shape
            padded = F.pad(x, (p, p, p, p))
            rows = torch.as_tensor(draw.dy, device=x.device)[:, None] + torch.arange(h, device=x.device)
            cols = torch.as_tensor(draw.dx, device=x.device)[:, None] + torch.arange(w, device=x.device)
            padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))
            x = padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))
        if draw.flip.any():
            flip = torch.as_tensor(draw.flip, device=x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
        if draw.noise is not None:
            x = (x + torch.from_numpy(draw.noise).to(x.device)).clamp_(0, 1)
        return x
