"""Stand-alone accuracy over several seeds in the ranking benchmark (nas.supernet.bench):
the mean as the truth, every seed recorded, the truth's reliability beside the tau,
runs kept and reused, bad seed counts refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from nas.cli import main
from nas.errors import ConfigError, NasError
from nas.supernet.bench import (RANKING_FAMILY_TASKS, GOAL_TAU, ranking_fidelity, ranking_standalone_seeds,
                                truth_reliability)
from nas.supernet.config import config_from_dict
from tests.supernet.test_transformer_supernet import MICRO_VIT
from tests.supernet_helpers import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The micro ViT on 240 digits: one epoch of a supernet and each stand-alone run in about a second."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("rankseeds")
    digits = load_digits()
    np.savez(root / "d.npz", x=np.rint(digits.images * 255 / 16).astype(np.uint8)[:240], y=digits.target[:240])
    (root / "micro_vit.yaml").write_text(MICRO_VIT)
    return config_from_dict({"space": str(root / "micro_vit.yaml"), "data": {"source": str(root / "d.npz")},
                             "epochs": 1, "batch_size": 16, "calib_images": 32, "workers": 1})


def _checkpoints(out):
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "standalone").glob("*/checkpoint.pt")}


def test_each_arch_is_trained_under_every_seed_and_ranked_by_the_mean(micro, tmp_path):
    out = tmp_path / "rank"
    report = ranking_fidelity(micro, out, n=4, progress=False, standalone_seeds=2)
    assert report["standalone_seeds"] == [0, 1]
    by_seed = np.array([row["standalone_by_seed"] for row in report["archs"]])
    assert by_seed.shape == (4, 2)
    assert not np.array_equal(by_seed[:, 0], by_seed[:, 1])  # the seed changes what a net learns
    for row, accs in zip(report["archs"], by_seed):
        assert row["standalone"] == pytest.approx(accs.mean())
        assert row["standalone_sd"] == pytest.approx(np.std(accs, ddof=1))
    means, inherited = by_seed.mean(axis=1), [row["supernet"] for row in report["archs"]]
    assert report["kendall_tau"] == pytest.approx(stats.kendalltau(means, inherited).statistic, nan_ok=True)
    assert report["truth"]["pairwise_tau"] == pytest.approx(stats.kendalltau(by_seed[:, 0], by_seed[:, 1]).statistic,
                                                            nan_ok=True)
    assert (out / "ranking.json").read_text() == json.dumps(report, indent=2) + "\n"  # (a tau may be NaN)
    # seed 0 keeps the one-seed layout (older run folders resume), other seeds sit beside it
    ids = [row["arch_id"] for row in report["archs"]]
    assert set(_checkpoints(out)) == set(ids) | {f"{i}-seed1" for i in ids}

    # a third seed trains only the new runs and reuses the finished ones unchanged
    before = _checkpoints(out)
    more = ranking_fidelity(micro, out, n=4, progress=False, standalone_seeds=3)
    after = _checkpoints(out)
    assert {k: after[k] for k in before} == before and set(after) - set(before) == {f"{i}-seed2" for i in ids}
    assert np.array_equal(np.array([row["standalone_by_seed"][:2] for row in more["archs"]]), by_seed)

    # one seed is the old protocol: no reliability to report, the seed-0 runs reused
    one = ranking_fidelity(micro, out, n=4, progress=False, standalone_seeds=1)
    assert one["truth"] is None and [row["standalone"] for row in one["archs"]] == list(by_seed[:, 0])
    assert _checkpoints(out) == after


def test_the_truths_reliability_tells_a_repeatable_ranking_from_seed_noise():
    rng = np.random.default_rng(0)
    exact = np.linspace(0.6, 0.9, 12)[:, None]
    clean = truth_reliability(exact + rng.normal(0, 0.002, (12, 3)))
    noisy = truth_reliability(exact.mean() + rng.normal(0, 0.03, (12, 3)))  # archs alike: only seed noise
    assert clean["ceiling"] > 0.95 and clean["pairwise_tau"] > 0.9 and clean["reliability"] > 0.99
    assert noisy["ceiling"] < 0.3 and noisy["exact_sd"] < 0.01
    # more seeds make the same archs' truth more reliable
    middling = exact * 0.1 + rng.normal(0, 0.01, (12, 3))
    ceilings = [truth_reliability(middling, seeds=n)["ceiling"] for n in (1, 3, 10)]
    assert ceilings == sorted(ceilings) and ceilings[0] < ceilings[-1] - 0.1
    assert truth_reliability(np.full((12, 1), 0.8) + rng.normal(0, 0.03, (12, 4)))["ceiling"] >= 0  # never NaN
    with pytest.raises(NasError, match="at least 2 seeds"):
        truth_reliability(exact)


def test_the_family_default_follows_the_rule():
    assert ranking_standalone_seeds("tiny_vit") == RANKING_FAMILY_TASKS["transformer"]["standalone_seeds"] > 1
    assert ranking_standalone_seeds("tiny_mbconv") == ranking_standalone_seeds("tiny_hybrid") == 1
    assert 0 < GOAL_TAU < 1


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # 1-epoch micro nets may score alike
def test_the_supernet_may_train_longer_than_the_stand_alone_runs(micro, tmp_path):
    report = ranking_fidelity(micro, tmp_path / "r", n=3, progress=False, supernet_epochs=2)
    assert report["supernet_epochs"] == 2 and report["epochs"] == micro.epochs == 1
    recorded = {p.parent.name: json.loads(p.read_text())["config"]["epochs"]
                for p in (tmp_path / "r").rglob("config.json")}
    assert recorded.pop("supernet") == 2 and set(recorded.values()) == {1} and len(recorded) == 3


@pytest.mark.parametrize("key", ["standalone_seeds", "supernet_epochs"])
@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_a_bad_count_is_one_error_before_anything_is_written(micro, tmp_path, key, bad):
    with pytest.raises(ConfigError, match=f"{key} must be a whole number of at least 1"):
        ranking_fidelity(micro, tmp_path / "r", n=4, progress=False, **{key: bad})
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", ["--standalone-seeds", "--supernet-epochs"])
@pytest.mark.parametrize("bad, message", [("0", "0 must be at least 1"), ("-1", "-1 must be at least 1"),
                                          ("1.5", "'1.5' is not an integer")])
def test_the_cli_refuses_a_bad_count(tmp_path, capsys, flag, bad, message):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "supernet-ranking", "--space", "tiny_vit", flag, bad, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
