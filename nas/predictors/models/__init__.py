"""Predictor models with scikit-learn's fit/predict conventions and file-safe state.

Kinds: ridge (default), gbt, forest, mlp, boosted, lut_residual, ensemble, transfer.
"""
from nas.predictors.models import composite, linear, mlp, transfer, trees  # noqa: F401  (registers the kinds)
from nas.predictors.models.base import MODELS, build_model, model_state
from nas.predictors.models.factory import make_model

__all__ = ["MODELS", "build_model", "make_model", "model_state"]
