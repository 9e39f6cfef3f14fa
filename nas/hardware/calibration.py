"""End-to-end calibration of a LUT: what the sum of isolated blocks misses.

Each block was timed as its own model, so every LUT entry carries one inference's
fixed overhead and runs with its weights hot in cache, while a whole network pays the
overhead once and streams all its weights. A least-squares fit of

    measured = a x (sum of LUT entries) + b x (number of blocks) + c x (weight MB) + d

on a few measured archs captures both effects; each term is a per-block sum, so the
calibrated prediction stays a vectorised gather-and-sum and stays differentiable.
It is stored with the LUT, and validation uses other archs.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nas.errors import NasError

FEATURES = ("lut_sum", "blocks", "weight_mb")


def fit_calibration(features: Mapping[str, np.ndarray], measured: np.ndarray) -> dict:
    """Coefficients per feature (0 for features that do not vary) and an intercept."""
    y = np.asarray(measured, dtype=np.float64)
    if len(y) < len(FEATURES) + 2:
        raise NasError(f"calibration needs at least {len(FEATURES) + 2} measured archs, got {len(y)}")
    used = [f for f in FEATURES if np.ptp(features[f]) > 0]
    design = np.column_stack([np.asarray(features[f], dtype=np.float64) for f in used] + [np.ones_like(y)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    coefficients = {f: 0.0 for f in FEATURES} | {f: float(c) for f, c in zip(used, coef)}
    if coefficients["lut_sum"] <= 0:
        raise NasError("calibration failed: end-to-end latency does not grow with the LUT sum (too few or too noisy archs)")
    fitted = design @ coef
    return {"coef": coefficients, "intercept": float(coef[-1]), "n": int(len(y)),
            "residual_rmspe": float(np.sqrt(np.mean(((fitted - y) / y) ** 2)) * 100)}


def apply_calibration(calibration: Mapping, features: Mapping[str, object]):
    """The calibrated prediction from feature values (numpy arrays or torch tensors)."""
    total = calibration["intercept"]
    for name, weight in calibration["coef"].items():
        total = total + weight * features[name]
    return total
