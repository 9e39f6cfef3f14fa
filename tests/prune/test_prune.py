"""`hwnas prune` end to end on a small space: the pruned export, the LUT grown on demand,
resuming, distillation from the parent, and every bad input as a one-line error."""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from nas.cli import main
from nas.errors import NasError
from nas.export import export_arch, finetune, load, read_card
from nas.export.bundle import ARCH_FILE, ONNX_FILE, WEIGHTS_FILE, file_sha256, read_record
from nas.export.finetuning import export_dataset
from nas.hardware.devices import load_device
from nas.hardware.lut import LUT
from nas.hardware.profiling import build_lut
from nas.prune.costs import NetworkCosts
from nas.prune.rounds import Evaluator, PruneSettings, WorkFolder, run_rounds
from nas.space import load_space
from nas.space.counters import network_counts
from nas.export.budgets import check_budgets
from tests.hw_helpers import FAST, micro_space_yaml

torch.set_num_threads(1)

MICRO = micro_space_yaml("micro_prune")
GROUPED = MICRO.replace("name: micro_prune", "name: micro_grouped").replace(
    "block: {kernel: [3, 5], expand: [2, 3], se: [0, 0.25]}", "block: {kernel: 3, expand: 2, groups: 2}")
QUICK = ["--epochs", "0", "--round-steps", "0", "--no-measure", "--quiet", "--threads", "1"]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _setup(root: Path, text: str, name: str) -> tuple[Path, Path, float]:
    """A space file, its LUT (fast protocol, uncalibrated) and a fresh export of its largest arch."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.yaml").write_text(text)
    space = load_space(root / f"{name}.yaml")
    lut = root / "lut" / f"{name}.csv"
    build_lut(space, load_device("local-cpu"), out=lut, protocol=FAST, calibrate=0)
    export_arch(space, space.extreme(True), root / "parent", seed=1, latency_protocol=None)
    layers = space.layers(space.extreme(True))
    return lut, root / "parent", NetworkCosts(space, "local-cpu", lut).latency(layers)


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> tuple[Path, Path, float]:
    return _setup(tmp_path_factory.mktemp("prune"), MICRO, "micro_prune")


@pytest.fixture(scope="module")
def pruned(micro, tmp_path_factory) -> tuple[Path, dict, int]:
    lut, parent, latency = micro
    before = len(LUT.load(lut).entries)
    out = tmp_path_factory.mktemp("pruned") / "out"
    budget = json.dumps([f"latency@local-cpu <= {latency * 0.85:.5f} ms", "params <= 5000"])
    assert main(["prune", str(parent), "--budgets", budget, "-o", str(out), "--data", "digits", "--lut", str(lut),
                 "--epochs", "0", "--round-steps", "2", "--quiet", "--threads", "1"]) == 0
    return out, read_card(out), before


def test_prune_reaches_the_budgets_and_writes_an_export(pruned, micro) -> None:
    out, card, _ = pruned
    lut, parent, latency = micro
    assert {p.name for p in out.iterdir()} >= {ARCH_FILE, WEIGHTS_FILE, ONNX_FILE, "card.json", "MODEL_CARD.md"}
    assert all(b["met"] for b in card["budgets"]) and card["pruning"]["met"]
    assert card["pruning"]["predicted_ms"] <= latency * 0.85 < card["pruning"]["parent_predicted_ms"]
    assert card["costs"]["params"] <= 5000
    rounds = card["pruning"]["rounds"]
    assert rounds and [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert all(r["cost_after"] < r["cost_before"] for r in rounds)
    assert card["pruning"]["settings"]["score"] == PruneSettings(budgets=(), data="").score
    assert all(r["kl"] >= 0 and r["ce"] > 0 and 0 <= r["accuracy"] <= 1 for r in rounds)
    assert card["pruning"]["measured_lut_scale_ms"] > 0 and card["measured_latency"]["median_ms"] > 0
    parent_sha = file_sha256(parent / ARCH_FILE)
    assert card["provenance"]["parent_arch_sha256"] == parent_sha == read_record(out)["pruned"]["parent"]["arch_sha256"]
    assert "## Pruning" in (out / "MODEL_CARD.md").read_text()
    assert not list(out.parent.glob(".*"))  # no staging or work folder left behind


def test_the_pruned_export_loads_counts_and_runs_in_onnxruntime(pruned) -> None:
    out, card, _ = pruned
    model = load(out)
    layers = [s for s in read_record(out)["layers"]]
    assert card["costs"]["params"] == sum(p.numel() for p in model.parameters())
    assert network_counts([__import__("nas.space.layers", fromlist=["LayerSpec"]).LayerSpec.from_dict(d)
                           for d in layers])["params"] == card["costs"]["params"]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
    assert card["onnx"]["max_abs_diff"] <= card["onnx"]["tolerance"]


def test_blocks_the_lut_lacked_were_profiled_and_added_to_it(pruned, micro) -> None:
    out, card, before = pruned
    lut = LUT.load(micro[0])  # still loads: its digest was rewritten with the new rows
    assert card["pruning"]["blocks_profiled"] > 0
    assert len(lut.entries) == before + card["pruning"]["blocks_profiled"]
    for d in read_record(out)["layers"]:
        assert any(spec.to_dict() == d for spec, _ in lut.entries.values())


def test_rounds_resume_after_a_kill_and_end_as_an_uninterrupted_run(micro, tmp_path) -> None:
    lut, parent, latency = micro
    record = read_record(parent)
    space = load_space(record["space_file"])
    costs = NetworkCosts(space, "local-cpu", lut)
    settings = PruneSettings(budgets=(f"latency@local-cpu <= {latency * 0.6:.5f} ms",), data="digits", round_steps=2,
                             step=0.05)
    layers = space.layers(space.arch(record["arch"]))
    costs.latency(layers)
    evaluator = Evaluator(export_dataset("digits", record), load(parent), 16, settings)

    def check(ls):
        return check_budgets(list(settings.budgets), costs.figures(["latency@local-cpu"], ls))

    calls = []

    def killed(ls):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill, in the second round
        return check(ls)

    initial = {"latency@local-cpu": costs.latency(layers)}
    whole = run_rounds(list(layers), load(parent), costs, check, initial, evaluator, settings,
                       WorkFolder(tmp_path / "a", settings), progress=False)
    assert len(whole[2]) >= 2
    work = WorkFolder(tmp_path / "b", settings)
    with pytest.raises(KeyboardInterrupt):
        run_rounds(list(layers), load(parent), costs, killed, initial, evaluator, settings, work, progress=False)
    assert len(work.load()[2]) == 1
    resumed = run_rounds(list(layers), load(parent), costs, check, initial, evaluator, settings, work, progress=False)
    assert resumed[0] == whole[0] and [r["unit"] for r in resumed[2]] == [r["unit"] for r in whole[2]]
    other = WorkFolder(tmp_path / "b", PruneSettings(budgets=settings.budgets, data="digits", seed=5))
    with pytest.raises(NasError, match="other settings"):
        other.load()


def test_finetune_distils_from_an_export_folder(pruned, micro) -> None:
    out, _, _ = pruned
    copy = out.parent / "ft"
    shutil.copytree(out, copy)
    assert finetune(copy, "digits", 1, distill_from=micro[1], max_steps=2, progress=False) == {}
    settings = json.loads((copy / "finetune" / "settings.json").read_text())
    assert settings["distill_from"] == str(micro[1])


def test_uniform_method_scales_every_width_to_the_budget(micro, tmp_path, capsys) -> None:
    # a parameter budget: the micro space's blocks are so small that profiling noise in the
    # blocks timed on demand can make a narrower network's LUT latency exceed its parent's
    lut, parent, _ = micro
    params = read_card(parent)["costs"]["params"]
    budget = json.dumps([f"params <= {params // 2}"])
    code, _, err = run(capsys, "prune", parent, "--budgets", budget, "-o", tmp_path / "u", "--data", "digits",
                       "--lut", lut, "--method", "uniform", *QUICK)
    assert code == 0, err
    card = read_card(tmp_path / "u")
    assert card["pruning"]["met"] and card["pruning"]["rounds"][0]["change"] == "uniform"
    assert params // 4 < card["costs"]["params"] <= params // 2  # the largest factor, not any factor
    assert len(read_record(tmp_path / "u")["layers"]) == len(read_record(parent)["layers"])  # no layer removed


def test_a_parent_trained_on_a_noisy_task_is_pruned_and_tuned_on_that_task(micro, tmp_path, capsys) -> None:
    """`--data digits` names the source; the split and the fixed pixel noise the supernet trained
    on come from the export's record, so a prune (and the fine-tunes after it, which read the
    data the same way) of the ranking benchmark's noisy digits scores on the noisy images."""
    from nas.data import load_dataset
    from nas.supernet import train
    from nas.supernet.config import config_from_dict
    from nas.supernet.trainer import dataset_for

    lut, _, _ = micro
    space_file = lut.parent.parent / "micro_prune.yaml"
    config = config_from_dict({"space": str(space_file), "data": {"source": "digits", "noise": 1.0, "crop_padding": 0},
                               "epochs": 1, "batch_size": 32, "checkpoint_every": 0})
    train(config, tmp_path / "supernet", progress=False)
    space = load_space(space_file)
    parent = tmp_path / "parent"
    export_arch(space, space.extreme(True), parent, supernet=tmp_path / "supernet", latency_protocol=None)
    params = read_card(parent)["costs"]["params"]
    code, _, err = run(capsys, "prune", parent, "--budgets", json.dumps([f"params <= {params // 2}"]), "-o",
                       tmp_path / "u", "--data", "digits", "--lut", lut, "--method", "uniform", *QUICK)
    assert code == 0, err
    trained_on = dataset_for(config, space)
    clean = load_dataset("digits", trained_on.resolution, space.in_channels)
    for folder in (parent, tmp_path / "u"):
        seen = export_dataset("digits", read_record(folder))
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(seen, split).images, getattr(trained_on, split).images), (folder, split)
        assert not torch.allclose(seen.val.images, clean.val.images)  # the noise is there, not the clean task


# ---------------------------------------------------------------------- bad input
def _refused(capsys, tmp_path, *args) -> str:
    out = tmp_path / "out"
    capsys.readouterr()  # what set-up printed
    code, stdout, err = run(capsys, "prune", *args, "-o", out, "--data", "digits", *QUICK)
    assert code == 2 and stdout == ""
    assert err.startswith("hwnas: error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written
    return err


def test_a_budget_already_met_is_said_plainly(micro, tmp_path, capsys) -> None:
    lut, parent, latency = micro
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--budgets", f'["latency@local-cpu <= {latency * 2:.4f} ms"]')
    assert "already met" in err and "nothing to prune" in err


def test_an_unreachable_budget_names_the_smallest_value_and_the_bounding_layers(micro, tmp_path, capsys) -> None:
    lut, parent, _ = micro
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--budgets", '["latency@local-cpu <= 0.0001 ms"]')
    assert "cannot be reached by pruning" in err and "smallest reachable network has latency@local-cpu" in err
    assert "the layers that bound it: " in err and "fixed widths: the input channels, the logits" in err
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--budgets", '{"params": "100"}')
    assert "smallest reachable network has params" in err and "linear" in err


def test_a_budget_only_the_rounds_reach_is_refused_for_uniform_scaling_with_its_smallest_value(micro, tmp_path,
                                                                                            capsys) -> None:
    """Uniform scaling removes no block, so its smallest network is larger than the rounds'; a
    budget between the two is refused up front for --method uniform (rather than written as a
    network that misses it) and accepted for the rounds."""
    from nas.prune.rounds import minimal, scaled

    lut, parent, _ = micro
    record = read_record(parent)
    space = load_space(record["space_file"])
    layers = space.layers(space.arch(record["arch"]))
    rounds_min = network_counts(minimal(layers, 4))["params"]
    uniform_min = network_counts(scaled(layers, 0.0, 4)[0])["params"]
    assert rounds_min < uniform_min
    budget = json.dumps([f"params <= {(rounds_min + uniform_min) // 2}"])
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--budgets", budget, "--method", "uniform")
    assert "cannot be reached by uniform scaling" in err and "no block removed" in err
    from nas.search.units import format_quantity

    assert f"smallest reachable network has params {format_quantity(uniform_min, 'count')};" in err  # uniform's
    code, _, err = run(capsys, "prune", parent, "--budgets", budget, "-o", tmp_path / "k", "--data", "digits", "--lut",
                       lut, "--select", "magnitude", *QUICK)
    assert code == 0, err
    assert read_card(tmp_path / "k")["costs"]["params"] <= (rounds_min + uniform_min) // 2


def test_a_multiple_breaking_a_group_rule_is_refused(tmp_path_factory, tmp_path, capsys) -> None:
    lut, parent, latency = _setup(tmp_path_factory.mktemp("grouped"), GROUPED, "micro_grouped")
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--multiple", "3",
                   "--budgets", f'["latency@local-cpu <= {latency * 0.9:.5f} ms"]')
    assert "--multiple 3" in err and "divisibility" in err and "use a multiple of 6" in err


def test_a_parent_failing_its_hash_check_is_refused(micro, tmp_path, capsys) -> None:
    lut, parent, latency = micro
    damaged = tmp_path / "damaged"
    shutil.copytree(parent, damaged)
    data = bytearray((damaged / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (damaged / WEIGHTS_FILE).write_bytes(bytes(data))
    err = _refused(capsys, tmp_path, damaged, "--lut", lut, "--budgets", f'["latency@local-cpu <= {latency / 2:.5f} ms"]')
    assert "fails its own hash check" in err and "SHA-256" in err
    record = json.loads((parent / ARCH_FILE).read_text())
    record["layers"][1]["mid_ch"] += 1
    shutil.rmtree(damaged)
    shutil.copytree(parent, damaged)
    (damaged / ARCH_FILE).write_text(json.dumps(record))
    err = _refused(capsys, tmp_path, damaged, "--lut", lut, "--budgets", f'["latency@local-cpu <= {latency / 2:.5f} ms"]')
    assert "fails its own hash check" in err and "layers_hash" in err


def test_a_metric_pruning_cannot_lower_is_refused(micro, tmp_path, capsys) -> None:
    lut, parent, _ = micro
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--budgets", '["energy@pi4-ort <= 1 mJ"]')
    assert "cannot prune to a budget on 'energy@pi4-ort'" in err


def test_magnitude_selection_meets_the_budget_without_scoring_candidates(micro, tmp_path, capsys) -> None:
    from nas.prune.rounds import minimal

    lut, parent, latency = micro
    record = read_record(parent)
    space = load_space(record["space_file"])
    # halfway to the smallest reachable network: reachable whatever the fresh LUT's timings
    # (a fixed 0.8 x the parent's was out of reach on a LUT profiled under load)
    smallest = NetworkCosts(space, "local-cpu", lut).latency(minimal(space.layers(space.arch(record["arch"])), 4))
    budget = json.dumps([f"latency@local-cpu <= {(latency + smallest) / 2:.5f} ms"])
    code, _, err = run(capsys, "prune", parent, "--budgets", budget, "-o", tmp_path / "m", "--data", "digits",
                       "--lut", lut, "--select", "magnitude", "--criterion", "order", *QUICK)
    assert code == 0, err
    pruning = read_card(tmp_path / "m")["pruning"]
    assert pruning["met"] and pruning["settings"]["select"] == "magnitude"
    assert all(0 <= r["accuracy"] <= 1 for r in pruning["rounds"])


def test_select_top_refuses_a_negative_count_and_a_selection_it_cannot_narrow(micro, tmp_path, capsys) -> None:
    lut, parent, latency = micro
    budget = f'["latency@local-cpu <= {latency * 0.8:.5f} ms"]'
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--budgets", budget, "--select", "finetune",
                   "--select-top", "-1")
    assert "--select-top is how many proposals" in err and "got -1" in err
    err = _refused(capsys, tmp_path, parent, "--lut", lut, "--budgets", budget, "--select-top", "2")
    assert "--select-top narrows the finetune selection" in err and "--select proxy" in err


# ---------------------------------------------------------------------- proxy scoring, measured budgets
def test_a_candidate_scored_from_its_first_change_scores_as_a_whole_pass(micro) -> None:
    from nas.prune.network import Change, apply_specs, importance, keep_channels, prune, units
    from nas.prune.rounds import first_changed

    _, parent, _ = micro
    record = read_record(parent)
    space = load_space(record["space_file"])
    layers = space.layers(space.arch(record["arch"]))
    settings = PruneSettings(budgets=("params <= 1",), data="digits", calib_images=64)
    evaluator = Evaluator(export_dataset("digits", record), load(parent), 16, settings)
    model = load(parent)
    torch.manual_seed(3)
    with torch.no_grad():  # weights unlike the fresh initialisation, so every unit's channels matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    evaluator.prepare(model)
    found = units(layers, 4)[0]
    starts = set()
    for u in found:
        widths = [0] if u.kind == "layer" else [max(4, (u.width // 2) // 4 * 4)]
        new = apply_specs(layers, Change(u, widths[0]))
        if new is None:
            continue
        keep = () if u.kind == "layer" else keep_channels(importance(layers, model, u, "l1"), widths[0], u.group)
        change = Change(u, widths[0], keep)
        start = first_changed(change)
        starts.add(start)
        fast = evaluator.accuracy(prune(layers, model, change, new), start)
        assert fast == evaluator.accuracy(prune(layers, model, change, new)), u
    assert len(starts) >= 3 and max(starts) > 0  # candidates changing early and late layers


def _parent_costs(micro) -> tuple[dict, list, NetworkCosts, float]:
    """The micro parent's export record, its layers, their costs on the micro LUT, and its
    parameter count: where a round's proposals start. Proposals are made on params, an
    exact counter: on the micro LUT's measured latencies a unit's smallest width can time
    no faster than the network it came from, so how many proposals lower the latency
    depends on timing noise (two tests saw 3 where they need 4)."""
    lut, parent, _ = micro
    record = read_record(parent)
    space = load_space(record["space_file"])
    layers = space.layers(space.arch(record["arch"]))
    costs = NetworkCosts(space, "local-cpu", lut)
    return record, layers, costs, costs.value("params", layers)


def test_finetune_selection_with_select_top_tunes_the_proxys_best_only(micro) -> None:
    from nas.prune.rounds import proposal_rank, propose, score_proposals

    parent = micro[1]
    record, layers, costs, current = _parent_costs(micro)
    scores = {}
    for select, top in (("proxy", 0), ("finetune", 2)):
        s = PruneSettings(budgets=("params <= 1",), data="digits", calib_images=64, select=select, select_top=top,
                          select_steps=3)
        evaluator = Evaluator(export_dataset("digits", record), load(parent), 16, s)
        proposals = propose(layers, costs, "params", current, 0.1 * current, s)
        scores[select] = score_proposals(layers, load(parent), proposals, current, 0.1 * current, evaluator, s, 0)
    assert len(scores["proxy"]) >= 4 and len(scores["finetune"]) == 2
    ranked = sorted(scores["proxy"], key=proposal_rank, reverse=True)
    assert {t[3] for t in scores["finetune"]} == {t[3] for t in ranked[:2]}  # the proxy's two best, tuned
    untuned = {t[3]: t[4] for t in scores["proxy"]}
    for _, _, _, k, network, _ in scores["finetune"]:  # tuned by the selection's steps: other weights than the proxy's
        assert any(not torch.equal(a, b) for a, b in zip(network.parameters(), untuned[k].parameters())), k


def test_kl_score_is_zero_for_the_parent_and_ranks_every_proposal_apart(micro) -> None:
    from nas.prune.rounds import propose, score_proposals

    parent = micro[1]
    record, layers, costs, current = _parent_costs(micro)
    data = export_dataset("digits", record)
    model = load(parent)
    torch.manual_seed(3)
    with torch.no_grad():  # weights unlike the fresh initialisation (zero residual branches), so every cut matters
        for w in model.parameters():
            w.add_(0.3 * torch.randn_like(w))
    teacher = copy.deepcopy(model)
    s = PruneSettings(budgets=("params <= 1",), data="digits", calib_images=64, score="kl")
    Evaluator(data, teacher, 16, s).prepare(teacher)  # the parent with the statistics candidates get
    evaluator = Evaluator(data, teacher, 16, s)
    assert evaluator.figures(copy.deepcopy(model))["kl"] == pytest.approx(0, abs=1e-6)
    proposals = propose(layers, costs, "params", current, 0.1 * current, s)
    scored = score_proposals(layers, copy.deepcopy(model), proposals, current, 0.1 * current, evaluator, s, 0)
    kl = [t[5]["kl"] for t in scored]
    assert len(scored) >= 4 and min(kl) > 1e-6
    assert [t[0] for t in scored] == [-v for v in kl]  # higher is better: the negated loss
    assert len(set(kl)) == len(kl)  # continuous: no two proposals tie, whatever their accuracies
    ce = [t[5]["ce"] for t in scored]
    for score, column in (("accuracy", [t[5]["accuracy"] for t in scored]), ("ce", [-v for v in ce])):
        again = score_proposals(layers, copy.deepcopy(model), propose(layers, costs, "params", current, 0.1 * current, s),
                                current, 0.1 * current, Evaluator(data, teacher, 16, replace(s, score=score)),
                                replace(s, score=score), 0)
        assert [t[0] for t in again] == column, score


def test_an_unknown_score_is_refused(micro, tmp_path, capsys) -> None:
    lut, parent, latency = micro
    with pytest.raises(NasError, match="unknown selection score 'bogus'; known: kl, ce, accuracy"):
        PruneSettings(budgets=("params <= 1",), data="digits", score="bogus").check()
    with pytest.raises(SystemExit) as info:  # argparse's choices: usage, then its one error line
        main([str(a) for a in ("prune", parent, "--budgets", f'["latency@local-cpu <= {latency * 0.8:.5f} ms"]',
                               "-o", tmp_path / "out", "--data", "digits", "--lut", lut, "--score", "bogus", *QUICK)])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert "argument --score: invalid choice: 'bogus'" in err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def _underpredicting_lut(micro, folder: Path, factor: float) -> tuple[Path, float]:
    """A copy of the micro LUT calibrated to predict `factor` x the parent's measured
    latency: a LUT that under-predicts every network, as one calibrated on other widths
    can; and a bound 10 % under its prediction of the parent."""
    lut, parent, _ = micro
    space = load_space(read_record(parent)["space_file"])
    layers = space.layers(space.arch(read_record(parent)["arch"]))
    costs = NetworkCosts(space, "local-cpu", lut)
    scale = factor * costs.measure(layers) / costs.latency(layers)
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / lut.name
    table = LUT.load(lut)
    table.meta["calibration"] = {"coef": {"lut_sum": scale, "blocks": 0.0, "weight_mb": 0.0}, "intercept": 0.0}
    table.save(copy)
    return copy, 0.9 * NetworkCosts(space, "local-cpu", copy).latency(layers)


@pytest.fixture(scope="module")
def micro32(tmp_path_factory) -> tuple[Path, Path, float]:
    """The micro space at 32x32: compute outweighs a run's fixed overhead enough that
    pruning can halve the measured latency (at 16x16 the smallest network measures
    about 55 % of the largest)."""
    return _setup(tmp_path_factory.mktemp("prune32"), micro_space_yaml("micro_prune32", "32"), "micro_prune32")


def test_a_budget_missed_on_measurement_is_pruned_on_until_the_measurement_meets_it(micro32, tmp_path, capsys) -> None:
    _, parent, _ = micro32
    # a LUT predicting half the measurement: the network first meeting the bound on it
    # (after a round removing at most a step, or one residual block) measures above it
    low, bound = _underpredicting_lut(micro32, tmp_path / "lut", 0.5)
    code, out, err = run(capsys, "prune", parent, "--budgets", f'["latency@local-cpu <= {bound:.5f} ms"]',
                         "-o", tmp_path / "m", "--data", "digits", "--lut", low, "--select", "magnitude",
                         *[a for a in QUICK if a != "--no-measure"])
    assert code == 0, err
    pruning = read_card(tmp_path / "m")["pruning"]
    checks = pruning["measurement_checks"]
    assert len(checks) >= 2 and not checks[0]["met"] and checks[0]["measured_ms"] > bound
    assert checks[0]["correction"] == 1.0 and checks[0]["predicted_ms"] <= bound  # the LUT's budget was met first
    for before, after in zip(checks, checks[1:]):
        assert after["correction"] == pytest.approx(before["ratio"])  # corrected by the last network's ratio
        if after["layers_hash"] != before["layers_hash"]:  # pruned on, below the corrected target
            assert after["predicted_ms"] < before["predicted_ms"]
    if pruning["measured_met"]:
        assert pruning["met"] and checks[-1]["measured_ms"] <= bound
        assert pruning["measured_lut_scale_ms"] == checks[-1]["measured_ms"]
        assert "measured" in out and out.rstrip().endswith("met")
        assert "The budget is met on measurement." in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    else:  # a loaded machine can measure the small networks slower than the LUT can reach
        assert checks[-1]["layers_hash"] == checks[-2]["layers_hash"] and "NOT met on measurement" in out


def test_a_budget_no_measured_network_meets_is_said_plainly(micro, tmp_path, capsys) -> None:
    _, parent, _ = micro
    low, bound = _underpredicting_lut(micro, tmp_path / "lut", 0.1)
    code, out, err = run(capsys, "prune", parent, "--budgets", f'["latency@local-cpu <= {bound:.6f} ms"]',
                         "-o", tmp_path / "m", "--data", "digits", "--lut", low, "--select", "magnitude",
                         *[a for a in QUICK if a != "--no-measure"])
    assert code == 0, err
    card = read_card(tmp_path / "m")
    pruning = card["pruning"]
    assert pruning["measured_met"] is False and not pruning["met"]
    assert all(b["met"] for b in pruning["lut_budgets"])  # met on the LUT: only the measurement says otherwise
    assert not any(b["met"] for b in pruning["budgets"]) and not any(b["met"] for b in card["budgets"])
    assert all(b["source"].startswith("measured") for b in card["budgets"])
    checks = pruning["measurement_checks"]
    assert checks[-1]["layers_hash"] == checks[-2]["layers_hash"]  # it stopped when pruning went no further
    assert "NOT met on measurement" in out
    assert "not met on measurement" in (tmp_path / "m" / "MODEL_CARD.md").read_text()


def test_measurement_checks_resume_with_their_prune_only(tmp_path) -> None:
    settings = PruneSettings(budgets=("latency@local-cpu <= 1 ms",), data="digits")
    work = WorkFolder(tmp_path / "w", settings)
    assert work.load_checks() == []
    checks = [{"check": 1, "after_round": 3, "predicted_ms": 0.9, "measured_ms": 1.2, "ratio": 1.2 / 0.9, "met": False}]
    work.save_checks(checks)
    assert work.load_checks() == checks
    with pytest.raises(NasError, match="other settings"):
        WorkFolder(tmp_path / "w", PruneSettings(budgets=settings.budgets, data="digits", step=0.2)).load_checks()


def test_a_round_no_proposal_can_finish_ranks_by_the_score_lost_per_cost_saved(micro, tmp_path) -> None:
    """A near-free cut that saves almost nothing no longer beats a cut that saves far more
    for a little more loss; free cuts tie at zero and the larger saving wins."""
    from nas.prune.rounds import per_cost_saved, proposal_rank

    baseline = -0.10  # the round's network's score (negated KL)
    rows = [(-0.101, False, 0.001, 0, None, None),  # loses 0.001 for 0.001 ms: 1.0 per ms
            (-0.120, False, 0.050, 1, None, None),  # loses 0.020 for 0.050 ms: 0.4 per ms
            (-0.300, False, 0.200, 2, None, None)]  # loses 0.200 for 0.200 ms: 1.0 per ms
    assert max(rows, key=proposal_rank)[3] == 0  # the score alone: the cut that saves least
    assert max(per_cost_saved(rows, baseline), key=proposal_rank)[3] == 1
    free = [(-0.09, False, 0.002, 0, None, None), (-0.10, False, 0.030, 1, None, None)]
    assert max(per_cost_saved(free, baseline), key=proposal_rank)[3] == 1  # both free: the larger saving

    lut, parent, latency = micro  # a step no unit can save alone: every round is ranked per cost saved
    shutil.copytree(lut.parent, tmp_path / "lut")  # its own copy: the blocks it profiles stay out of the module's LUT
    lut = tmp_path / "lut" / lut.name
    record = read_record(parent)
    space = load_space(record["space_file"])
    costs = NetworkCosts(space, "local-cpu", lut)
    settings = PruneSettings(budgets=(f"latency@local-cpu <= {latency * 0.6:.5f} ms",), data="digits", round_steps=0,
                             step=0.9, calib_images=64, max_rounds=2)
    layers = space.layers(space.arch(record["arch"]))
    evaluator = Evaluator(export_dataset("digits", record), load(parent), 16, settings)
    initial = {"latency@local-cpu": costs.latency(layers)}
    _, _, history = run_rounds(list(layers), load(parent), costs,
                               lambda ls: check_budgets(list(settings.budgets), costs.figures(["latency@local-cpu"], ls)),
                               initial, evaluator, settings, WorkFolder(tmp_path / "w", settings), progress=False)
    assert history and not history[0]["step_reached"]
