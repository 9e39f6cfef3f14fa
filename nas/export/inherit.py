"""Weights inherited from a trained supernet, with the BN statistics the search scored.

The supernet's own accuracy oracle (nas.supernet.SubnetEvaluator) extracts the arch,
recalibrates its batch norms on a fixed set of training images and scores it. Export
hands the evaluator the extracted module itself (`score` recalibrates it in place), so
the exported weights and statistics are the ones behind the accuracy the search saw,
bit for bit, without repeating the evaluator's choices.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.errors import CompatibilityError, NasError
from nas.space.arch import Arch
from nas.space.base import SearchSpace


@dataclass
class Inherited:
    """The recalibrated standalone module, its accuracy and where both came from."""

    model: nn.Module
    accuracy: float
    split: str
    preprocessing: dict[str, Any]
    source: dict[str, Any]
    scorer: Any = None   # the SubnetEvaluator that scored it: its calibration and validation images
    quant: Any = None    # the run's QuantSettings (how search scored int8 archs)


def supernet_run_dir(path: Path) -> Path:
    """--supernet takes the training folder or its checkpoint file."""
    path = Path(path)
    if path.is_file():
        return path.parent
    if not path.exists():
        raise NasError(f"--supernet {path} does not exist; give a 'hwnas supernet train --out' folder or its checkpoint.pt")
    return path


def load_matching_supernet(path: Path, space: SearchSpace, device: torch.device | None = None):
    """(config, supernet) of the run at `path`, refusing one trained on another space."""
    from nas.supernet import load_supernet

    run_dir = supernet_run_dir(path)
    config, supernet = load_supernet(run_dir, device)
    theirs = supernet.space
    if theirs.name != space.name or theirs.fingerprint() != space.fingerprint():
        raise CompatibilityError(f"supernet {run_dir} was trained on space {theirs.name!r} (fingerprint "
                                 f"{theirs.fingerprint()}), not on {space.name!r} ({space.fingerprint()}); "
                                 f"export with --space {config.space}")
    return config, supernet


def inherit(path: Path, space: SearchSpace, arch: Arch, split: str = "val",
            device: torch.device | None = None) -> Inherited:
    """The arch's module from the supernet at `path`, recalibrated and scored on `split`."""
    from nas.supernet import SubnetEvaluator
    from nas.supernet.trainer import dataset_for

    config, supernet = load_matching_supernet(path, space, device)
    arch = supernet.space.validate(arch)
    data = dataset_for(config, supernet.space)
    evaluator = SubnetEvaluator(supernet, data, split, config.calib_images, config.eval_batch_size, config.seed,
                                quant=config.quant)
    model = supernet.extract(arch)
    accuracy = evaluator.score(model, supernet.space.resolution(arch))  # recalibrates `model` in place (float)
    preprocessing = {"dataset": data.name, "source": config.data.source, "load_resolution": data.resolution,
                     "mean": [float(v) for v in data.mean],
                     "std": [float(v) for v in data.std], "scale": "images read at load_resolution, pixels / 255, (x - mean) / std per channel, "
                              "then bilinear resize to the input resolution",
                     "split": {"val_fraction": config.data.val_fraction, "test_fraction": config.data.test_fraction,
                               "split_seed": config.data.split_seed, "noise": config.data.noise}}
    source = {"supernet": str(supernet_run_dir(path)), "seed": config.seed, "epochs": config.epochs,
              "calib_images": config.calib_images, "calib_batch": config.eval_batch_size}
    return Inherited(model, accuracy, split, preprocessing, source, evaluator, config.quant)
