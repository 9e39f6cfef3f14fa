"""Learned latency, energy and accuracy predictors.

    tables     training tables (public benchmark CSVs, `hwnas measure`/`lut validate`
               output, user CSV/JSON) read as archs of a space
    features   LayerSpec-derived features, vectorised over arch codes
    models     ridge (default), gbt, forest, mlp, boosted, lut_residual, ensemble, transfer
    predictor  a fitted model as a CostModel, its file, fit and evaluation
    transfer   few-shot adaptation to a new device; reference: which archs to measure
    energy     analytic energy tables where no energy was measured
    bench      the figures in docs/benchmarks.md (`hwnas bench predictors`)
"""
from nas.predictors.features import Featurizer, get_featurizer
from nas.predictors.predictor import Predictor, evaluate, fit_predictor
from nas.predictors.reference import load_reference, make_reference
from nas.predictors.tables import ArchTable, read_archs, read_table, read_tables
from nas.predictors.transfer import pretrain, transfer_predictor

__all__ = ["ArchTable", "Featurizer", "Predictor", "evaluate", "fit_predictor", "get_featurizer", "load_reference",
           "make_reference", "pretrain", "read_archs", "read_table", "read_tables", "transfer_predictor"]
