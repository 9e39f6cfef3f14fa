"""Accuracy of predicted costs against measurements, as the field reports it
(nn-Meter, BRP-NAS, HELP): RMSE, RMSPE, share within +-5/10/15 %, mean bias,
Kendall tau and Spearman rho."""
from __future__ import annotations

import numpy as np
from scipy import stats

from nas.errors import NasError


def regression_report(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1 or len(p) < 2:
        raise NasError("need two equal-length vectors of at least 2 predictions and measurements")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))) or np.any(y == 0):
        raise NasError("predictions and measurements must be finite and measurements non-zero")
    rel = (p - y) / y
    return {
        "n": int(len(y)),
        "rmse": float(np.sqrt(np.mean((p - y) ** 2))),
        "rmspe": float(np.sqrt(np.mean(rel**2)) * 100),
        "within_5": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "within_15": float(np.mean(np.abs(rel) <= 0.15)),
        "bias": float(np.mean(rel) * 100),
        "kendall_tau": float(stats.kendalltau(p, y).statistic),
        "spearman_rho": float(stats.spearmanr(p, y).statistic),
    }
