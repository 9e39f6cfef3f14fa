"""Differentiable search (FBNet / ProxylessNAS style) against a latency target.

Architecture parameters hold one logit per choice of every decision. Supernet weights
and these logits train jointly on two halves of the data: a weight step on a training
batch runs one arch sampled from the current distribution; an architecture step on a
validation batch samples a hard Gumbel-softmax arch (straight-through, GDAS style: the
sampled path runs, and each layer position's output is multiplied by the sample's
one-hot weights of the decisions it reads, which are 1 in value but carry the
gradient to the logits). Its loss is the cross entropy plus a cost penalty on the
expected cost under the architecture distribution (softmax of the logits), through the
cost source's `expected(probs)` (ProxylessNAS's expected latency; for a LUT a sum of
per-slot tables contracted with the choice probabilities). Penalising the distribution
itself, rather than a tempered Gumbel sample, makes the expectation the loss drives
exactly the one reported, so the `abs` penalty lands it on the target:

    abs             CE + w |E[lat]/T - 1|          (TuNAS's absolute reward: lands on T)
    hinge           CE + w max(0, E[lat]/T - 1)    (only over-budget is penalised)
    multiplicative  CE (E[lat]/T)^w                (FBNet's loss)

The target T is the bound of the first constraint (or the one `target` names); other
constraints with a differentiable expectation get the hinge penalty. The derived arch
is the most probable one whose cost is within `tolerance` of T: the most probable
choice of every decision when that arch qualifies, else the most probable of 1,000
archs sampled from the learned distribution that does (FBNet also samples its final
archs from the distribution). It is reported with the expected cost under the final
distribution, its own cost from the source (the LUT), and its test accuracy with
inherited weights after BN recalibration.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from tqdm import tqdm

from nas.atomic import write_atomic
from nas.costs import CostModel
from nas.errors import NasError
from nas.search.controllers.base import Controller, ControllerSettings
from nas.search.objectives import Objective
from nas.search.problem import Problem
from nas.search.runner import SearchOutcome
from nas.space.arch import Arch

if TYPE_CHECKING:
    from nas.search.config import SearchConfig
    from nas.search.ledger import Ledger
    from nas.space.base import SearchSpace

PENALTIES = ("abs", "hinge", "multiplicative")
WEIGHT_STREAM, ARCH_STREAM, AUGMENT_STREAM = 11, 12, 13
DERIVE_SAMPLES = 1000


class DifferentiableSettings(ControllerSettings):
    name: Literal["differentiable"] = "differentiable"
    epochs: int = Field(10, ge=1)
    warmup_epochs: int = 2              # epochs of weight steps only, before the logits train
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)       # supernet weights (SGD, cosine)
    arch_lr: float = Field(0.05, gt=0)  # architecture logits (Adam)
    arch_weight_decay: float = 0.0
    tau_start: float = Field(5.0, gt=0)  # Gumbel-softmax temperature, annealed geometrically
    tau_end: float = Field(0.1, gt=0)
    penalty: str = "abs"                # abs | hinge | multiplicative (see the module doc)
    weight: float = Field(2.0, gt=0)
    target: str | None = None           # the constrained metric to land on; None: the first constraint
    data: str = "digits"
    val_fraction: float = 0.3           # the share of the data the architecture steps use
    calib_images: int = Field(256, ge=1)
    tolerance: float = Field(0.10, gt=0)  # the derived arch's cost must be this close to the target
    steps_per_epoch: int | None = None  # None: every batch

    @field_validator("penalty")
    @classmethod
    def _penalty(cls, value: str) -> str:
        if value not in PENALTIES:
            raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}, got {value!r}")
        return value

    @field_validator("steps_per_epoch")
    @classmethod
    def _steps(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"steps_per_epoch must be a positive integer or null (every batch), got {value!r}")
        return value

    @model_validator(mode="after")
    def _warmup(self) -> DifferentiableSettings:
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be an integer from 0 to epochs - 1, got {self.warmup_epochs!r}")
        return self


class Differentiable(Controller):
    """The differentiable search as a controller: it trains its own supernet, so it keeps
    no study (it checkpoints into the output folder instead) and spends no query budget."""

    name = "differentiable"
    Settings = DifferentiableSettings
    records_queries = False

    def problem(self, space: SearchSpace, config: SearchConfig) -> Problem:
        """The costs only: minimise the first constraint's metric under every constraint (the
        accuracy objective is the supernet's own training loss)."""
        if [(o.metric, o.direction) for o in config.objectives] != [("accuracy", "maximize")]:
            raise NasError("the differentiable controller maximises the accuracy of the supernet it trains: objectives "
                           "must be [max accuracy], with the cost target under constraints")
        if not config.constraints:
            raise NasError("the differentiable controller needs a cost target under constraints, like "
                           "'latency@local-cpu <= 0.4 ms'")
        target = config.constraints[0].metric
        return Problem.build(space, [Objective(target, "minimize")], config.constraints, config.sources, config.base)

    def search(self, problem: Problem, ledger: Ledger | None, budget: int, progress: bool = True,
               out: Path | None = None) -> DifferentiableResult:
        return differentiable_search(problem, self.settings, self.seed, progress,
                                     checkpoint=out / "differentiable.pt" if out is not None else None)


@dataclass
class DifferentiableResult(SearchOutcome):
    problem: Problem
    arch: Arch
    codes: np.ndarray
    target_metric: str
    target: float
    expected: float           # the target metric's expectation under the final distribution
    measured: float           # the cost source's value of the derived arch (the LUT sum)
    accuracy: float           # test accuracy of the derived arch with inherited weights
    metrics: dict[str, float]  # every cheap metric of the derived arch
    probs: list[list[float]]
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def error(self) -> float:
        """Relative distance of the derived arch's cost from the target."""
        return self.measured / self.target - 1.0

    def to_dict(self, tolerance: float) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "target_metric": self.target_metric, "target": self.target,
                "expected": self.expected, "measured": self.measured, "relative_error": self.error,
                "within_tolerance": abs(self.error) <= tolerance, "tolerance": tolerance, "test_accuracy": self.accuracy,
                "metrics": self.metrics, "probs": self.probs, "history": self.history}

    def summary(self, config: SearchConfig) -> dict[str, Any]:
        settings = config.controller
        return {"schema": "hwnas.search/1", "controller": settings.name, "space": self.problem.space.name,
                "constraints": [str(c) for c in self.problem.constraints],
                "settings": settings.model_dump(exclude={"name"}), "seed": config.seed,
                **self.to_dict(settings.tolerance)}

    def write(self, out: Path, summary: dict[str, Any]) -> list[Path]:
        files = [out / "summary.json", out / "arch.json"]
        write_atomic(files[0], json.dumps(summary, indent=2) + "\n")
        write_atomic(files[1], self.arch.to_json() + "\n")
        return files

    def lines(self, summary: dict[str, Any]) -> list[str]:
        s = summary
        return [f"derived arch {s['arch']['arch_id']}: {s['target_metric']} {s['measured']:.4g} (expected "
                f"{s['expected']:.4g}, target {s['target']:.4g}, {s['relative_error']:+.1%}); test accuracy "
                f"{s['test_accuracy']:.4f}"]


def differentiable_search(problem: Problem, settings: DifferentiableSettings, seed: int = 0, progress: bool = True,
                          checkpoint: Path | None = None) -> DifferentiableResult:
    """Train supernet weights and architecture logits jointly; derive the most probable arch.

    The accuracy objective is the supernet's own training loss, so `problem` holds the
    costs only: its constraints (the first, or `target`, is the latency target). With a
    `checkpoint` path the state is saved after every epoch and a rerun resumes from it;
    every random draw comes from (seed, epoch, step), so the resumed run ends exactly
    where an uninterrupted one does.
    """
    from nas.data import Augment, BatchPlan, load_dataset
    from nas.supernet import SubnetEvaluator, Supernet
    from nas.supernet.checkpoint import load_checkpoint, save_checkpoint
    from nas.supernet.config import OptimizerConfig, ScheduleConfig
    from nas.supernet.optim import lr_at, make_optimizer

    s = settings.model_dump(exclude={"name"})
    penalised = _penalised(problem, s["target"])
    space = problem.space
    identity = json.dumps({"problem": problem.describe(), "settings": s, "seed": seed}, sort_keys=True, default=str)
    torch.manual_seed(seed)
    largest = space.extreme(True)  # labels are checked against the network's classes before any training
    data = load_dataset(s["data"], space.resolution(largest), space.in_channels,
                        val_fraction=s["val_fraction"], split_seed=seed, classes=space.layers(largest)[-1].out_ch)
    supernet = Supernet(space, seed=seed).train()
    alphas = [torch.zeros(int(r), requires_grad=True) for r in space.radices]
    w_opt = make_optimizer(supernet, OptimizerConfig(lr=s["lr"]))
    a_opt = torch.optim.Adam(alphas, lr=s["arch_lr"], betas=(0.5, 0.999), weight_decay=s["arch_weight_decay"])
    train_plan = BatchPlan(len(data.train), min(s["batch_size"], len(data.train)), seed)
    val_plan = BatchPlan(len(data.val), min(s["batch_size"], len(data.val)), seed + 1)
    augment = Augment(crop_padding=data.resolution // 8)
    steps, epochs = min(train_plan.steps_per_epoch, s["steps_per_epoch"] or train_plan.steps_per_epoch), s["epochs"]
    start, history = 0, []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(Path(checkpoint))
        if state.get("identity") != identity:
            raise NasError(f"{checkpoint} holds another differentiable search (other space, budgets, settings or "
                           "seed); use another --out folder or delete it to start over")
        supernet.load_state_dict(state["supernet"])
        with torch.no_grad():
            for a, saved in zip(alphas, state["alphas"]):
                a.copy_(saved)
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        start, history = state["epoch"], state["history"]
    bar = tqdm(total=epochs * steps, initial=start * steps, desc="differentiable search", unit="step",
               disable=not progress, leave=False)
    for epoch in range(start, epochs):
        tau = s["tau_start"] * (s["tau_end"] / s["tau_start"]) ** (epoch / max(1, epochs - 1))
        order, val_order = train_plan.order(epoch), val_plan.order(epoch)
        sums = {"ce": 0.0, "penalty": 0.0, "arch_steps": 0}
        for step in range(steps):
            for group in w_opt.param_groups:
                group["lr"] = lr_at(epoch * steps + step, epochs * steps, steps, s["lr"], ScheduleConfig())
            x, y = _batch(data, data.train, train_plan.global_batch(order, step), augment,
                          train_plan.step_rng(epoch, step, AUGMENT_STREAM))
            with torch.no_grad():
                codes, _ = _sample(alphas, tau, _generator(seed, epoch, step, WEIGHT_STREAM))
            loss = F.cross_entropy(_forward(supernet, x, codes, None), y)
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(supernet.parameters(), 5.0)
            w_opt.step()
            if epoch >= s["warmup_epochs"]:
                vstep = step % val_plan.steps_per_epoch
                xv, yv = _batch(data, data.val, val_plan.global_batch(val_order, vstep), None, None)
                codes, hard = _sample(alphas, tau, _generator(seed, epoch, step, ARCH_STREAM))
                ce = F.cross_entropy(_forward(supernet, xv, codes, hard), yv)
                penalty = _penalty(problem, penalised, [F.softmax(a, dim=0) for a in alphas], s, ce)
                a_opt.zero_grad(set_to_none=True)
                (penalty if s["penalty"] == "multiplicative" else ce + penalty).backward()
                a_opt.step()
                w_opt.zero_grad(set_to_none=True)
                sums["ce"] += float(ce.detach())
                sums["penalty"] += float(penalty.detach())
                sums["arch_steps"] += 1
            bar.update(1)
        history.append(_epoch_record(problem, penalised[0], alphas, epoch, tau, sums))
        if checkpoint is not None:
            save_checkpoint(Path(checkpoint), {
                "identity": identity, "epoch": epoch + 1, "supernet": supernet.state_dict(),
                "alphas": [a.detach().clone() for a in alphas], "w_opt": w_opt.state_dict(),
                "a_opt": a_opt.state_dict(), "history": history})
    bar.close()
    evaluator = SubnetEvaluator(supernet.eval(), data, "test", s["calib_images"], 256, seed)
    return _derive(problem, penalised[0], alphas, history, evaluator, s["tolerance"], seed)


def _generator(seed: int, epoch: int, step: int, stream: int) -> torch.Generator:
    """A torch generator owned by one step and one purpose, so no random state needs saving."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, step, stream]).generate_state(1)[0]))


def _penalised(problem: Problem, target: str | None) -> list:
    """The constraints the loss penalises, the target first; each needs expected()."""
    if not problem.constraints:
        raise NasError("the differentiable controller needs a cost target: add a constraint like "
                       "'latency@local-cpu <= 0.4 ms'")
    chosen = [c for c in problem.constraints if target is None or c.metric == target]
    if not chosen:
        raise NasError(f"controller differentiable: target {target!r} is not a constrained metric; constrained: "
                       f"{', '.join(c.metric for c in problem.constraints)}")
    ordered = [chosen[0]] + [c for c in problem.constraints if c is not chosen[0]]
    for c in ordered:
        model = problem.metrics[c.metric].model
        if type(model).expected is CostModel.expected:
            raise NasError(f"{c.metric} ({type(model).__name__}) has no differentiable expectation; the "
                           "differentiable controller needs LUT, energy or counter costs")
    if not ordered[0].upper:
        raise NasError(f"the target constraint {ordered[0]} must be an upper bound (<=)")
    return ordered


def _sample(alphas: list[torch.Tensor], tau: float, gen: torch.Generator):
    """(codes, hard straight-through Gumbel-softmax one-hot per decision)."""
    hard, codes = [], []
    for a in alphas:
        u = torch.rand(a.shape, generator=gen).clamp_(1e-10, 1 - 1e-10)
        y = F.softmax((a - torch.log(-torch.log(u))) / tau, dim=0)
        index = int(y.argmax())
        one_hot = F.one_hot(torch.tensor(index), len(a)).to(y.dtype)
        hard.append(one_hot - y.detach() + y)
        codes.append(index)
    return np.array(codes, dtype=np.int64), hard


def _forward(supernet, x: torch.Tensor, codes: np.ndarray, gates: list[torch.Tensor] | None) -> torch.Tensor:
    """The sampled arch's logits. With gates, every layer position's output (an inactive
    layer's is its input) is scaled by the unit-valued one-hot weights of the decisions it
    reads that shape the network, so gradients reach those decisions' logits, a depth
    included when the sampled depth skips the layer."""
    from nas.supernet.evaluation import resize

    space = supernet.space
    arch = space.decode(codes)
    column = {d.name: i for i, d in enumerate(space.decisions)}
    shaping = space.active_mask(codes[None, :])[0] if gates is not None else None
    x = resize(x, space.resolution(arch))
    for block, slot in zip(supernet.blocks, supernet.slots):
        spec = slot.make(arch, None)
        if spec is not None:
            x = block(x, spec)
        if gates is not None:
            for name in slot.deps:
                c = column[name]
                if shaping[c]:
                    x = x * gates[c][codes[c]]
    return x


def _penalty(problem: Problem, penalised: list, probs: list[torch.Tensor], s: dict[str, Any],
             ce: torch.Tensor) -> torch.Tensor:
    probs = [p.double() for p in probs]
    total = torch.zeros((), dtype=torch.float64)
    for i, c in enumerate(penalised):
        ratio = problem.metrics[c.metric].model.expected(probs) / c.bound
        if i == 0 and s["penalty"] == "abs":
            total = total + s["weight"] * (ratio - 1).abs()
        elif i == 0 and s["penalty"] == "multiplicative":
            return ce * ratio.float() ** s["weight"]
        else:
            total = total + s["weight"] * torch.clamp(ratio - 1, min=0)
    return total.float()


def _batch(data, split, index: np.ndarray, augment, rng: np.random.Generator | None):
    picked = torch.as_tensor(index)
    x = data.to_float(split.images[picked])
    if augment is not None and rng is not None:
        x = augment.apply(x, augment.draw(rng, tuple(x.shape)))
    return data.normalize(x), split.labels[picked]


def _probs(alphas: list[torch.Tensor]) -> list[torch.Tensor]:
    return [F.softmax(a.detach(), dim=0).double() for a in alphas]


def _epoch_record(problem: Problem, target, alphas, epoch: int, tau: float, sums: dict[str, float]) -> dict[str, float]:
    model = problem.metrics[target.metric].model
    codes = problem.identical(np.array([[int(a.argmax()) for a in alphas]]))
    n = max(1, sums["arch_steps"])
    return {"epoch": epoch + 1, "tau": tau, "val_ce": sums["ce"] / n, "penalty": sums["penalty"] / n,
            "expected": float(model.expected(_probs(alphas))), "argmax": float(model.predict(codes)[0])}


def _derive(problem: Problem, target, alphas, history, evaluator, tolerance: float, seed: int,
            samples: int = DERIVE_SAMPLES) -> DifferentiableResult:
    """The most probable arch whose cost is within `tolerance` of the target: the argmax of
    every decision if it is, else the most probable of `samples` archs drawn from the
    final distribution that is (scored in one vectorised call); the argmax if none is."""
    probs = _probs(alphas)
    logp = [np.log(p.numpy() + 1e-12) for p in probs]
    model = problem.metrics[target.metric].model
    rng = np.random.default_rng([seed, 0xDE])
    drawn = np.stack([rng.choice(len(p), size=samples, p=p.numpy() / p.numpy().sum()) for p in probs], axis=1)
    candidates = problem.identical(np.vstack([[int(a.argmax()) for a in alphas], drawn]))
    cost = model.predict(candidates)
    score = sum(lp[candidates[:, d]] for d, lp in enumerate(logp))
    within = np.abs(cost / target.bound - 1) <= tolerance
    pick = 0 if within[0] or not within.any() else int(np.flatnonzero(within)[np.argmax(score[within])])
    codes = candidates[pick]
    arch = problem.space.decode(codes)
    cheap = {k: float(v[0]) for k, v in problem.cheap(codes[None, :]).items()}
    return DifferentiableResult(
        problem=problem, arch=arch, codes=codes, target_metric=target.metric, target=target.bound,
        expected=float(model.expected(probs)), measured=float(cost[pick]),
        accuracy=float(evaluator.accuracy(arch)), metrics=cheap,
        probs=[[round(float(p), 4) for p in q] for q in probs], history=history)
