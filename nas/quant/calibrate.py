"""Activation ranges and their uint8 scales, computed as quantize_static computes them.

The range observers and the scale formula are onnxruntime's own public code
(`onnxruntime.quantization.calibrate.HistogramCollector`, `quant_utils.compute_scale_zp`),
so a range means here what it means to the runtime's tooling. min/max is the global min
and max over all calibration batches (MinMax without moving average). The histogram
methods are fed batch by batch through the collector's own histogram merge: quantize_static
collects every batch first and builds one histogram, which needs every activation of every
calibration image in memory at once; the two agree when the calibration set is one batch.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from nas.errors import NasError
from nas.quant.settings import MIN_IMAGES, QuantSettings

# Histogram bins: PercentileCalibrater's default (2048). EntropyCalibrater's default of 128
# bins for 128 quantized bins leaves its KL search one candidate, the whole histogram, i.e.
# min/max; 512 bins (its `num_bins` option) give it 193 thresholds to choose from at a cost
# of about 0.1 s per tensor (the search is onnxruntime's Python loop).
HISTOGRAM_BINS = {"entropy": 512, "percentile": 2048}
QUANTIZED_BINS = 128


def check_calibration(settings: QuantSettings, images: int) -> None:
    """Refuse calibration data too small for the method (one line naming both)."""
    need = MIN_IMAGES[settings.method]
    if images < need:
        raise NasError(f"calibration method {settings.method} needs at least {need} calibration images, got {images}")


class RangeObserver:
    """Collects the range of each named activation tensor over calibration batches."""

    def __init__(self, settings: QuantSettings) -> None:
        self.method = settings.method
        self.minmax: dict[str, tuple[float, float]] = {}
        self.collector = None
        if self.method != "minmax":
            from onnxruntime.quantization.calibrate import HistogramCollector
            self.collector = HistogramCollector(method=self.method, symmetric=False,
                                                num_bins=HISTOGRAM_BINS[self.method],
                                                num_quantized_bins=QUANTIZED_BINS,
                                                percentile=settings.percentile, scenario="same")

    def observe(self, name: str, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, np.float32)
        if self.collector is None:
            lo, hi = float(values.min()), float(values.max())
            old = self.minmax.get(name)
            self.minmax[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # the collector prints its progress
                self.collector.collect({name: [values]})

    def ranges(self) -> dict[str, tuple[np.float32, np.float32]]:
        """name -> (rmin, rmax) as float32, the calibrator's result."""
        if self.collector is None:
            return {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in self.minmax.items()}
        if not self.collector.histogram_dict:
            return {}
        with contextlib.redirect_stdout(io.StringIO()):
            found = self.collector.compute_collection_result()
        return {k: (np.float32(v[0]), np.float32(v[1])) for k, v in found.items()}


def activation_qparams(rmin: np.float32, rmax: np.float32) -> tuple[float, int]:
    """uint8 asymmetric (scale, zero point) of a range: quantize_static's formula (the range
    is widened to hold 0, scale = (rmax - rmin) / 255 in float64 stored as float32,
    zp = round(-rmin / scale))."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp
    zp, scale = compute_scale_zp(np.array(rmin, np.float32), np.array(rmax, np.float32),
                                 np.array(0, np.uint8), np.array(255, np.uint8))
    return float(np.float32(scale)), int(zp)
