"""LUT build, resume after a kill, prediction, calibration, and refusal of stale LUTs."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import NasError
from nas.hardware.calibration import block_features, fit_calibration
from nas.hardware.devices import load_device
from nas.hardware.lut import LUT, LUTCost
from nas.hardware.measure import Protocol, Yardstick, chunk_factors, measure_models
from nas.hardware.profiling import build_lut, reference_arch
from nas.hardware.validation import validate_lut
from nas.space import load_space
from nas.space.layers import LayerSpec
from nas.space.tables import unique_layers
from tests.hw_helpers import FAST, small_space

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    space, device = small_space(), load_device("local-cpu")
    path = tmp_path_factory.mktemp("lut") / "small.csv"
    lut = build_lut(space, device, out=path, protocol=FAST, calibrate=12, seed=1)
    return space, device, path, lut


def test_build_writes_every_block_with_provenance(built) -> None:
    space, device, path, lut = built
    assert set(lut.entries) == {s.key for s in unique_layers(space)}
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["complete"] is True and meta["space"] == "small" and meta["device"] == "local-cpu"
    assert meta["runtime"]["backend"] == "onnxruntime" and meta["runtime"]["threads"] == 1
    assert meta["runtime"]["versions"]["onnxruntime"]
    assert meta["protocol"] == {"warmup": 1, "repeats": 6, "rounds": 2, "passes": 1, "statistic": "p10"}
    assert 0 <= meta["noise"]["median_spread"] < 5
    cal = meta["calibration"]
    assert cal["n"] == 12 and len(cal["arch_ids"]) == 12 and cal["coef"]["lut_sum"] > 0
    reloaded = LUT.load(path)
    assert reloaded.entries == lut.entries


def test_prediction_is_the_sum_of_block_entries(built) -> None:
    space, device, path, lut = built
    raw = LUTCost(lut, space, calibrated=False, device=device)
    archs = [space.sample(np.random.default_rng(i)) for i in range(20)]
    by_hand = [sum(lut.value(s) for s in space.layers(a)) for a in archs]
    np.testing.assert_allclose(raw.predict(archs), by_hand, rtol=1e-12)
    calibrated = LUTCost(lut, space, device=device)
    assert not np.allclose(calibrated.predict(archs), by_hand)


def test_expected_latency_is_differentiable_and_exact_for_one_hot(built) -> None:
    space, device, path, lut = built
    cost = LUTCost(lut, space, device=device)
    codes = space.sample_codes(3, 5)
    for row in codes:
        probs = [torch.nn.functional.one_hot(torch.tensor(int(c)), int(r)).double() for c, r in zip(row, space.radices)]
        assert float(cost.expected(probs)) == pytest.approx(float(cost.predict(row[None])[0]), rel=1e-9)
    logits = [torch.zeros(int(r), dtype=torch.float64, requires_grad=True) for r in space.radices]
    cost.expected([torch.softmax(l, 0) for l in logits]).backward()
    assert all(l.grad is not None and torch.isfinite(l.grad).all() for l in logits)
    # uniform probabilities give the mean over all archs
    every = space.encode_batch(list(space.enumerate()))
    uniform = [torch.full((int(r),), 1 / int(r), dtype=torch.float64) for r in space.radices]
    assert float(cost.expected(uniform)) == pytest.approx(cost.predict(every).mean(), rel=1e-9)


def test_validation_reports_the_fields_and_files(built, tmp_path) -> None:
    space, device, path, lut = built
    report = validate_lut(space, device, lut, n=10, seed=0, out_dir=tmp_path)
    for key in ("within_5", "within_10", "within_15", "rmspe", "bias", "kendall_tau", "spearman_rho"):
        assert key in report and key in report["uncalibrated"] and key in report["repeatability"]
    assert report["n"] == 10
    rows = list(csv.DictReader(open(tmp_path / "validate_small_local-cpu.csv")))
    used = set(lut.meta["calibration"]["arch_ids"])
    assert len(rows) == 10 and not used & {r["arch_id"] for r in rows}
    assert (tmp_path / "validate_small_local-cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["protocol"] == lut.meta["protocol"] and report["samples_per_arch"] == 6  # FAST: 1 pass of 6


@pytest.mark.filterwarnings("ignore:LUT for small@local-cpu was built for another version")  # the YAML copy's fingerprint
def test_validation_passes_make_the_end_to_end_measurement_more_precise(built, tmp_path, capsys) -> None:
    """--passes overrides the LUT's protocol for the validation and its repeat set alike."""
    import yaml

    from nas.cli import main
    from tests.hw_helpers import SMALL_SPACE

    space, device, path, lut = built
    report = validate_lut(space, device, lut, n=6, seed=0, passes=3)
    assert report["protocol"] == {**lut.meta["protocol"], "passes": 3} and report["samples_per_arch"] == 18
    space_file = tmp_path / "small.yaml"
    space_file.write_text(yaml.safe_dump({**SMALL_SPACE, "name": "small"}))
    assert main(["lut", "validate", "--space", str(space_file), "--device", "local-cpu",
                 "--lut", str(path), "--n", "4", "--passes", "2", "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"]["passes"] == 2


def test_lut_of_another_device_runtime_or_space_is_refused(built, tmp_path) -> None:
    space, device, path, lut = built
    other_device = device.model_copy(update={"name": "pi4-ort"})
    with pytest.raises(NasError, match="built on device 'local-cpu'"):
        LUTCost(lut, space, device=other_device)
    with pytest.raises(NasError, match="threads"):
        LUTCost(lut, space, device=device.model_copy(update={"threads": 4}))
    stale = LUT({**lut.meta, "runtime": {**lut.meta["runtime"], "versions": {"onnxruntime": "0.1.0"}}}, lut.entries)
    with pytest.raises(NasError, match="onnxruntime 0.1.0"):
        LUTCost(stale, space, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LUTCost(stale, space, device=device, allow_mismatch=True)
    assert any("onnxruntime 0.1.0" in str(w.message) for w in caught)
    with pytest.raises(NasError, match="built for space 'small', not 'other'"):
        LUTCost(lut, small_space("other"), device=device)


def test_missing_entries_are_reported_with_the_layer(built) -> None:
    space, device, path, lut = built
    gone = next(iter(lut.entries))
    partial = LUT(dict(lut.meta), {k: v for k, v in lut.entries.items() if k != gone})
    with pytest.raises(NasError) as caught:
        LUTCost(partial, space, device=device)
    assert f"lacks 1 of the space's blocks, e.g. {gone!r}" in str(caught.value)


@pytest.mark.parametrize("bad", ["nan", "0", "-0.5", "abc"])
def test_bad_timings_are_refused_on_load(built, tmp_path, bad: str) -> None:
    space, device, path, lut = built
    rows = list(csv.DictReader(open(path)))
    rows[3]["median"] = bad
    target = tmp_path / "bad.csv"
    with open(target, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    target.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(NasError, match=r"bad\.csv:5: "):
        LUT.load(target)


def test_killed_build_loses_nothing_and_resumes(tmp_path) -> None:
    out = tmp_path / "tiny.csv"
    cmd = [sys.executable, "-m", "nas.cli", "lut", "build", "--space", "tiny_mbconv", "--device", "local-cpu",
           "-o", str(out), "--calibrate", "0", "--warmup", "1", "--repeats", "6", "--rounds", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = LUT.load(out)
    total = len(unique_layers(load_space("tiny_mbconv")))
    assert 0 < len(first.entries) < total, "the build should have been killed part-way"
    assert first.meta["complete"] is False
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no half-written files"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    final = LUT.load(out)
    assert len(final.entries) == total and final.meta["complete"] is True
    for key, entry in first.entries.items():
        assert final.entries[key] == entry, "resumed build re-measured a finished block"
    assert final.meta["reference"] == first.meta["reference"], "resumed chunks must keep the first baseline"
    assert final.meta["reference"]["arch_id"] == reference_arch(load_space("tiny_mbconv")).arch_id


@pytest.mark.parametrize("reference", [{"ms": "fast"}, {"ms": 0}, {"ms": float("nan")}, "12 ms"])
def test_a_garbled_reference_time_is_refused_on_load(built, tmp_path, reference) -> None:
    space, device, path, lut = built
    target = tmp_path / "bad.csv"
    target.write_text(path.read_text())
    target.with_suffix(".json").write_text(json.dumps({**lut.meta, "reference": reference}))
    with pytest.raises(NasError, match=r"bad\.json: 'reference' must hold the reference network's time"):
        LUT.load(target)


@pytest.mark.parametrize("change", [{"protocol": {**FAST.to_dict(), "passes": 2}}, {"reference": None}],
                         ids=["other protocol", "no reference"])
def test_a_lut_measured_on_another_scale_is_not_resumed(built, tmp_path, change) -> None:
    """Entries measured under another protocol, or before the reference network existed,
    must not be mixed with new ones: the build refuses, and --force starts afresh."""
    space, device, _, lut = built
    out = tmp_path / "old.csv"
    LUT(dict(lut.meta, complete=False, **change), dict(list(lut.entries.items())[:5])).save(out)
    with pytest.raises(NasError, match="built differently .* pass --force"):
        build_lut(space, device, out=out, protocol=FAST, calibrate=0)
    fresh = build_lut(space, device, out=out, protocol=FAST, calibrate=0, force=True)
    assert fresh.meta["reference"]["ms"] > 0 and fresh.meta["protocol"] == FAST.to_dict()
    assert all(fresh.entries[k] != v for k, v in list(lut.entries.items())[:5]), "old entries were kept"


def test_a_kill_between_the_metadata_and_csv_writes_leaves_a_resumable_lut(built, tmp_path) -> None:
    """save() writes the JSON, then the CSV: a kill in between leaves the new metadata
    beside the previous chunk's CSV (or no CSV at all), and a build resumes from either."""
    space, device, _, lut = built
    out = tmp_path / "torn.csv"
    partial = LUT(dict(lut.meta, complete=False), dict(list(lut.entries.items())[:5]))
    partial.save(out)
    LUT(dict(lut.meta, complete=False), lut.entries).save(tmp_path / "next.csv")
    (tmp_path / "next.json").replace(out.with_suffix(".json"))  # the next chunk's JSON landed, its CSV did not
    resumed = build_lut(space, device, out=out, protocol=FAST, calibrate=0)
    assert resumed.meta["complete"] and set(resumed.entries) == set(lut.entries)
    assert all(resumed.entries[k] == v for k, v in partial.entries.items()), "finished entries were re-measured"
    out.unlink()  # the first chunk's JSON landed, its CSV did not
    assert build_lut(space, device, out=out, protocol=FAST, calibrate=0).meta["complete"]


def test_yardstick_puts_chunks_measured_at_different_speeds_on_one_scale() -> None:
    """A machine running 3x slower for the second chunk: raw timings triple, rescaled ones do not."""
    slowdown = [1.0]

    def model(ms: float):
        return lambda: time.sleep(ms * slowdown[0] / 1000)

    # sleeps of several ms: a loaded machine oversleeps by a few ms (2 ms once read as 8)
    protocol = Protocol(warmup=1, repeats=8, rounds=2, passes=1)
    yardstick = Yardstick(lambda: model(10.0))
    models = [lambda: model(5.0), lambda: model(20.0)]
    fast = measure_models(models, protocol, yardstick)
    slowdown[0] = 3.0
    slow = measure_models(models, protocol, yardstick)
    assert yardstick.baseline_ms == pytest.approx(10.0, rel=0.5)
    assert yardstick.factors[0] == pytest.approx(1.0) and yardstick.factors[1] == pytest.approx(1 / 3, rel=0.25)
    for before, after in zip(fast, slow):
        assert after.median == pytest.approx(before.median, rel=0.25)
    assert slow[1].median / slow[0].median == pytest.approx(4.0, rel=0.35)


def test_calibration_recovers_its_terms_and_falls_back_when_noise_makes_them_unphysical() -> None:
    rng = np.random.default_rng(0)
    lut_sum, blocks, weight_mb = rng.uniform(1, 3, 30), rng.integers(10, 20, 30).astype(float), rng.uniform(5, 25, 30)
    features = {"lut_sum": lut_sum, "blocks": blocks, "weight_mb": weight_mb}
    exact = fit_calibration(features, 0.9 * lut_sum - 0.01 * blocks + 0.02 * weight_mb + 0.1)
    assert exact["coef"] == pytest.approx({"lut_sum": 0.9, "blocks": -0.01, "weight_mb": 0.02})
    assert exact["intercept"] == pytest.approx(0.1) and exact["residual_rmspe"] < 1e-9
    assert exact["used"] == ["lut_sum", "blocks", "weight_mb"]
    # time that follows weight MB, and the LUT sum only weakly against it: the full fit's LUT term turns negative
    tangled = {"lut_sum": weight_mb / 10 + rng.normal(0, 0.01, 30), "blocks": blocks, "weight_mb": weight_mb}
    fallback = fit_calibration(tangled, 0.05 * weight_mb - 0.3 * (tangled["lut_sum"] - weight_mb / 10) + 1.0)
    assert fallback["used"] == ["lut_sum"] and fallback["coef"]["lut_sum"] > 0
    assert fallback["coef"]["blocks"] == fallback["coef"]["weight_mb"] == 0.0
    with pytest.raises(NasError, match="LUT sums differ"):
        fit_calibration({"lut_sum": np.ones(30), "blocks": blocks, "weight_mb": weight_mb}, weight_mb)


def test_calibration_counts_blocks_by_precision_and_leaves_a_constant_count_out(built) -> None:
    """An int8 block's fixed cost differs from a float one's (its micro-model pays the
    quantize/dequantize at its own edges), so int8 blocks are counted apart; a float
    space has none, and its calibration is the float one."""
    features = block_features(lambda s: 1.0)
    int8 = LayerSpec("mbconv", 16, 16, 8, kernel=3, mid_ch=48, precision="int8", in_precision="int8")
    assert features["int8_blocks"](int8) == 1.0 and features["int8_blocks"](replace(int8, precision="fp32")) == 0.0
    assert features["blocks"](int8) == 1.0
    rng = np.random.default_rng(1)
    lut_sum, blocks = rng.uniform(1, 3, 30), rng.integers(10, 20, 30).astype(float)
    int8_blocks, weight_mb = np.floor(blocks * rng.uniform(0, 1, 30)), rng.uniform(5, 25, 30)
    fitted = fit_calibration({"lut_sum": lut_sum, "blocks": blocks, "int8_blocks": int8_blocks, "weight_mb": weight_mb},
                             0.9 * lut_sum - 0.01 * blocks - 0.02 * int8_blocks + 0.01 * weight_mb + 0.1)
    assert fitted["coef"] == pytest.approx({"lut_sum": 0.9, "blocks": -0.01, "int8_blocks": -0.02, "weight_mb": 0.01})
    space, _, _, lut = built  # a float space, calibrated on real measurements
    assert "int8_blocks" not in lut.meta["calibration"]["used"] and lut.meta["calibration"]["coef"]["int8_blocks"] == 0.0


def test_a_lut_reads_the_statistic_its_protocol_measured(built, tmp_path) -> None:
    """Blocks, calibration and predictions all use the protocol's statistic; a LUT recorded
    before protocols named one measured the median and keeps reading medians."""
    space, device, path, lut = built
    spec, timing = next(iter(lut.entries.values()))
    assert timing.p10 < timing.median and lut.statistic == "p10" and lut.value(spec) == timing.p10
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["protocol"]["statistic"]
    old = tmp_path / "old.csv"
    old.write_text(path.read_text())
    old.with_suffix(".json").write_text(json.dumps(meta))
    older = LUT.load(old)
    assert older.statistic == "median" and older.value(spec) == timing.median
    archs = [space.sample(np.random.default_rng(i)) for i in range(5)]
    raw_new, raw_old = (LUTCost(x, space, calibrated=False, device=device).predict(space.encode_batch(archs))
                        for x in (lut, older))
    assert np.all(raw_new < raw_old)  # every block's p10 is below its median


def test_the_statistic_is_checked_where_it_is_given(tmp_path) -> None:
    with pytest.raises(ValueError, match="statistic must be one of median, p10"):
        Protocol(statistic="mean")
    assert Protocol.recorded(None).statistic == "median" and Protocol.recorded({"statistic": "p10"}) == Protocol()
    r = subprocess.run([sys.executable, "-m", "nas.cli", "lut", "build", "--space", "tiny_mbconv", "--device", "local-cpu",
                        "-o", str(tmp_path / "s.csv"), "--statistic", "mean"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "argument --statistic: invalid choice: 'mean'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.csv").exists()
    from nas.config import validate
    from nas.errors import ConfigError
    from nas.sources import ProfileSettings

    assert validate(ProfileSettings, {}, "profile").statistic == Protocol().statistic
    with pytest.raises(ConfigError, match=r"^profile: statistic: unknown 'mean' \(did you mean 'median'\?\); choose median, p10$"):
        validate(ProfileSettings, {"statistic": "mean"}, "profile")


def test_passes_time_every_model_in_fresh_sessions_among_shuffled_company() -> None:
    """Each pass builds every model and one reference per chunk afresh; samples of all passes pool."""
    built: list[int | None] = []  # model indices in the order their sessions were built, None for a reference

    def factory(i: int | None):
        def make():
            built.append(i)
            return lambda: None
        return make

    protocol = Protocol(warmup=0, repeats=4, rounds=2, passes=3)
    yardstick = Yardstick(factory(None))
    timings = measure_models([factory(i) for i in range(10)], protocol, yardstick, chunk=4, seed=1)
    chunks, current = [], []
    for i in built:  # a chunk's models are built, then its reference
        if i is None:
            chunks.append(current)
            current = []
        else:
            current.append(i)
    assert len(chunks) == 3 * 3 and len(yardstick.factors) == 9 and all(1 <= len(c) <= 4 for c in chunks)
    assert [sorted(sum(chunks[k:k + 3], [])) for k in (0, 3, 6)] == [list(range(10))] * 3
    assert len({tuple(c) for c in chunks[::3]}) > 1, "every pass put the models in the same chunks"
    assert all(t.n + t.rejected == 3 * 4 for t in timings)


def test_chunk_offsets_come_from_all_members_not_the_reference_alone() -> None:
    """6 models in 2 passes of 2 chunks; chunk 1 runs 1.5x slow, chunk 3 1.2x; the reference (model 6)
    reads 20 % high by bad luck in chunk 2. The members' consensus recovers the offsets."""
    level = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 2.5])
    offset = np.array([1.0, 1.5, 1.0, 1.2])
    members = [[0, 1, 2, 6], [3, 4, 5, 6], [0, 3, 4, 6], [1, 2, 5, 6]]
    medians = [(m, c, level[m] * offset[c] * (1.2 if (m, c) == (6, 2) else 1.0)) for c in range(4) for m in members[c]]
    clean = chunk_factors([(m, c, level[m] * offset[c]) for m, c, _ in medians], Yardstick(None, 2.5))
    assert clean == pytest.approx(1 / offset)
    lucky = chunk_factors(medians, Yardstick(None, 2.5))
    reference_alone = 2.5 / (2.5 * 1.2)
    assert abs(lucky[2] - 1.0) < abs(reference_alone - 1.0) / 1.5  # 3 members out-vote the reference
    assert chunk_factors([(0, 0, 1.0), (1, 0, 2.0), (2, 1, 3.0)]) == pytest.approx([1.0, 1.0])  # nothing links the chunks


def test_cli_errors_are_one_line(tmp_path) -> None:
    for args, message in (
        (["lut", "build", "--space", "tiny_mbconv", "--device", "local-cpuu"], "unknown device 'local-cpuu' (did you mean 'local-cpu'?)"),
        (["lut", "validate", "--space", "tiny_mbconv", "--device", "local-cpu", "--lut", str(tmp_path / "x.csv")], "no LUT at"),
        (["lut", "build", "--space", "tiny_mbconv", "--device", "jetson-tx2", "-o", str(tmp_path / "t.csv")], "TensorrtExecutionProvider"),
    ):
        r = subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "t.csv").exists()
    for bad, message in (("0", "argument --passes: 0 must be at least 1"), ("two", "argument --passes: 'two' is not an integer")):
        r = subprocess.run([sys.executable, "-m", "nas.cli", "lut", "build", "--space", "tiny_mbconv", "--device", "local-cpu",
                            "-o", str(tmp_path / "p.csv"), "--passes", bad], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.csv").exists()


def test_local_lut_from_another_cpu_is_refused(built) -> None:
    space, device, path, lut = built
    elsewhere = LUT({**lut.meta, "host": {**lut.meta["host"], "cpu": "Some Other CPU"}}, lut.entries)
    with pytest.raises(NasError, match="measured on CPU 'Some Other CPU'"):
        LUTCost(elsewhere, space, device=device)
