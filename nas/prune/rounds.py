"""NetAdapt-style rounds: one reduction per unit, keep the one that loses least accuracy.

Each round looks at the unmet budget furthest over its bound and asks every prunable
unit (nas.prune.network) for its largest width that lowers that cost by the round's
step (a fraction of the parent's cost, or what is left to the bound when that is
less); a unit that cannot reach the step offers its smallest width, and a residual
block offers its removal. When no proposal reaches the step, they are ranked by the
score lost per cost saved (per_cost_saved), not by the score alone. Candidate widths
are explored a few at a time for all units together, so the blocks the LUT lacks are
profiled in batches (nas.prune.costs). Every
proposal is scored on the validation split after BN recalibration (the `proxy`
selection) or after a few distillation steps from the parent (`finetune`); the best
one is kept, tuned for a few steps, and the next round starts from it. Rounds stop
when every budget is met.

The score (`--score`) is the distillation loss against the parent (`kl`, the default),
the cross-entropy with the labels (`ce`) or the accuracy (`accuracy`). Accuracy on a
small validation split moves in steps of one image (0.7 % of the digits' 143), so
proposals tie or differ by one image and the choice between them is near-random; the
two losses are continuous and rank proposals whose accuracies tie.

After every round the network, its weights and the history are saved in a work
folder beside the output, so a killed prune resumes from its last finished round.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nas.errors import NasError
from nas.prune.costs import NetworkCosts
from nas.prune.network import Change, Unit, apply_specs, candidate_widths, importance, keep_channels, prune, units
from nas.space.layers import LayerSpec
from nas.supernet.evaluation import recalibrating

# proxy: accuracy after BN recalibration; finetune: after select_steps distillation steps; magnitude: no data,
# the share of the unit's importance removed per share of the cost saved (the cheapest)
SELECTIONS = ("proxy", "finetune", "magnitude")
# what proxy and finetune selections rank proposals by, on the validation images (higher is better after
# `selection_score`): KL divergence from the parent's predictions, cross-entropy with the labels, accuracy
SCORES = ("kl", "ce", "accuracy")
# netadapt: the rounds; uniform: every width scaled by one factor (the baseline pruning is compared with)
METHODS = ("netadapt", "uniform")


@dataclass(frozen=True)
class PruneSettings:
    """What a prune computes; a rerun resumes only with the same settings."""

    budgets: tuple[str, ...]
    data: str
    seed: int = 0
    method: str = "netadapt"
    criterion: str = "l1"
    select: str = "proxy"
    score: str = "kl"               # proxy / finetune selection: what ranks proposals (SCORES)
    select_steps: int = 10          # finetune selection: distillation steps per proposal
    select_top: int = 0             # finetune selection: tune only the best this many by the proxy (0: all)
    round_steps: int = 20           # distillation steps on the kept proposal of each round
    step: float = 0.05              # cost removed per round, as a fraction of the parent's
    multiple: int = 4               # pruned widths are multiples of this
    candidates: int = 4             # widths explored per unit per batch
    lr: float = 0.01
    batch_size: int = 32
    calib_images: int = 256
    max_rounds: int = 200
    epochs: int = 2                 # the final fine-tune (nas.export.finetuning)

    def check(self) -> None:
        from nas.prune.network import CRITERIA

        if self.criterion not in CRITERIA:
            raise NasError(f"unknown importance criterion {self.criterion!r}; known: {', '.join(CRITERIA)}")
        if self.method not in METHODS:
            raise NasError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.select not in SELECTIONS:
            raise NasError(f"unknown selection {self.select!r}; known: {', '.join(SELECTIONS)}")
        if self.score not in SCORES:
            raise NasError(f"unknown selection score {self.score!r}; known: {', '.join(SCORES)}")
        if not 0 < self.step < 1:
            raise NasError(f"--step is the fraction of the parent's cost removed per round, in (0, 1); got {self.step}")
        if min(self.multiple, self.candidates, self.batch_size, self.calib_images, self.max_rounds) < 1:
            raise NasError("--multiple, --candidates, --batch-size, --calib-images and --max-rounds must be at least 1")
        if self.select_top < 0:
            raise NasError(f"--select-top is how many proposals the proxy passes to the finetune selection (0: all); "
                           f"got {self.select_top}")
        if self.select_top and self.select != "finetune":
            raise NasError(f"--select-top narrows the finetune selection; with --select {self.select} it would do "
                           "nothing: drop it or use --select finetune")
        if min(self.select_steps, self.round_steps, self.epochs) < 0 or self.lr <= 0:
            raise NasError("steps and epochs must not be negative and the learning rate must be positive")


@dataclass
class Proposal:
    change: Change
    layers: list[LayerSpec]
    cost: float


class Evaluator:
    """Candidate networks scored on the validation split after BN recalibration on training
    images (accuracy, cross-entropy, and KL divergence from the parent network's
    predictions on the same images); `tune` takes distillation steps from the parent.

    A round's proposals all start from the same network and differ from it only from
    their first changed layer on. `prepare` recalibrates that network and keeps every
    layer's input on the calibration and validation images; `accuracy(model, start)`
    then runs and recalibrates only layers `start:` of a candidate, from those inputs.
    The layers before are the prepared network's, with its recalibrated statistics, so
    the score is the one a whole recalibration and validation pass would give, at the
    cost of the changed part only."""

    BATCH = 256

    def __init__(self, data: Any, teacher: nn.Module, resolution: int, settings: PruneSettings) -> None:
        # the default NCHW layout: channels-last scored a tiny_mbconv round 1.5x slower here
        # on one thread (docs/benchmarks.md, LUT-driven pruning)
        self.data, self.teacher, self.resolution, self.s = data, teacher.eval(), resolution, settings
        pick = np.random.default_rng([settings.seed, 0xCA1]).permutation(len(data.train))[:settings.calib_images]
        self.calib = _resize(data.normalize(data.to_float(data.train.images[torch.as_tensor(pick)])), resolution)
        self.val = _resize(data.normalize(data.to_float(data.val.images)), resolution)
        self.labels = data.val.labels
        with torch.no_grad():
            self.parent_log_p = torch.cat([F.log_softmax(self.teacher(x), dim=1) for x in self.val.split(self.BATCH)])
        self.resize = _resize
        self.inputs: tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]] | None = None

    @torch.no_grad()
    def prepare(self, model: nn.Sequential) -> None:
        """Recalibrate `model` in place and keep each layer's inputs (see the class)."""
        calib: list[list[torch.Tensor]] = [[] for _ in range(len(model))]
        val: list[list[torch.Tensor]] = [[] for _ in range(len(model))]
        with recalibrating(model):
            for x in self.calib.split(self.BATCH):
                for j, block in enumerate(model):
                    calib[j].append(x)
                    x = block(x)
        for x in self.val.split(self.BATCH):
            for j, block in enumerate(model):
                val[j].append(x)
                x = block(x)
        self.inputs = (calib, val)

    def accuracy(self, model: nn.Sequential, start: int = 0) -> float:
        return self.figures(model, start)["accuracy"]

    def score(self, model: nn.Sequential, start: int = 0) -> tuple[float, dict[str, float]]:
        """The selection score (higher is better) and the figures it comes from."""
        figures = self.figures(model, start)
        return selection_score(figures, self.s.score), figures

    @torch.no_grad()
    def figures(self, model: nn.Sequential, start: int = 0) -> dict[str, float]:
        """Validation accuracy, cross-entropy and KL divergence from the parent, after
        recalibrating BN; `start` > 0: a candidate that shares layers :start with the
        network last prepared."""
        if start and self.inputs is None:
            raise NasError(f"internal: a candidate scored from layer {start} before its round was prepared")
        calib = self.inputs[0][start] if start else list(self.calib.split(self.BATCH))
        val = self.inputs[1][start] if start else list(self.val.split(self.BATCH))
        tail = model[start:] if start else model
        with recalibrating(tail):
            for x in calib:
                tail(x)
        log_p = F.log_softmax(torch.cat([tail(x) for x in val]), dim=1)
        return {"accuracy": float((log_p.argmax(1) == self.labels).float().mean()),
                "ce": float(F.nll_loss(log_p, self.labels)),
                "kl": float(F.kl_div(log_p, self.parent_log_p, reduction="batchmean", log_target=True))}

    def tune(self, model: nn.Module, steps: int, tag: int) -> None:
        """`steps` SGD steps of (CE + KD from the parent)/2 with batches drawn from (seed, tag)."""
        from nas.supernet.step import distillation

        if steps < 1:
            return
        optimizer = torch.optim.SGD(model.parameters(), lr=self.s.lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
        rng = np.random.default_rng([self.s.seed, tag, 0x7E])
        model.train()
        for _ in range(steps):
            picked = torch.as_tensor(rng.choice(len(self.data.train), self.s.batch_size, replace=False))
            x = self.resize(self.data.normalize(self.data.to_float(self.data.train.images[picked])), self.resolution)
            y = self.data.train.labels[picked]
            logits = model(x)
            with torch.no_grad():
                soft = F.softmax(self.teacher(x), dim=1)
            loss = 0.5 * F.cross_entropy(logits, y, label_smoothing=0.1) + 0.5 * distillation(logits, soft, 1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()


def selection_score(figures: dict[str, float], score: str) -> float:
    """Higher is better: the accuracy, or the negated loss."""
    return figures["accuracy"] if score == "accuracy" else -figures[score]


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images at the network's input size, as fine-tuning and the supernet feed them."""
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def worst_unmet(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    unmet = [r for r in rows if r["met"] is False]
    return max(unmet, key=lambda r: r["value"] / max(r["bound"], 1e-12)) if unmet else None


def propose(layers: list[LayerSpec], costs: NetworkCosts, metric: str, current: float, need: float,
            settings: PruneSettings) -> list[Proposal]:
    """One proposal per unit: its largest width lowering `metric` by `need`, else its
    smallest; residual blocks: their removal. Only proposals that lower the cost."""
    found, _ = units(layers, settings.multiple)
    queues: dict[Unit, list[int]] = {u: ([0] if u.kind == "layer" else candidate_widths(u, settings.multiple))
                                     for u in found}
    best: dict[Unit, Proposal] = {}
    done: set[Unit] = set()
    while True:
        batch: list[tuple[Unit, int, list[LayerSpec]]] = []
        for u, queue in queues.items():
            if u in done:
                continue
            taken = 0
            while queue and taken < settings.candidates:
                w = queue.pop(0)
                new = apply_specs(layers, Change(u, w))
                if new is not None:
                    batch.append((u, w, new))
                    taken += 1
            if not taken:
                done.add(u)
        if not batch:
            break
        if metric == costs.metric:
            costs.ensure([s for _, _, new in batch for s in new])
        for u, w, new in batch:
            if u in done:
                continue
            cost = costs.value(metric, new)
            if cost < current and (u not in best or cost < best[u].cost):
                best[u] = Proposal(Change(u, w), new, cost)
            if current - cost >= need:
                done.add(u)
    return list(best.values())


def minimal(layers: list[LayerSpec], multiple: int) -> list[LayerSpec]:
    """The smallest network pruning can reach: every unit at its smallest width, every
    residual block removed."""
    current = list(layers)
    changed = True
    while changed:
        changed = False
        for u in units(current, multiple)[0]:
            for w in ([0] if u.kind == "layer" else reversed(candidate_widths(u, multiple))):
                new = apply_specs(current, Change(u, w))
                if new is not None:
                    current, changed = new, True
                    break
            if changed:
                break
    return current


def smallest(layers: list[LayerSpec], method: str, multiple: int) -> list[LayerSpec]:
    """The smallest network `method` can reach: `minimal` for the rounds; for uniform scaling,
    every width at its smallest step with every block kept (it removes none), which is
    larger, so a budget the rounds can meet may be out of uniform scaling's reach."""
    return scaled(layers, 0.0, multiple)[0] if method == "uniform" else minimal(layers, multiple)


class WorkFolder:
    """The rounds so far, saved after each (state.json: settings, layers, rounds;
    weights.safetensors), and the measurements of nas.prune.measured (checks.json)."""

    def __init__(self, path: Path, settings: PruneSettings) -> None:
        self.path, self.settings = path, asdict(settings)

    def _read(self, name: str) -> dict[str, Any] | None:
        """A state file of this prune, refused when it was written with other settings."""
        from nas.jsonfile import read_json

        state_file = self.path / name
        if not state_file.is_file():
            return None
        state = read_json(state_file, f"{state_file}: missing", damaged=f"delete {self.path} to start over")
        if state.get("settings") != json.loads(json.dumps(self.settings)):
            changed = [k for k in self.settings if (state.get("settings") or {}).get(k) != self.settings[k]]
            raise NasError(f"{self.path} holds a prune with other settings ({', '.join(changed) or 'format'}); "
                           f"delete it to start over")
        return state

    def _write(self, name: str, state: dict[str, Any]) -> None:
        from nas.atomic import write_atomic

        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / name, json.dumps({"settings": self.settings, **state}, indent=1) + "\n")

    def load_checks(self) -> list[dict[str, Any]]:
        state = self._read("checks.json")
        return state["checks"] if state else []

    def save_checks(self, checks: list[dict[str, Any]]) -> None:
        self._write("checks.json", {"checks": checks})

    def load(self) -> tuple[list[LayerSpec], nn.Module, list[dict[str, Any]]] | None:
        from nas.export.weights import load_weights
        from nas.space.builder import build_network

        state = self._read("state.json")
        if state is None:
            return None
        layers = [LayerSpec.from_dict(d) for d in state["layers"]]
        return layers, load_weights(build_network(layers), self.path / "weights.safetensors").eval(), state["history"]

    def save(self, layers: Sequence[LayerSpec], model: nn.Module, history: list[dict[str, Any]]) -> None:
        from nas.export.weights import save_weights

        self.path.mkdir(parents=True, exist_ok=True)
        save_weights(model, self.path / "weights.safetensors")
        self._write("state.json", {"layers": [s.to_dict() for s in layers], "history": history})


def run_rounds(layers: list[LayerSpec], model: nn.Module, costs: NetworkCosts,
               check: Callable[[list[LayerSpec]], list[dict[str, Any]]], initial: dict[str, float],
               evaluator: Evaluator, settings: PruneSettings, work: WorkFolder,
               progress: bool = True) -> tuple[list[LayerSpec], nn.Module, list[dict[str, Any]]]:
    """Rounds until every budget is met (or max_rounds): the network, its weights, the history."""
    history: list[dict[str, Any]] = []
    resumed = work.load()
    if resumed:
        layers, model, history = resumed
    bar = tqdm(desc="prune rounds", unit="round", initial=len(history), disable=not progress, dynamic_ncols=True)
    while len(history) < settings.max_rounds:
        started = time.perf_counter()
        profiled_before = len(costs.profiled)
        target = worst_unmet(check(layers))
        if target is None:
            break
        metric, current = target["metric"], target["value"]
        need = min(settings.step * initial[metric], current - target["bound"])
        proposals = propose(layers, costs, metric, current, need, settings)
        if not proposals:
            break
        scored = score_proposals(layers, model, proposals, current, need, evaluator, settings, len(history))
        if not any(row[1] for row in scored):
            scored = per_cost_saved(scored, evaluator.score(model)[0])
        _, reached, gain, k, chosen, figures = max(scored, key=proposal_rank)
        p = proposals[k]
        if chosen is None:
            chosen = prune(layers, model, p.change, p.layers)
        figures = figures or evaluator.figures(chosen)
        evaluator.tune(chosen, settings.round_steps, 1000 * len(history) + 999)
        tuned = evaluator.figures(chosen) if settings.round_steps else figures
        history.append({"round": len(history) + 1, "metric": metric, "unit": p.change.unit.label(layers),
                        "change": _describe(p.change), "cost_before": current, "cost_after": p.cost,
                        "step_reached": bool(reached),
                        "unit_of_cost": target["unit"], "proposals": len(proposals), **_scores(figures, tuned),
                        "blocks_profiled": len(costs.profiled) - profiled_before,
                        "seconds": round(time.perf_counter() - started, 3)})
        layers, model = p.layers, chosen
        work.save(layers, model, history)
        bar.update(1)
        bar.set_postfix(cost=f"{p.cost:.4g}", acc=f"{tuned['accuracy']:.3f}", kl=f"{tuned['kl']:.3g}")
    bar.close()
    return layers, model, history


def score_proposals(layers: list[LayerSpec], model: nn.Module, proposals: list[Proposal], current: float,
                    need: float, evaluator: Evaluator, settings: PruneSettings,
                    round_index: int) -> list[tuple[float, bool, float, int, nn.Module | None, dict | None]]:
    """(score, reaches the step, cost saved, index, pruned network or None, its validation
    figures or None) per proposal; the score is settings.score's (higher is better).

    `finetune` with select_top K scores every proposal by the proxy first and tunes
    only the K best: NetAdapt's short-term fine-tune of each proposal, spent where the
    cheap score says a proposal may win; only those K are returned."""
    scored: list[tuple[float, bool, float, int, nn.Module | None, dict | None]] = []
    proxy = settings.select == "proxy" or (settings.select == "finetune" and settings.select_top > 0)
    if proxy:
        evaluator.prepare(model)
    for k, p in enumerate(proposals):
        p.change = _with_keep(layers, model, p.change, settings.criterion)
        reached, gain = current - p.cost >= need, current - p.cost
        if settings.select == "magnitude":
            # importance lost per cost saved is already normalised by the saving: no step is required
            score = -_lost(layers, model, p.change, settings.criterion) / ((current - p.cost) / current)
            scored.append((score, True, gain, k, None, None))
            continue
        candidate = prune(layers, model, p.change, p.layers)
        if settings.select == "finetune" and not proxy:
            evaluator.tune(candidate, settings.select_steps, 1000 * round_index + k)
        score, figures = evaluator.score(candidate, first_changed(p.change) if proxy else 0)
        scored.append((score, reached, gain, k, candidate, figures))
    if settings.select != "finetune" or not proxy:
        return scored
    top = sorted(scored, key=proposal_rank, reverse=True)[:settings.select_top]
    for i, (_, reached, gain, k, candidate, _) in enumerate(top):
        evaluator.tune(candidate, settings.select_steps, 1000 * round_index + k)
        score, figures = evaluator.score(candidate)
        top[i] = (score, reached, gain, k, candidate, figures)
    return top


def per_cost_saved(scored: list[tuple], baseline: float) -> list[tuple]:
    """score_proposals rows re-scored by the score lost per cost saved, for a round in which
    no proposal reaches the step (`baseline`: the round's network's own score).

    Why: NetAdapt ranks proposals that each save the step, so their savings are alike and
    the score alone decides. When none can, each unit offers its smallest width and the
    savings differ by orders of magnitude; the score alone then favours the cuts that save
    least, since they cost least (at 15 % of tiny_mbconv's latency, 8 of 26 rounds saved
    0.001-0.010 ms against a 0.061 ms step). A score that a cut happens to raise counts as
    no loss, so free cuts tie at zero and proposal_rank takes the larger saving; among
    cuts that cost something, the cheapest per ms wins. On that 15 % prune the ranking
    changed the rounds after the free cuts (+7.7 test images of 359 at prune seed 0, a
    gain the size of the prune's own seed spread: docs/benchmarks.md, issue 19, session 26)."""
    return [(-max(baseline - score, 0.0) / gain, reached, gain, *rest) for score, reached, gain, *rest in scored]


def proposal_rank(scored: tuple) -> tuple:
    """Sort key of a score_proposals row: reaching the step first, then the score, then the
    cost saved, then the earlier proposal."""
    score, reached, gain, k = scored[:4]
    return reached, score, gain, -k


def _scores(figures: dict[str, float], tuned: dict[str, float]) -> dict[str, float]:
    """A round's record of its kept network's validation figures, before and after tuning."""
    return {"accuracy": figures["accuracy"], "kl": figures["kl"], "ce": figures["ce"],
            "accuracy_tuned": tuned["accuracy"], "kl_tuned": tuned["kl"]}


def first_changed(change: Change) -> int:
    """The first layer a change gives other weights or another place (earlier ones are shared)."""
    u = change.unit
    return min(u.tensors) if u.kind == "width" else u.layer


def _with_keep(layers: list[LayerSpec], model: nn.Module, change: Change, criterion: str) -> Change:
    u = change.unit
    if u.kind == "layer":
        return change
    return Change(u, change.width, keep_channels(importance(layers, model, u, criterion), change.width, u.group))


def _lost(layers: list[LayerSpec], model: nn.Module, change: Change, criterion: str) -> float:
    """The share of the unit's importance its pruned channels held (1 for a removed block)."""
    u = change.unit
    if u.kind == "layer":
        return 1.0
    score = importance(layers, model, u, criterion)
    score = score - score.min() + 1e-12 if criterion == "order" else score
    kept = torch.zeros(len(score), dtype=torch.bool)
    kept[list(change.keep)] = True
    return float(score[~kept].sum() / score.sum())


def _describe(change: Change) -> str:
    u = change.unit
    return "removed" if u.kind == "layer" else f"{u.width} -> {change.width} channels"


def scaled(layers: list[LayerSpec], alpha: float, multiple: int,
           model: nn.Module | None = None, criterion: str = "l1") -> tuple[list[LayerSpec], nn.Module | None]:
    """Every width, expanded and squeeze width scaled by `alpha` (rounded to its step, at
    least one step), with the weights of the kept channels when `model` is given. A width
    that would turn a block residual (its input width) takes the nearest width that does
    not: the next smaller, else the next larger; never the unit's full width, which a
    small `alpha` would otherwise leave unscaled when its only smaller width is refused."""
    current = list(layers)
    for u in units(layers, multiple)[0]:  # positions do not move: no layer is removed
        if u.kind == "layer":
            continue
        u = next(v for v in units(current, multiple)[0] if (v.kind, v.layer, v.tensors) == (u.kind, u.layer, u.tensors))
        step = math.lcm(multiple, u.group)
        target = max(step, int(round(alpha * u.width / step)) * step)
        widths = candidate_widths(u, multiple)  # largest first
        for w in [c for c in widths if c <= target] + [c for c in reversed(widths) if c > target]:
            new = apply_specs(current, Change(u, w))
            if new is not None:
                if model is not None:
                    change = _with_keep(current, model, Change(u, w), criterion)
                    model = prune(current, model, change, new)
                current = new
                break
    return current, model


def run_uniform(layers: list[LayerSpec], model: nn.Module, costs: NetworkCosts,
                check: Callable[[list[LayerSpec]], list[dict[str, Any]]], evaluator: Evaluator,
                settings: PruneSettings) -> tuple[list[LayerSpec], nn.Module, list[dict[str, Any]]]:
    """The largest uniform factor meeting every budget (bisection over the LUT's
    predictions), applied once: the baseline for the rounds."""
    started = time.perf_counter()
    before = len(costs.profiled)
    low, high = 0.0, 1.0
    for _ in range(10):
        alpha = (low + high) / 2
        if all(r["met"] for r in check(scaled(layers, alpha, settings.multiple)[0])):
            low = alpha
        else:
            high = alpha
    rows = check(layers)
    new, pruned = scaled(layers, low, settings.multiple, model, settings.criterion)
    after = check(new)
    figures = evaluator.figures(pruned)
    evaluator.tune(pruned, settings.round_steps, 999)
    tuned = evaluator.figures(pruned) if settings.round_steps else figures
    target = worst_unmet(rows) or rows[0]
    history = [{"round": 1, "metric": target["metric"], "unit": f"every width x {low:.3f}", "change": "uniform",
                "cost_before": target["value"], "cost_after": next(r["value"] for r in after if r["metric"] == target["metric"]),
                "unit_of_cost": target["unit"], "proposals": 1, **_scores(figures, tuned),
                "blocks_profiled": len(costs.profiled) - before, "seconds": round(time.perf_counter() - started, 3)}]
    return new, pruned, history
