"""Predictor models: scikit-learn conventions, the closed-form leave-one-out, tree arrays
that predict as scikit-learn does, seeds, and what each model reaches on real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.ensemble import GradientBoostingRegressor

from nas.predictors.features import get_featurizer
from nas.predictors.models import MODELS, make_model
from nas.predictors.models.linear import GroupRidge, _log_ratio, _loo_path, _solve
from nas.predictors.models.trees import GradientBoostedTrees
from nas.predictors.tables import read_table
from nas.space import load_space


@pytest.fixture(scope="module")
def fbnet(benchmarks):
    path = benchmarks / "fbnet" / "help_latency.csv"
    if not path.is_file():
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    table = read_table(Path(path), load_space("fbnet_cifar"))
    featurizer = get_featurizer(table.space)
    rows, y, _ = table.rows("raspi4_latency", positive=True)
    return featurizer, featurizer.transform(table.subset(rows)), y


def test_closed_form_leave_one_out_is_exact():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((15, 6))
    y = np.exp(Z @ rng.standard_normal(6) * 0.1 + 1)
    for loss in ("log", "relative"):
        (alpha, fast, residual), = list(_loo_path(Z, y, loss, [0.3]))
        errors, ratios = [], []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            coef, intercept = _solve(Z[keep], y[keep], loss, alpha)
            fitted = Z[i] @ coef + intercept
            ratio = fitted - np.log(y[i]) if loss == "log" else np.log(max(fitted / y[i], 1e-9))
            errors.append(min(abs(ratio), np.log(2)))
            ratios.append(-ratio)
        assert fast == pytest.approx(np.mean(errors), rel=1e-6)
        # the calibration residuals of intervals: log(y / leave-one-out prediction), exactly
        np.testing.assert_allclose(_log_ratio(residual, loss), ratios, rtol=1e-6, atol=1e-9)


def test_sklearn_conventions():
    for kind in ("ridge", "gbt", "mlp", "ensemble"):
        model = make_model(kind, seed=3)
        params = model.get_params()
        assert clone(model).get_params() == params
        assert not any(name.endswith("_") for name in vars(model))  # nothing fitted before fit()


def test_tree_arrays_predict_like_sklearn(fbnet):
    _, X, y = fbnet
    ours = GradientBoostedTrees(n_estimators=50).fit(X[:300], y[:300])
    theirs = GradientBoostingRegressor(n_estimators=50, max_depth=3, learning_rate=0.05, subsample=0.8,
                                       max_features=0.3, random_state=0).fit(X[:300], np.log(y[:300]))
    np.testing.assert_allclose(np.log(ours.predict(X[300:800])), theirs.predict(X[300:800]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["ridge", "gbt", "forest", "mlp", "boosted"])
def test_models_rank_real_latencies_and_are_reproducible(fbnet, kind):
    featurizer, X, y = fbnet
    train, test = slice(0, 300), slice(300, 2300)
    model = make_model(kind, featurizer.groups, seed=1)
    if kind == "mlp":
        model.set_params(steps=300)
    if kind in ("forest", "boosted", "gbt"):
        model.set_params(**({"n_estimators": 60} if kind != "boosted" else {}))
    p = model.fit(X[train], y[train]).predict(X[test])
    rho = stats.spearmanr(p, y[test]).statistic
    assert rho > {"ridge": 0.99, "mlp": 0.9, "boosted": 0.99}.get(kind, 0.8), rho
    again = clone(model).fit(X[train], y[train]).predict(X[test])
    assert np.array_equal(p, again)


def test_ensemble_reports_member_spread(fbnet):
    featurizer, X, y = fbnet
    model = make_model("ensemble", featurizer.groups, members=("ridge", "gbt")).fit(X[:200], y[:200])
    mean, std = model.predict(X[200:400], return_std=True)
    members = np.log(np.stack([m.predict(X[200:400]) for m in model.models_]))
    np.testing.assert_allclose(np.log(mean), members.mean(axis=0))
    np.testing.assert_allclose(std, members.std(axis=0))
    assert np.all(std >= 0) and std.mean() < 0.1


def test_ridge_picks_coarse_features_from_few_rows(fbnet):
    featurizer, X, y = fbnet
    # 20 rows, ~500 features: the fine groups must be penalised harder than the aggregates
    rhos = []
    for start in (0, 20, 40):
        model = GroupRidge(groups=featurizer.groups).fit(X[start:start + 20], y[start:start + 20])
        assert model.fine_multiple_ > 1
        rhos.append(stats.spearmanr(model.predict(X[100:]), y[100:]).statistic)
    assert np.mean(rhos) > 0.9, rhos


def test_every_registered_kind_is_tested():
    assert set(MODELS) == {"ridge", "gbt", "forest", "mlp", "boosted", "ensemble", "lut_residual", "transfer",
                           "simplex"}


def _sources(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows of five log source predictions with different rankings."""
    rng = np.random.default_rng(seed)
    return rng.normal(2.0, 0.3, size=(n, 5)), rng


def test_simplex_weights_are_non_negative_and_sum_to_one():
    L, rng = _sources()
    # a target that weighs two sources positively and one negatively, with noise
    y = np.exp(0.5 + 0.6 * L[:, 0] + 0.3 * L[:, 3] - 0.4 * L[:, 1] + 0.02 * rng.standard_normal(len(L)))
    model = make_model("simplex").fit(L, y)
    assert np.all(model.weights_ >= 0) and model.weights_.sum() == pytest.approx(1.0)
    assert model.scale_ > 0 and model.weights_[1] == 0.0  # never bets against a source
    assert model.weights_[0] > model.weights_[3] > 0
    assert len(model.loo_log_residuals_) == len(y) and np.all(np.isfinite(model.loo_log_residuals_))


def test_simplex_gives_the_weight_to_a_source_identical_to_the_target():
    L, _ = _sources()
    y = np.exp(L[:, 2])
    model = make_model("simplex").fit(L, y)
    np.testing.assert_allclose(model.weights_, np.eye(5)[2], atol=1e-9)
    assert model.scale_ == pytest.approx(1.0) and model.intercept_ == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(model.predict(L[:7]), y[:7], rtol=1e-9)
    np.testing.assert_allclose(model.loo_log_residuals_, 0.0, atol=1e-9)  # exact leave-one-out, K <= 50


def test_simplex_falls_back_to_the_best_ranked_source_when_none_moves_with_the_target():
    rng = np.random.default_rng(1)
    a = rng.normal(2.0, 0.3, 40)
    L = np.column_stack([a, a + rng.normal(0.0, 0.1, 40)])
    y = np.exp(-L.sum(axis=1))  # both sources run against the target: non-negative weights fit nothing
    model = make_model("simplex").fit(L, y)
    assert model.weights_.sum() == pytest.approx(1.0) and np.count_nonzero(model.weights_) == 1
    assert np.ptp(model.predict(L)) > 0  # a ranking, not a constant


def test_transfer_with_the_simplex_head_survives_its_file(tmp_path):
    from nas.predictors.models.base import build_model, model_state
    from nas.predictors.models.transfer import TransferModel

    L, rng = _sources(30)
    X = rng.standard_normal((30, 4))
    y = np.exp(L[:, 1] + 0.05 * X[:, 0])
    model = TransferModel(groups=["net"] * 4, heads=("simplex", "mix", "shared")).fit(X, y, Z=np.exp(L))
    spec, arrays = model_state(model)
    arrays = {k: v for k, v in arrays.items()}
    loaded = build_model(spec, arrays)
    loaded.sources_ = []  # the benchmark passes Z; no pretrained models here
    np.testing.assert_allclose(loaded.predict(X, Z=np.exp(L)), model.predict(X, Z=np.exp(L)), rtol=1e-12)
    assert loaded.heads_ == ("simplex", "mix", "shared")
