"""The training loop shared by supernets and stand-alone archs.

Each step draws its global batch, augmentation and archs from generators seeded by
(seed, epoch, step), so the loop has no hidden state besides what the checkpoint
holds (weights, optimizer, loss scaler, counters): a run killed at any point and
resumed from its last checkpoint finishes with the same weights as one that never
stopped. The losses of a step's subnets come from nas.supernet.step. Gradients of
all subnets and of the config's `micro_batches` add up before one optimizer step; with
several processes (local CPU workers or torchrun) each runs its share of the
micro-batches and DistributedDataParallel averages the gradients, so W processes
match one process accumulating all of them (up to float rounding).
"""
from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nas.data import Augment, BatchPlan, ImageDataset, load_dataset
from nas.space import load_space
from nas.space.arch import Arch
from nas.space.base import SearchSpace
from nas.space.builder import check_network_size
from nas.supernet import distributed
from nas.supernet.checkpoint import load_checkpoint, save_checkpoint
from nas.supernet.config import TrainConfig
from nas.supernet.evaluation import channels_last
from nas.supernet.optim import lr_at, make_optimizer
from nas.supernet.run import RunDir
from nas.supernet.step import SubnetsStep
from nas.supernet.tasks import StandaloneTask, SupernetTask, Task
from nas.threads import ensure_configured, plan_workers, retune

ARCH_STREAM, AUGMENT_STREAM = 1, 2


def dataset_for(config: TrainConfig, space: SearchSpace) -> ImageDataset:
    """The config's dataset at the space's largest input size (smaller ones are resized per arch)."""
    d = config.data
    largest = space.extreme(True)
    return load_dataset(d.source, space.resolution(largest), space.in_channels,
                        val_fraction=d.val_fraction, test_fraction=d.test_fraction, split_seed=d.split_seed,
                        noise=d.noise, classes=space.layers(largest)[-1].out_ch)


def augment_for(config: TrainConfig, resolution: int) -> Augment:
    d = config.data
    padding = resolution // 8 if d.crop_padding is None else d.crop_padding
    flip = d.source != "digits" if d.flip is None else d.flip
    return Augment(padding, flip, d.aug_noise)


def train(config: TrainConfig, out: Path | str, *, arch: Arch | dict | None = None, progress: bool = True,
          max_steps: int | None = None) -> list[dict[str, Any]]:
    """Train a supernet (or, given `arch`, that arch alone) into `out`, resuming from its
    checkpoint if there is one; returns the per-epoch history.

    On CPU, outside torchrun, the run uses the workers nas.threads.plan_workers chooses
    (one per free core by default, `config.workers` if set): several start local worker
    processes (nas.supernet.workers) that train it together, one trains here. The
    result does not depend on which (the micro-batches are fixed by the config).
    max_steps stops after that many optimizer steps of this call without saving, as a
    kill would (tests use it to check resumption).
    """
    ensure_configured()  # the default parallelism, unless the CLI or the caller chose one
    if not torch.cuda.is_available() and not distributed.launched():
        parallelism = plan_workers(config.workers, config.micro_batches)
        if parallelism.workers > 1:
            from nas.supernet import workers

            if progress:
                tqdm.write(f"training on {parallelism.summary()}", file=sys.stderr)
            return workers.launch("nas.supernet.trainer:train_worker", {
                "config": config.to_dict(), "out": str(out), "arch": None if arch is None else dict(arch),
                "progress": progress, "max_steps": max_steps}, parallelism)
    with distributed.process_group() as ctx:
        space = load_space(config.space)
        run = RunDir(out)
        check_network_size(space.layers(space.extreme(True)))  # a supernet holds the largest arch's weights
        task = SupernetTask(space, config) if arch is None else StandaloneTask(space, space.arch(arch), config)
        data = dataset_for(config, space)  # before the run folder is written: a bad --data leaves nothing behind
        if ctx.main:
            run.prepare(config, space, None if arch is None else task.arch)
        return TrainLoop(config, task, data, run, ctx, progress).run(max_steps)


def train_worker(config: dict[str, Any], out: str, arch: dict | None, progress: bool,
                 max_steps: int | None) -> list[dict[str, Any]]:
    """One local worker's share of `train` (its arguments as JSON; nas.supernet.workers)."""
    from nas.supernet.config import config_from_dict

    return train(config_from_dict(config), out, arch=arch, progress=progress, max_steps=max_steps)


class TrainLoop:
    """One run's state (model, optimizer, counters) and its steps."""

    def __init__(self, config: TrainConfig, task: Task, data: ImageDataset,
                 run: RunDir | None, ctx: distributed.Context, progress: bool = True) -> None:
        self.config, self.task, self.data, self.run_dir, self.ctx, self.progress = config, task, data, run, ctx, progress
        self.augment = augment_for(config, data.resolution)
        self.model = task.model.to(ctx.device)
        self.plan = BatchPlan(len(data.train), config.batch_size, config.seed, ctx.world, ctx.rank, config.micro_batches)
        self.optimizer = make_optimizer(self.model, config.optimizer)
        cuda = ctx.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        self.use_amp = cuda and config.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        autocast = {"device_type": ctx.device.type, "dtype": self.amp_dtype, "enabled": self.use_amp}
        self.step_module = SubnetsStep(task, config.label_smoothing, config.sampling.kd_temperature, autocast)
        self.wrapped = self.step_module
        if ctx.distributed:
            # A 1x1 convolution's weight gradient comes back channels-last (as its input),
            # which DDP copies into its bucket and warns about once per process; the copy is
            # all it costs (a plain UserWarning, so filtered by its text).
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.wrapped = DistributedDataParallel(self.step_module, device_ids=[ctx.device] if cuda else None,
                                                   find_unused_parameters=True)
        self.epoch, self.step, self.history = 0, 0, []
        self.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch: int, step: int) -> None:
        """Checkpoint the state before step `step` of epoch `epoch` (0-based)."""
        if self.ctx.main and self.run_dir is not None:
            save_checkpoint(self.run_dir.checkpoint, {
                "epoch": epoch, "step": step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "history": self.history, "sums": self.sums})

    def _resume(self) -> None:
        if self.run_dir is None or not self.run_dir.checkpoint.is_file():
            return
        state = load_checkpoint(self.run_dir.checkpoint, self.ctx.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.history, self.sums = state["epoch"], state["step"], state["history"], state["sums"]

    # ------------------------------------------------------------------ loop
    def run(self, max_steps: int | None) -> list[dict[str, Any]]:
        self._resume()
        steps, done = self.plan.steps_per_epoch, 0
        total = steps * self.config.epochs
        while self.epoch < self.config.epochs:
            if self.step == 0:
                self.task.begin_epoch(self.epoch, self.optimizer)
            order = self.plan.order(self.epoch)
            start, started = self.step, time.perf_counter()
            bar = tqdm(range(self.step, steps), desc=f"epoch {self.epoch + 1}/{self.config.epochs}", unit="step",
                       disable=not (self.progress and self.ctx.main), leave=False, dynamic_ncols=True)
            for step in bar:
                self.step = step
                lr = lr_at(self.epoch * steps + step, total, steps, self.config.optimizer.lr, self.config.schedule)
                self.train_step(order, lr)
                done += 1
                if max_steps is not None and done >= max_steps:
                    return self.history
                seen = (step + 1 - start) * self.config.batch_size
                bar.set_postfix(loss=f"{self.sums['loss'] / max(1, self.sums['seen']):.3f}",
                                acc=f"{self.sums['correct'] / max(1, self.sums['seen']):.3f}",
                                img_s=f"{seen / (time.perf_counter() - started):.0f}", lr=f"{lr:.3g}")
                every = self.config.checkpoint_every
                if every and (step + 1) % every == 0 and step + 1 < steps:
                    self._save(self.epoch, step + 1)
            bar.close()
            self._end_epoch(lr, (steps - start) * self.config.batch_size / (time.perf_counter() - started))
        return self.history

    def _end_epoch(self, lr: float, images_per_s: float) -> None:
        seen = max(1.0, self.sums["seen"])
        record = {"epoch": self.epoch + 1, "lr": lr, "loss": self.sums["loss"] / seen,
                  "train_acc": self.sums["correct"] / seen, "images_per_s": images_per_s,
                  "workers": self.ctx.world, "threads": torch.get_num_threads()}
        if self.ctx.main:
            record.update(self.task.report(self.data, self.config, self.epoch))
            tqdm.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()),
                       file=sys.stderr)
        self.history.append(record)
        self.epoch, self.step = self.epoch + 1, 0
        self.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
        self._save(self.epoch, 0)
        if self.ctx.main and self.run_dir is not None:
            self.run_dir.write_history(self.history)

    def train_step(self, order: np.ndarray, lr: float) -> None:
        """One optimizer step on the global batch `self.step` of the epoch (in `order`)."""
        retune()  # neighbours come and go during a run: follow the free cores
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.step_module.archs = self.task.archs(self.epoch, self.plan.step_rng(self.epoch, self.step, ARCH_STREAM))
        index = self.plan.global_batch(order, self.step)
        shape = (len(index), *self.data.train.images.shape[1:])
        draw = self.augment.draw(self.plan.step_rng(self.epoch, self.step, AUGMENT_STREAM), shape)
        micro = self.plan.local_slices()
        for i, rows in enumerate(micro):
            picked = torch.as_tensor(index[rows])
            x = self.data.train.images[picked].to(self.ctx.device, non_blocking=True)
            y = self.data.train.labels[picked].to(self.ctx.device, non_blocking=True)
            x = channels_last(self.data.normalize(self.augment.apply(self.data.to_float(x), draw.take(rows))))
            sync = not self.ctx.distributed or i == len(micro) - 1
            with contextlib.nullcontext() if sync else self.wrapped.no_sync():
                total, loss, logits = self.wrapped(x, y)
                self.scaler.scale(total / len(micro)).backward()
            self.sums["loss"] += float(loss) * len(y)
            self.sums["correct"] += float((logits.argmax(1) == y).sum())
            self.sums["seen"] += len(y)
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
