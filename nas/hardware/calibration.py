"""End-to-end calibration of a LUT: what the sum of isolated blocks misses.

Each block was timed as its own model, so every LUT entry carries one inference's
fixed overhead and runs with its weights hot in cache, while a whole network pays the
overhead once and streams all its weights. A least-squares fit of

    measured = a x (sum of LUT entries) + b x (number of blocks)
               + sum over precisions p other than fp32 of b_p x (number of blocks at p)
               + c x (weight MB) + d

on a few measured archs captures both. The per-precision counts exist because a block's
fixed cost in isolation depends on how it is deployed: an int8 micro-model pays the
quantize/dequantize and layout changes at its own edges, which neighbouring int8 blocks
of a whole network share or cancel. Chosen on held-out halves of 200 archs measured in
8-9 passes, 30 archs fitted as a LUT build does: the int8 count took the held-out
residual from 3.9 % to 2.4 % and Kendall tau from 0.835 to 0.895 on ofa_mbv3_int8 at
128 px, and from 3.9 % to 3.2 % (tau 0.930 to 0.943) on tiny_mbconv_int8; counting
precision boundaries, int8 weight MB or activation MB apart bought little or nothing
(docs/benchmarks.md, issue 15). A count that does not vary (a float-only space: no
int8 blocks) is left out of the fit, so float LUTs calibrate exactly as before.

Every term is a sum over blocks, so the fit folds into one calibrated value per block
(plus d): calibrated prediction is still a single gather-and-sum, and still
differentiable.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from nas.errors import NasError
from nas.space.counters import layer_weight_bytes
from nas.space.layers import PRECISIONS, LayerSpec

BlockValue = Callable[[LayerSpec], float]


def block_features(lut_value: BlockValue) -> dict[str, BlockValue]:
    """The calibration features as per-block values (their sums over an arch's blocks)."""
    features: dict[str, BlockValue] = {"lut_sum": lut_value, "blocks": lambda s: 1.0}
    for precision in (p for p in PRECISIONS if p != "fp32"):  # fp32 blocks are the base count
        features[f"{precision}_blocks"] = lambda s, p=precision: float(s.precision == p)
    features["weight_mb"] = lambda s: layer_weight_bytes(s) * 1e-6  # at each block's precision
    return features


def fit_calibration(features: Mapping[str, np.ndarray], measured: np.ndarray) -> dict:
    """Coefficients per feature (0 for features left out) and an intercept.

    Features that do not vary are left out. When a few noisy archs make the full fit
    unphysical (end-to-end time falling as the LUT sum grows: the terms are
    correlated, and noise can trade one against another), the fit falls back to the
    LUT sum and the intercept alone; `used` says which features the fit kept.
    """
    y = np.asarray(measured, dtype=np.float64)
    names = list(features)
    varying = [f for f in names if np.ptp(features[f]) > 0]
    if len(y) < len(varying) + 2:
        raise NasError(f"calibration needs at least {len(varying) + 2} measured archs, got {len(y)}")
    if "lut_sum" not in varying:
        raise NasError("calibration needs archs whose LUT sums differ; these all sum to the same latency")
    for used in (varying, ["lut_sum"]):
        design = np.column_stack([np.asarray(features[f], dtype=np.float64) for f in used] + [np.ones_like(y)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        if "lut_sum" in used and coef[used.index("lut_sum")] > 0:
            break
    else:
        raise NasError("calibration failed: end-to-end latency does not grow with the LUT sum (too few or too noisy archs)")
    fitted = design @ coef
    return {"coef": {f: 0.0 for f in names} | {f: float(c) for f, c in zip(used, coef)}, "intercept": float(coef[-1]),
            "used": used, "n": int(len(y)), "residual_rmspe": float(np.sqrt(np.mean(((fitted - y) / y) ** 2)) * 100)}


def calibrated_block_value(calibration: Mapping, lut_value: BlockValue) -> BlockValue:
    """One block's share of the calibrated prediction (the intercept is added per arch)."""
    features = block_features(lut_value)
    coef = calibration["coef"]
    return lambda s: sum(weight * features[name](s) for name, weight in coef.items())
