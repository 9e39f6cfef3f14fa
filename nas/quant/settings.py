"""How a network is quantized after training: the calibration method and its data.

A `quant:` section of a supernet training config (nas.supernet.config.TrainSettings), read
wherever `calib_images` is: the accuracy oracle of search, `export --supernet`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from nas.config import Section

# The fewest calibration images each method accepts. min/max is defined by any one image;
# a histogram threshold (percentile, entropy) fitted to a handful of images is a fit to
# those images' content, not to the activation distribution it stands for.
MIN_IMAGES = {"minmax": 1, "percentile": 32, "entropy": 32}


class QuantSettings(Section):
    """Post-training quantization, as onnxruntime's quantize_static calibrates.

    method       minmax (the global min and max), percentile (the central `percentile` % of
                 a 2048-bin histogram) or entropy (the KL-optimal symmetric threshold over a
                 512-bin histogram): quantize_static's MinMax, Percentile and Entropy
                 calibrators (nas.quant.calibrate)
    calib_images training images the ranges are calibrated on ("a few hundred"; the same
                 seeded pick as batch-norm recalibration)
    percentile   the percentile method's coverage
    reduce_range int8 weights in [-64, 64] instead of [-127, 127]: a device setting for x86
                 without VNNI (nas.hardware.devices' `reduce_range`)
    """

    key_word = "setting"

    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    calib_images: int = Field(256, ge=1)
    percentile: float = Field(99.999, gt=50, le=100)
    reduce_range: bool = False
