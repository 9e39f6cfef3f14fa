"""A dataset ready for training: train/val/test splits at the network's input size.

Images stay uint8 in memory (CIFAR-10 at 32 px is 180 MB that way) and become
normalised floats one batch at a time. Splits the source does not define are cut
from its training part with a stratified, seeded permutation, so every run (and
every process of a distributed run) sees the same split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nas.data.sources import LabelledImages, read_source
from nas.errors import DataError, NasError


@dataclass(frozen=True)
class ImageDataset:
    name: str
    classes: int
    resolution: int
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    mean: torch.Tensor  # per channel, of the training images in 0..1
    std: torch.Tensor

    def split(self, name: str) -> LabelledImages:
        if name not in ("train", "val", "test"):
            raise NasError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, name)

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> floats in 0..1 (augmentation works on these)."""
        return images.float().div_(255.0)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Floats in 0..1 -> zero mean, unit variance per channel (train statistics)."""
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)
        return (images - mean) / std


def load_dataset(source: str, resolution: int, channels: int = 3, *, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0, noise: float = 0.0,
                 classes: int | None = None) -> ImageDataset:
    """Read `source` ('digits' or a path), resize to `resolution`, match `channels`, split.

    test_fraction: share of all images held out as test when the source has no test split.
    val_fraction: share of the remaining training images held out for validation (search
    and per-epoch reports use it; the test split is for final figures only).
    noise: standard deviation (in 0..1 pixel units) of Gaussian noise added once, with a
    fixed seed, to every image of every split: a harder, still deterministic task.
    classes: the network's number of outputs; a label beyond them is refused here, before
    any training starts (cross-entropy would fail on it mid-run).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise NasError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    if noise < 0:
        raise NasError(f"noise must not be negative, got {noise}")
    raw = read_source(source, resolution)
    top = max(int(s.labels.max()) for s in raw.splits.values())
    if classes is not None and top >= classes:
        raise DataError(f"dataset {source}: label {top} is out of range for a network with {classes} classes "
                        f"(labels must be 0..{classes - 1})")
    rng = np.random.default_rng([split_seed, 0x5B1])
    splits = dict(raw.splits)
    if "test" not in splits:
        splits["train"], splits["test"] = _stratified(splits["train"], test_fraction, rng, raw.name)
    if "val" not in splits:
        splits["train"], splits["val"] = _stratified(splits["train"], val_fraction, rng, raw.name)
    noise_rng = np.random.default_rng([split_seed, 0x401])
    ready = {k: _prepare(v, resolution, channels, noise, noise_rng) for k, v in sorted(splits.items())}
    mean, std = _channel_stats(ready["train"].images)
    classes = max(raw.classes, *(int(s.labels.max()) + 1 for s in ready.values()))
    return ImageDataset(raw.name, classes, resolution, ready["train"], ready["val"], ready["test"], mean, std)


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in 0..1, accumulated in chunks (a float copy of a large
    training set would not fit in memory)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    square = torch.zeros_like(total)
    for start in range(0, len(images), 4096):
        x = images[start:start + 4096].double().div_(255.0)
        total += x.sum((0, 2, 3))
        square += x.square().sum((0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (square / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-3)


def _stratified(data: LabelledImages, fraction: float, rng: np.random.Generator,
                name: str) -> tuple[LabelledImages, LabelledImages]:
    """(rest, held out) with `fraction` of every class held out (at least one image each)."""
    labels = data.labels.numpy()
    keep, held = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        cut = max(1, round(fraction * len(index))) if len(index) > 1 else 0
        held.append(index[:cut])
        keep.append(index[cut:])
    held_index, keep_index = np.sort(np.concatenate(held)), np.sort(np.concatenate(keep))
    if len(held_index) == 0 or len(keep_index) == 0:
        raise NasError(f"dataset {name}: {len(labels)} images are too few to split off {fraction:.0%}")
    return data.subset(keep_index), data.subset(held_index)


def _prepare(data: LabelledImages, resolution: int, channels: int, noise: float,
             rng: np.random.Generator) -> LabelledImages:
    """Match channels (grey -> copies, colour -> grey by mean), resize, add the fixed noise."""
    images = data.images
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
        else:
            raise NasError(f"images have {images.shape[1]} channels; the network takes {channels}")
    if images.shape[-1] == resolution and images.shape[-2] == resolution and noise == 0:
        return LabelledImages(images.contiguous(), data.labels)
    out = []
    for start in range(0, len(images), 1024):
        x = images[start:start + 1024].float().div_(255.0)
        if x.shape[-2:] != (resolution, resolution):
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                              antialias=bool(x.shape[-1] > resolution))
        if noise:
            x = x + noise * torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32))
        out.append(x.clamp_(0, 1).mul_(255).round_().to(torch.uint8))
    return LabelledImages(torch.cat(out), data.labels)
