"""`finetune(OUT, data, epochs)`: train an exported network further, resumably.

Starts from the exported weights (model.safetensors), optionally distilling from the
supernet's largest subnet (BN recalibrated) as in Once-for-All's fine-tuning: the loss
is (1 - w) x label-smoothed cross-entropy + w x T^2 KL(teacher || student). Every
random choice of a step (batch order, augmentation) is drawn from (seed, epoch, step),
and a checkpoint is written after every epoch, so a killed run rerun with the same
settings resumes from its last epoch and ends with the weights an uninterrupted run
ends with. The result is written as finetuned.safetensors and a verified
finetuned.onnx, entered in arch.json, and its accuracy into the model card. An arch with
int8 layers also gets the int8 model of the fine-tuned weights, quantized with the export's
settings and verified as `hwnas export` verifies it (nas.export.int8.write_int8):
finetuned_int8.onnx and finetuned_quant_int8.npz, and the card's `finetune.int8`.

With `qat`, an export with int8 layers fine-tunes quantization-aware: its int8 blocks
run with the int8 rounding they are deployed with (nas.supernet.qat, the same fake
quantization the supernet trains with), so the float weights learn to tolerate it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nas.atomic import atomic_path
from nas.errors import NasError
from nas.export.bundle import (
    ARCH_FILE,
    FINETUNE_DIR,
    FINETUNED_INT8_ONNX,
    FINETUNED_INT8_PARAMS,
    FINETUNED_ONNX,
    FINETUNED_WEIGHTS,
    read_record,
    record_file,
    write_json,
)
from nas.export.card import now, read_card, write_card
from nas.export.onnx_export import write_onnx
from nas.jsonfile import read_json
from nas.export.int8 import has_int8
from nas.export.weights import save_weights
from nas.supernet.checkpoint import check_finite
from nas.threads import ensure_configured, retune
from nas.supernet.step import distillation

CHECKPOINT_FORMAT = "hwnas.finetune-checkpoint/1"
SETTINGS_FILE, CHECKPOINT_FILE = "settings.json", "checkpoint.pt"


@dataclass(frozen=True)
class FinetuneSettings:
    """What a fine-tune computes; a rerun resumes only with the same settings."""

    data: str
    epochs: int
    seed: int = 0
    lr: float = 0.01
    batch_size: int = 32
    weight_decay: float = 4e-5
    momentum: float = 0.9
    label_smoothing: float = 0.1
    crop_padding: int = 0
    distill_from: str | None = None
    distill_weight: float = 0.5
    temperature: float = 1.0
    split: str = "val"
    qat: bool = False

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise NasError("epochs and batch size must be at least 1")
        if self.lr <= 0 or not 0 <= self.distill_weight <= 1 or self.temperature <= 0:
            raise NasError("lr and temperature must be positive and the distillation weight between 0 and 1")
        if self.split not in ("val", "test"):
            raise NasError(f"split must be val or test, got {self.split!r}")


def finetune(out: Path | str, data: str, epochs: int, *, seed: int = 0, distill_from: Path | str | None = None,
             lr: float = 0.01, batch_size: int = 32, split: str = "val", qat: bool = False, progress: bool = True,
             max_steps: int | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Fine-tune the export in `out` on `data` ('digits' or a dataset path) for `epochs`;
    returns the card's fine-tune entry (accuracy on `split` before and after, history).
    qat: quantization-aware (an export with int8 layers only).

    max_steps stops after that many optimizer steps of this call without a checkpoint,
    as a kill would (tests use it to check resumption).
    """
    out = Path(out)
    ensure_configured()
    settings = FinetuneSettings(data=str(data), epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                                distill_from=None if distill_from is None else str(distill_from), split=split, qat=qat)
    settings.check()
    record, card = read_record(out), read_card(out)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = out / FINETUNE_DIR
    from nas.export.loader import export_layers, load

    layers = export_layers(out, record)
    if qat and not any(s.precision == "int8" for s in layers):
        raise NasError(f"{out}: the exported arch has no int8 layers, so there is nothing to fine-tune "
                       "quantization-aware; drop --qat")
    model = load(out, finetuned=False).to(device)
    data_set = _dataset(settings, record)
    if data_set.classes > record["classes"]:
        raise NasError(f"{settings.data} has {data_set.classes} classes; the exported network predicts {record['classes']}")
    teacher = _teacher(settings, record, device) if settings.distill_from else None
    quant = _quant_settings(card)
    loop = _Loop(model, teacher, data_set, settings, device, run, record["input"]["resolution"], layers,
                 quant.reduce_range)
    _prepare(run, settings)  # once every input is checked: a refused fine-tune leaves no settings behind
    history = loop.run(progress, max_steps)
    if history is None:
        return {}
    result = {"data": settings.data, "epochs": settings.epochs, "seed": settings.seed, "split": settings.split,
              "distill_from": settings.distill_from, "accuracy_before": loop.before, "accuracy": history[-1]["accuracy"],
              "history": history, "settings": asdict(settings), "weights": FINETUNED_WEIGHTS,
              "preprocessing": {"dataset": data_set.name, "mean": [float(v) for v in data_set.mean],
                                "std": [float(v) for v in data_set.std]}, "finished": now()}
    if has_int8(layers):
        result["int8"] = _int8(out, run, model.eval(), layers, data_set, settings, quant, record["input"]["resolution"])
    _finish(out, record, card, model.eval(), result)
    return result


def _quant_settings(card: dict[str, Any]):
    """How the export quantized its int8 layers (its card's int8 section), for QAT and re-export."""
    from nas.quant import QuantSettings

    cal = (card.get("int8") or {}).get("calibration") or {}
    known = {k: cal[k] for k in ("method", "reduce_range", "percentile") if k in cal}
    return QuantSettings(**known, **({"calib_images": cal["images"]} if cal.get("images") else {}))


def _int8(out: Path, run: Path, model: nn.Module, layers, data, settings: FinetuneSettings, quant, resolution: int
          ) -> dict[str, Any]:
    """The verified int8 model of the fine-tuned weights, moved into OUT under the fine-tune's
    names; returns the card's section for it (accuracy of onnxruntime's int8 model on the split)."""
    import os

    from nas.export.int8 import INT8_ONNX, INT8_PARAMS, write_int8
    from nas.quant import check_calibration

    check_calibration(quant, min(quant.calib_images, len(data.train)))
    pick = np.random.default_rng([settings.seed, 0x8C]).permutation(len(data.train))[:quant.calib_images]
    calib = _resize(data.normalize(data.to_float(data.train.images[torch.as_tensor(pick)])), resolution)
    part = data.split(settings.split)
    images = _resize(data.normalize(data.to_float(part.images)), resolution)
    staging = run / "int8"
    staging.mkdir(parents=True, exist_ok=True)
    section = write_int8(model.cpu(), layers, calib, quant, staging, images, part.labels,
                         calib_source=f"training split of {settings.data} (seeded pick)",
                         verify_source=f"{settings.split} images", seed=settings.seed)
    for name, final in ((INT8_ONNX, FINETUNED_INT8_ONNX), (INT8_PARAMS, FINETUNED_INT8_PARAMS)):
        os.replace(staging / name, out / final)
    return {**section, "file": FINETUNED_INT8_ONNX, "params_file": FINETUNED_INT8_PARAMS}


def _prepare(run: Path, settings: FinetuneSettings) -> None:
    wanted = asdict(settings)
    path = run / SETTINGS_FILE
    if path.is_file():
        found = read_json(path, f"{path}: missing", damaged=f"delete {run} to start over")
        found = {"qat": False, **found} if isinstance(found, dict) else found  # written before --qat existed
        if found != wanted:
            changed = [k for k in wanted if found.get(k) != wanted[k]]
            raise NasError(f"{run} holds a fine-tune with other settings ({', '.join(changed) or 'format'}); "
                           f"delete {run} to start over")
        return
    write_json(path, wanted)


def _dataset(settings: FinetuneSettings, record: dict[str, Any]):
    return export_dataset(settings.data, record)


def export_dataset(data: str, record: dict[str, Any]):
    """The data as the network was trained on it when it is the supernet's source (same
    split, read at the same size and resized per batch), else read at the input size."""
    from nas.data import load_dataset

    pre = record["input"].get("preprocessing") or {}
    same = pre.get("source") == data
    split = pre.get("split", {}) if same else {}
    size = pre.get("load_resolution", record["input"]["resolution"]) if same else record["input"]["resolution"]
    return load_dataset(data, size, record["input"]["channels"],
                        val_fraction=split.get("val_fraction", 0.1), test_fraction=split.get("test_fraction", 0.2),
                        split_seed=split.get("split_seed", 0), noise=split.get("noise", 0.0))


def _teacher(settings: FinetuneSettings, record: dict[str, Any], device: torch.device) -> tuple[nn.Module, int]:
    """The supernet's largest subnet with BN recalibrated, and its input size; or, when
    distill_from is an export folder (a pruned network's parent), that network."""
    if (Path(settings.distill_from) / ARCH_FILE).is_file():
        return export_teacher(Path(settings.distill_from), device)
    from nas.export.inherit import load_matching_supernet
    from nas.export.loader import find_space
    from nas.supernet import recalibrate_bn
    from nas.supernet.trainer import dataset_for

    space = find_space(record)
    if space is None:
        raise NasError(f"space {record['space']} is not available here; distillation needs it to read the supernet")
    config, supernet = load_matching_supernet(Path(settings.distill_from), space, device)
    largest = space.extreme(True)
    teacher = supernet.extract(largest)
    data = dataset_for(config, space)
    pick = np.random.default_rng([settings.seed, 0x7EAC]).permutation(len(data.train))[:config.calib_images]
    images = data.normalize(data.to_float(data.train.images[torch.as_tensor(pick)].to(device)))
    resolution = space.resolution(largest)
    recalibrate_bn(teacher, _resize(images, resolution), config.eval_batch_size)
    return teacher.eval(), resolution


def export_teacher(folder: Path, device: torch.device) -> tuple[nn.Module, int]:
    """An export (fine-tuned weights when finished) as a teacher, and its input size."""
    from nas.export.loader import load

    return load(folder).to(device).eval(), read_record(folder)["input"]["resolution"]


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, split: str, resolution: int, batch_size: int = 256) -> float:
    """Top-1 accuracy (0..1) of `model` on one split: images normalised with the data's
    statistics and resized to the network's input size, as the supernet evaluates."""
    model.eval()
    part = data.split(split)
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(part), batch_size):
        x = _resize(data.normalize(data.to_float(part.images[start:start + batch_size].to(device))), resolution)
        correct += int((model(x).argmax(1).cpu() == part.labels[start:start + batch_size]).sum())
    return correct / max(1, len(part))


class _Loop:
    def __init__(self, model, teacher, data, settings: FinetuneSettings, device, run: Path, resolution: int,
                 layers, reduce_range: bool = False) -> None:
        from nas.data import Augment
        from nas.supernet.qat import FakeQuantNetwork

        self.model, self.teacher, self.data, self.s, self.device, self.run_dir = model, teacher, data, settings, device, run
        # what a training step runs: the network itself, or the same network with its int8 blocks fake-quantized
        self.forward = FakeQuantNetwork(model, layers, reduce_range) if settings.qat else model
        self.resolution = resolution
        self.augment = Augment(crop_padding=settings.crop_padding)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                         nesterov=True, weight_decay=settings.weight_decay)
        self.steps = len(data.train) // settings.batch_size
        if self.steps < 1:
            raise NasError(f"{settings.data} has {len(data.train)} training images, fewer than a batch of {settings.batch_size}")
        self.epoch, self.history, self.before = 0, [], None

    def _save(self) -> None:
        with atomic_path(self.run_dir / CHECKPOINT_FILE) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, "epoch": self.epoch, "model": self.model.state_dict(),
                        "optimizer": self.optimizer.state_dict(), "history": self.history, "before": self.before}, tmp)

    def _resume(self) -> None:
        path = self.run_dir / CHECKPOINT_FILE
        if not path.is_file():
            return
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several types for damaged or foreign files
            raise NasError(f"{path}: not a readable checkpoint ({type(exc).__name__}); delete {self.run_dir} "
                           "to start over") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise NasError(f"{path}: not a {CHECKPOINT_FORMAT} file; delete {self.run_dir} to start over")
        check_finite(state.get("model"), path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.history, self.before = state["epoch"], state["history"], state["before"]

    def lr_at(self, epoch: int, step: int) -> float:
        """Cosine decay over all steps of the fine-tune."""
        done, total = epoch * self.steps + step, self.s.epochs * self.steps
        return self.s.lr * 0.5 * (1 + math.cos(math.pi * done / total))

    def run(self, progress: bool, max_steps: int | None) -> list[dict[str, Any]] | None:
        self._resume()
        if self.before is None:
            self.before = evaluate(self.model, self.data, self.s.split, self.resolution)
        done = 0
        while self.epoch < self.s.epochs:
            order = np.random.default_rng([self.s.seed, self.epoch, 0xF1]).permutation(len(self.data.train))
            self.model.train()
            seen = correct = loss_sum = 0.0
            bar = tqdm(range(self.steps), desc=f"fine-tune epoch {self.epoch + 1}/{self.s.epochs}", unit="step",
                       disable=not progress, leave=False, dynamic_ncols=True)
            for step in bar:
                retune()
                loss, hits, n = self.step(order[step * self.s.batch_size:(step + 1) * self.s.batch_size], step)
                seen, correct, loss_sum = seen + n, correct + hits, loss_sum + loss * n
                done += 1
                if max_steps is not None and done >= max_steps:
                    return None
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            bar.close()
            accuracy = evaluate(self.model, self.data, self.s.split, self.resolution)
            self.history.append({"epoch": self.epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen,
                                 "accuracy": accuracy})
            if progress:
                tqdm.write(f"epoch {self.epoch + 1}: loss {loss_sum / seen:.4f} train_acc {correct / seen:.4f} "
                           f"{self.s.split}_acc {accuracy:.4f}")
            self.epoch += 1
            self._save()
        return self.history

    def step(self, index: np.ndarray, step: int) -> tuple[float, float, int]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.epoch, step)
        picked = torch.as_tensor(index)
        x = self.data.to_float(self.data.train.images[picked].to(self.device))
        y = self.data.train.labels[picked].to(self.device)
        rng = np.random.default_rng([self.s.seed, self.epoch, step, 0xA6])
        x = self.data.normalize(self.augment.apply(x, self.augment.draw(rng, tuple(x.shape))))
        logits = self.forward(_resize(x, self.resolution))
        loss = F.cross_entropy(logits, y, label_smoothing=self.s.label_smoothing)
        if self.teacher is not None:
            teacher, resolution = self.teacher
            with torch.no_grad():
                soft = F.softmax(teacher(_resize(x, resolution)) / self.s.temperature, dim=1)
            kd = distillation(logits, soft, self.s.temperature)
            loss = (1 - self.s.distill_weight) * loss + self.s.distill_weight * kd
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), float((logits.argmax(1) == y).sum()), len(y)


def _finish(out: Path, record: dict[str, Any], card: dict[str, Any], model: nn.Module, result: dict[str, Any]) -> None:
    """Fine-tuned weights and verified ONNX, then arch.json, then the card (each atomic)."""
    save_weights(model, out / FINETUNED_WEIGHTS, {"space": record["space"], "arch_id": record.get("arch_id", "")})
    check = write_onnx(model, tuple(record["input"]["shape"]), out / FINETUNED_ONNX)
    int8 = (FINETUNED_INT8_ONNX, FINETUNED_INT8_PARAMS) if result.get("int8") else ()
    for name in (FINETUNED_WEIGHTS, FINETUNED_ONNX, *int8):
        record_file(out, record, name)
    write_json(out / ARCH_FILE, record)
    card["finetune"] = {**result, "onnx": {"file": FINETUNED_ONNX, **check.to_dict()}}
    write_card(out, card)
