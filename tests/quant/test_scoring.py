"""The search's accuracy oracle scores an arch with int8 layers by its quantized accuracy
(the accuracy of the int8 ONNX model), and a float arch exactly as before."""
from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from nas.errors import NasError
from nas.quant import QuantSettings, quantize
from nas.supernet.evaluation import RecalibratedScorer, accuracy
from tests.supernet_helpers import one_thread, with_precision  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def trained(micro_int8_supernet):
    return micro_int8_supernet


def test_a_float_arch_scores_exactly_as_before(trained) -> None:
    from nas.supernet import SupernetAccuracy

    run_dir, space = trained
    oracle = SupernetAccuracy(run_dir)
    ev = oracle.evaluator
    for seed in (0, 1):
        arch = with_precision(space, seed, "fp32")
        before = RecalibratedScorer.score(ev, oracle.supernet.extract(arch), space.resolution(arch))  # no layers: the float path
        assert float(oracle.predict([arch])[0]) == before


def test_an_int8_arch_scores_the_accuracy_of_its_int8_onnx_model(trained) -> None:
    from nas.supernet import SupernetAccuracy

    run_dir, space = trained
    oracle = SupernetAccuracy(run_dir)
    ev = oracle.evaluator
    arch = with_precision(space, 2, "int8")
    res = space.resolution(arch)
    scored = float(oracle.predict([arch])[0])
    # independently: recalibrate, quantize on the first 128 images of the same pick, run onnxruntime
    net = oracle.supernet.extract(arch)
    float_acc = RecalibratedScorer.score(ev, net, res)
    qnet = quantize(net, space.layers(arch), ev._at("quant", res), QuantSettings(calib_images=128))
    images = ev._at("eval", res)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(qnet.to_onnx(), options, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": images.contiguous().numpy()})[0].argmax(1)
    assert scored == accuracy(qnet, images, ev.labels, 64) == float((theirs == ev.labels.numpy()).mean())
    assert scored > 0.3 and abs(scored - float_acc) < 0.1  # learned, and int8 costs little on this task


def test_the_quant_settings_reach_the_oracle_and_too_few_images_are_refused(trained) -> None:
    from nas.supernet import SupernetAccuracy

    run_dir, space = trained
    oracle = SupernetAccuracy(run_dir, quant=QuantSettings(method="percentile", calib_images=8))
    assert float(oracle.predict([with_precision(space, 0, "fp32")])[0]) > 0.3  # float archs need no calibration
    with pytest.raises(NasError, match="calibration method percentile needs at least 32 calibration images, got 8"):
        oracle.predict([with_precision(space, 0, "int8")])


def test_the_quant_bench_reports_drop_and_agreement(trained, capsys) -> None:
    from nas.cli import main

    run_dir, _ = trained
    code = main(["bench", "quant", str(run_dir), "--archs", "2", "--threads", "1", "--json"])
    found = json.loads(capsys.readouterr().out)
    assert code == 0 and len(found["rows"]) == 2 and found["agreement_min"] >= 0.99
    for row in found["rows"]:
        assert abs(row["int8"] - row["int8_onnxruntime"]) <= 1 - row["top1_agreement"] + 1e-9
        assert row["float"] > 0.3
    assert found["drop_worst"] >= found["drop_median"]
