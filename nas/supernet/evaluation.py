"""Accuracy of subnets with inherited weights, after batch-norm recalibration.

A supernet's BN running statistics mix every subnet it trained, so they fit none. Before
a subnet is scored its BN statistics are recomputed from a few hundred training
images (a forward pass in train mode, no gradients), as in Once-for-All and BigNAS.
The work happens on the extracted standalone module, leaving the supernet untouched,
and the calibration images are prepared once, so scoring a candidate during search
costs one extraction, one calibration pass and one evaluation pass.

An arch with int8 layers scores its quantized accuracy: after BN recalibration the module
is quantized (nas.quant: BN folded, activation ranges calibrated on the first
`quant.calib_images` images of the same seeded pick of training images) and the
QuantizedNet, which computes what onnxruntime's int8 model computes, is evaluated.
Float archs score exactly as before.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.data import ImageDataset
from nas.quant import QuantSettings, check_calibration
from nas.space.arch import Arch
from nas.space.layers import LayerSpec
from nas.supernet.supernet import Supernet


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images to the arch's input size (elastic resolution); a no-op at the stored size."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return channels_last(F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Image batches in channels-last layout: convolutions (oneDNN on CPU, cuDNN with
    mixed precision) run about 1.7x faster on it here than on the default layout."""
    return x.contiguous(memory_format=torch.channels_last)


@contextmanager
def recalibrating(model: nn.Module) -> Iterator[None]:
    """Inside: every BN of `model` reset to a cumulative average of the batches it sees
    (momentum None, train mode); after: its momentum back and eval mode. For callers that
    feed the batches themselves (pruning feeds only the layers after a change)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
    """Replace every BN's running statistics by their average over `images` (cumulative
    average, momentum None), then leave the model in eval mode."""
    with recalibrating(model):
        for chunk in images.split(batch_size):
            model(chunk)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Top-1 accuracy (0..1) of `model` in eval mode."""
    model.eval()
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(labels))


class RecalibratedScorer:
    """Scores modules on one split of a dataset after recalibrating their batch norms.

    The calibration images are the first `calib_images` of a seeded permutation of the
    training split (no augmentation), the same for every module so scores are
    comparable: an arch's supernet-inherited weights and the same arch trained alone
    are measured by one protocol.
    """

    def __init__(self, data: ImageDataset, split: str = "val", calib_images: int = 256, batch_size: int = 256,
                 seed: int = 0, device: torch.device | None = None, quant: QuantSettings | None = None) -> None:
        self.batch_size = batch_size
        self.device = device or torch.device("cpu")
        self.quant = quant or QuantSettings()
        order = np.random.default_rng([seed, 0xCA1]).permutation(len(data.train))
        self._calib = self._prepare(data, data.train.images[torch.as_tensor(order[:calib_images])])
        self._quant_pick = (data, order[:self.quant.calib_images])  # prepared when an int8 arch is scored
        self._quant: torch.Tensor | None = None
        target = data.split(split)
        self._images = self._prepare(data, target.images)
        self.labels = target.labels.to(self.device)
        self._sized: dict[tuple[str, int], torch.Tensor] = {}

    def _prepare(self, data: ImageDataset, images: torch.Tensor) -> torch.Tensor:
        return channels_last(data.normalize(data.to_float(images.to(self.device))))

    def _at(self, which: str, resolution: int) -> torch.Tensor:
        key = (which, resolution)
        if key not in self._sized:
            source = {"calib": self._calib, "eval": self._images}.get(which)
            self._sized[key] = resize(self._quant_images() if source is None else source, resolution)
        return self._sized[key]

    def _quant_images(self) -> torch.Tensor:
        """The quantization calibration images, prepared on first use (float runs need none)."""
        if self._quant is None:
            data, pick = self._quant_pick
            check_calibration(self.quant, len(pick))
            self._quant = self._prepare(data, data.train.images[torch.as_tensor(pick)])
        return self._quant

    def score(self, net: nn.Module, resolution: int, layers: Sequence[LayerSpec] | None = None) -> float:
        """Top-1 accuracy (0..1) of `net` at input size `resolution`, after replacing its BN
        statistics in place (pass a copy to keep the original's); `net` ends in eval mode.
        With the arch's `layers` and any of them int8, the accuracy of its int8 deployment."""
        recalibrate_bn(net, self._at("calib", resolution), self.batch_size)
        if layers is not None and any(s.precision == "int8" for s in layers):
            net = self.quantized(net, resolution, layers)
        return accuracy(net, self._at("eval", resolution), self.labels, self.batch_size)

    def images(self, which: str, resolution: int) -> torch.Tensor:
        """The prepared images at `resolution`: "calib" (BN recalibration), "quant"
        (quantization calibration) or "eval" (the scored split, labels in `self.labels`)."""
        return self._at(which, resolution)

    def quantized(self, net: nn.Module, resolution: int, layers: Sequence[LayerSpec]) -> nn.Module:
        """The int8 deployment of a recalibrated `net` (nas.quant), calibrated on this
        scorer's quantization images. Imported here: the quantizer pulls in onnx, which a
        float-only training run and each of its data-parallel workers need not load."""
        from nas.quant import quantize

        return quantize(net, layers, self._at("quant", resolution), self.quant)


class SubnetEvaluator(RecalibratedScorer):
    """Scores archs of a supernet: each is extracted (a copy, so the supernet is left
    untouched), its BN recalibrated, then evaluated."""

    def __init__(self, supernet: Supernet, data: ImageDataset, split: str = "val", calib_images: int = 256,
                 batch_size: int = 256, seed: int = 0, device: torch.device | None = None,
                 quant: QuantSettings | None = None) -> None:
        self.supernet = supernet
        super().__init__(data, split, calib_images, batch_size, seed, device or next(supernet.parameters()).device,
                         quant)

    def accuracy(self, arch: Arch) -> float:
        """Top-1 accuracy (0..1) of `arch` with inherited weights after BN recalibration
        (its int8 deployment's when it has int8 layers)."""
        space = self.supernet.space
        return self.score(self.supernet.extract(arch), space.resolution(arch), space.layers(arch))
