"""Training configuration: one YAML file (every key optional), validated into dataclasses.

The defaults are the quickstart: tiny_mbconv on the digits in a few CPU minutes.

    space: tiny_mbconv                 # a shipped space name or a space YAML path
    data: {source: digits}             # digits or a path; see nas.data
    epochs: 4
    batch_size: 32                     # global batch (all processes together)
    sampling: {rule: sandwich, random_subnets: 2, distill: true}
    progressive: true                  # or {phases: [[kernel], [kernel, depth], [kernel, depth, expand]], epochs: [1, 1, 2]}
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 4.0e-5}
    schedule: {name: cosine, warmup_epochs: 1}

Unknown keys and wrong types are errors that name the key, so a typo cannot silently
fall back to a default.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError, closest


@dataclass(frozen=True)
class DataConfig:
    source: str = "digits"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    noise: float = 0.0                 # fixed pixel noise on every split (a harder task)
    crop_padding: int | None = None    # random-crop padding; None: resolution // 8
    flip: bool | None = None           # random flips; None: on, except for digits
    aug_noise: float = 0.0             # fresh Gaussian noise per training batch


@dataclass(frozen=True)
class SamplingConfig:
    rule: str | None = None            # sandwich | uniform; None: sandwich for chain spaces, uniform for cells
    random_subnets: int = 2
    distill: bool = True               # inplace distillation from the largest subnet (sandwich rule)
    kd_temperature: float = 1.0


@dataclass(frozen=True)
class ProgressiveConfig:
    phases: tuple[tuple[str, ...], ...] = (("kernel",), ("kernel", "depth"), ("kernel", "depth", "expand"))
    epochs: tuple[int, ...] | None = None  # per phase; None: equal shares, the remainder to the last


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"                  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5         # conv and linear weights only
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "cosine"               # cosine | step | constant
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    step_epochs: int = 30              # step: multiply by gamma every step_epochs
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    space: str = "tiny_mbconv"
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 4
    batch_size: int = 32
    accumulate: int = 1                # micro-batches per process per step
    seed: int = 0
    label_smoothing: float = 0.1
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    progressive: ProgressiveConfig | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float = 5.0             # max gradient norm; 0: off
    amp: bool = True                   # mixed precision on CUDA (bf16 where supported, else fp16)
    checkpoint_every: int = 50         # steps between mid-epoch checkpoints; 0: per epoch only
    calib_images: int = 256            # BN recalibration images per evaluated subnet
    eval_batch_size: int = 32         # small batches keep CPU evaluation in cache; raise on GPUs

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def phase_epochs(self) -> list[int]:
        """Epochs of each progressive phase ([] without progressive shrinking)."""
        if self.progressive is None:
            return []
        n = len(self.progressive.phases)
        if self.progressive.epochs is not None:
            return list(self.progressive.epochs)
        share = self.epochs // n
        return [share] * (n - 1) + [self.epochs - share * (n - 1)]


# Settings that change how a run reports or checkpoints, not what it computes: a
# resumed run may change them.
RUNTIME_KEYS = ("checkpoint_every", "calib_images", "eval_batch_size")


def load_config(path: Path | None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None) -> TrainConfig:
    """A config from a YAML file (or, without one, `base` over the defaults), then dotted-key
    overrides ('data.source'); overrides that are None are ignored."""
    data: dict[str, Any] = copy.deepcopy(base or {})
    if path is not None:
        from nas.space.registry import read_config

        data = read_config(Path(path), "training config")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        target = data
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return config_from_dict(data, str(path or "config"))


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    config = _build(TrainConfig, data, where)
    _check(config, where)
    return config


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise NasError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise NasError(f"{where}: unknown setting {key!r}{closest(str(key), names)}; known: {', '.join(names)}")
    values = {k: _value(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def _value(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = next(a for a in args if a is not type(None))
        if inner is ProgressiveConfig and value is True:
            return ProgressiveConfig()
        if inner is ProgressiveConfig and value is False:
            return None
        return _value(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise NasError(f"{where} must be a list, got {value!r}")
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(value):
            raise NasError(f"{where} must have {len(kinds)} entries, got {len(value)}")
        return tuple(_value(k, v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(kinds, value)))
    if hint is bool:
        if not isinstance(value, bool):
            raise NasError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise NasError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise NasError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise NasError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {where}")


def _check(c: TrainConfig, where: str) -> None:
    """Ranges and choices that types alone do not capture."""
    positive = {"epochs": c.epochs, "batch_size": c.batch_size, "accumulate": c.accumulate,
                "calib_images": c.calib_images, "eval_batch_size": c.eval_batch_size}
    for key, value in positive.items():
        if value < 1:
            raise NasError(f"{where}.{key} must be at least 1, got {value}")
    nonneg = {"grad_clip": c.grad_clip, "label_smoothing": c.label_smoothing, "checkpoint_every": c.checkpoint_every,
              "optimizer.lr": c.optimizer.lr, "optimizer.weight_decay": c.optimizer.weight_decay,
              "schedule.warmup_epochs": c.schedule.warmup_epochs, "data.noise": c.data.noise,
              "data.aug_noise": c.data.aug_noise, "sampling.random_subnets": c.sampling.random_subnets}
    for key, value in nonneg.items():
        if value < 0:
            raise NasError(f"{where}.{key} must not be negative, got {value}")
    if c.label_smoothing >= 1:
        raise NasError(f"{where}.label_smoothing must be below 1, got {c.label_smoothing}")
    if c.sampling.kd_temperature <= 0:
        raise NasError(f"{where}.sampling.kd_temperature must be positive")
    for key, value, known in (("optimizer.name", c.optimizer.name, ("sgd", "adamw")),
                              ("schedule.name", c.schedule.name, ("cosine", "step", "constant")),
                              ("sampling.rule", c.sampling.rule, ("sandwich", "uniform", None))):
        if value not in known:
            raise NasError(f"{where}.{key}: unknown {value!r}{closest(str(value), [k for k in known if k])}; "
                           f"choose {', '.join(k for k in known if k)}")
    if c.data.crop_padding is not None and c.data.crop_padding < 0:
        raise NasError(f"{where}.data.crop_padding must not be negative")
    if c.progressive is not None:
        if not c.progressive.phases:
            raise NasError(f"{where}.progressive.phases must list at least one phase")
        epochs = c.phase_epochs()
        if len(epochs) != len(c.progressive.phases) or sum(epochs) != c.epochs or min(epochs) < 1:
            raise NasError(f"{where}.progressive.epochs {epochs} must give each of the {len(c.progressive.phases)} "
                           f"phases at least one epoch and add up to epochs ({c.epochs})")
