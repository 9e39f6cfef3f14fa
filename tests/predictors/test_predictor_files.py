"""Predictor files: bit-exact round trips for every model kind, no pickle, refusals of
files for another space, feature set or schema, and atomic writes."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nas.errors import NasError
from nas.predictors.predictor import Predictor, evaluate, fit_predictor
from nas.predictors.store import SCHEMA, load_arrays, save_arrays
from nas.predictors.tables import read_table
from nas.predictors.transfer import transfer_predictor
from nas.space import load_space


@pytest.fixture(scope="module")
def fbnet_table(benchmarks):
    path = benchmarks / "fbnet" / "help_latency.csv"
    if not path.is_file():
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    return read_table(path, load_space("fbnet_cifar"))


@pytest.fixture(scope="module")
def probe():
    space = load_space("fbnet_cifar")
    return space.sample_codes(np.random.default_rng(11), 3000)


FAST = {"gbt": {"n_estimators": 40}, "forest": {"n_estimators": 20}, "mlp": {"steps": 100}}


@pytest.mark.parametrize("kind", ["ridge", "gbt", "forest", "mlp", "boosted", "ensemble"])
def test_round_trip_is_bit_exact(fbnet_table, probe, tmp_path, kind):
    predictor = fit_predictor(fbnet_table, "gold_6226_latency", 150, seed=2, model="ridge")
    if kind != "ridge":  # swap in the kind under test, small enough to stay fast
        from nas.predictors.models import make_model

        rows, y, _ = fbnet_table.rows("gold_6226_latency")
        model = make_model(kind, predictor.featurizer.groups, 2)
        if kind == "ensemble":
            model.set_params(members=("ridge", "mlp"))
        else:
            model.set_params(**FAST.get(kind, {}))
        X = predictor.featurizer.transform(fbnet_table.subset(rows[:150]))
        predictor.model = model.fit(X, y[:150])
        predictor.meta["model"] = kind
    path = tmp_path / f"{kind}.npz"
    predictor.save(path)
    loaded = Predictor.load(path)
    a, sa = predictor.predict(probe, return_std=True)
    b, sb = loaded.predict(probe, return_std=True)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert loaded.meta["training"] == predictor.meta["training"]
    assert loaded.metric == "latency" and loaded.unit == "ms" and loaded.meta["device"] == "gold_6226"


def test_transfer_round_trip_and_its_rows_are_listed(fbnet_table, probe, tmp_path):
    predictor = transfer_predictor(fbnet_table, ["eyeriss_latency", "raspi4_latency"], "gold_6226_latency", 10,
                                   seed=0, n_pretrain=300, use_shipped_reference=False)
    path = tmp_path / "t.npz"
    predictor.save(path)
    loaded = Predictor.load(path)
    assert np.array_equal(predictor.predict(probe), loaded.predict(probe))
    used = loaded.meta["transfer"]["adapt_arch_ids"]
    assert len(used) == 10 and set(used) == loaded.used_arch_ids
    report = evaluate(loaded, fbnet_table, "gold_6226_latency")
    assert report["excluded"] == 10 and report["n"] == 5000 - 10


def test_files_hold_no_pickle_and_load_without_it(fbnet_table, tmp_path):
    path = tmp_path / "p.npz"
    fit_predictor(fbnet_table, "eyeriss_latency", 50).save(path)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            header = zf.read(name)[:128]
            assert b"'descr': '|O'" not in header and b"'descr': 'O'" not in header
    with np.load(path, allow_pickle=False) as data:  # plain numbers only: loads with pickle off
        assert all(data[n].dtype.kind in "biuf" for n in data.files)
    # a file smuggling an object array is refused, not unpickled
    bad = tmp_path / "bad.npz"
    meta = json.dumps({"schema": SCHEMA}).encode()
    np.savez(bad, __meta__=np.frombuffer(meta, dtype=np.uint8), **{"a/coef": np.array([object()], dtype=object)})
    with pytest.raises(NasError, match="refused"):
        load_arrays(bad)


def test_files_for_another_space_or_feature_set_are_refused(fbnet_table, tmp_path):
    path = tmp_path / "p.npz"
    fit_predictor(fbnet_table, "eyeriss_latency", 50).save(path)
    with pytest.raises(NasError, match="predicts for space 'fbnet_cifar', not 'nb201'"):
        Predictor.load(path, load_space("nb201"))
    meta, arrays = load_arrays(path)
    meta["feature_fingerprint"] = "0000000000000000"
    save_arrays(tmp_path / "other.npz", meta, arrays)
    with pytest.raises(NasError, match="features of fbnet_cifar that differ from this hwnas's.*refit it"):
        Predictor.load(tmp_path / "other.npz")
    meta["schema"] = "hwnas.predictor/0"
    save_arrays(tmp_path / "old.npz", meta, arrays)
    with pytest.raises(NasError, match="schema 'hwnas.predictor/0' is not 'hwnas.predictor/1'"):
        Predictor.load(tmp_path / "old.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(NasError, match="not a readable .npz predictor file"):
        Predictor.load(tmp_path / "junk.npz")
    with pytest.raises(NasError, match="no predictor file"):
        Predictor.load(tmp_path / "missing.npz")


def test_writes_are_atomic(tmp_path):
    path = tmp_path / "sub" / "p.npz"
    save_arrays(path, {"schema": SCHEMA}, {"x": np.arange(3.0)})
    with pytest.raises(TypeError):
        save_arrays(path, {"schema": SCHEMA}, {"x": np.array(["text"])})
    assert np.array_equal(load_arrays(path)[1]["x"], np.arange(3.0))  # the old file is intact
    assert [p.name for p in Path(path.parent).iterdir()] == ["p.npz"]  # no temp files left


def test_metadata_records_provenance(fbnet_table, tmp_path):
    path = tmp_path / "p.npz"
    fit_predictor(fbnet_table, "raspi4_latency", 40, seed=5).save(path)
    meta, _ = load_arrays(path)
    assert meta["tables"] == {"help_latency.csv": fbnet_table.digests[fbnet_table.sources[0]]}
    assert meta["table_hash"] == fbnet_table.digest and meta["feature_set"] == "layerspec"
    assert {"numpy", "scikit-learn", "python", "hwnas"} <= set(meta["versions"])
    assert meta["training"]["seed"] == 5 and len(meta["training"]["arch_ids"]) == 40


def test_shipped_predictors_load_and_predict():
    folder = Path(__file__).resolve().parents[2] / "predictors"
    files = sorted(folder.glob("*/*.npz"))
    if not files:
        pytest.skip(f"no shipped predictors under {folder}")
    for path in files:
        predictor = Predictor.load(path)  # refused if the features drifted: refit (predictors/README.md)
        folder = "accuracy" if predictor.metric == "accuracy" else predictor.meta["device"]
        assert path.parent.name == folder and path.stem.startswith(predictor.space.name)
        # cost predictors: the group ridge on 2000 rows, the transfer sources of `fit --model auto`
        assert predictor.meta["training"]["n_train"] == (900 if predictor.metric == "accuracy" else 2000)
        assert predictor.metric == "accuracy" or predictor.meta["model"] == "ridge"
        codes = predictor.space.sample_codes(np.random.default_rng(0), 100)
        values = predictor.predict(codes)
        assert np.all(np.isfinite(values)) and np.all(values > 0)
        lower, upper = predictor.interval(codes, 0.9)  # every shipped file carries its calibration
        assert np.all(lower < values) and np.all(values < upper)
