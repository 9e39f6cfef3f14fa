"""A trained supernet as the search's accuracy oracle (the one cost interface).

`SupernetAccuracy(run_dir).predict(archs)` scores each arch by its accuracy with
inherited weights after BN recalibration, on the validation split by default (the
test split stays untouched by search); an arch with int8 layers by the accuracy of its
int8 deployment (the run's `quant:` settings, or the source's).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nas.costs import CostModel
from nas.errors import CompatibilityError, NasError, QualityWarning
from nas.quant import QuantSettings
from nas.space import load_space
from nas.space.arch import Arch
from nas.supernet.checkpoint import load_checkpoint
from nas.supernet.config import TrainConfig
from nas.supernet.evaluation import SubnetEvaluator
from nas.supernet.run import RunDir
from nas.supernet.supernet import Supernet
from nas.supernet.trainer import dataset_for
from nas.threads import ensure_configured, retune


def load_supernet(path: Path | str, device: torch.device | None = None) -> tuple[TrainConfig, Supernet]:
    """The config and trained supernet (in eval mode; its space is `supernet.space`) of a
    `hwnas supernet train` folder or of the checkpoint.pt inside one (the config beside
    it says which space and settings the weights belong to)."""
    path = Path(path)
    run_dir = path.parent if path.is_file() else path
    if not run_dir.is_dir():
        raise NasError(f"{path} does not exist; give a 'hwnas supernet train --out' folder or its checkpoint.pt")
    run = RunDir(run_dir)
    found = run.read()
    if found.get("arch") is not None:
        raise NasError(f"{run_dir} holds a stand-alone training of one arch, not a supernet")
    config = run.config()
    space = load_space(config.space)
    if space.fingerprint() != found.get("space_fingerprint"):
        raise CompatibilityError(f"space {config.space} has changed since {run_dir} was trained (space fingerprint "
                                 f"{found.get('space_fingerprint')} then, {space.fingerprint()} now); retrain the supernet")
    state = load_checkpoint(path if path.is_file() else run.checkpoint)
    if state["epoch"] < config.epochs:
        warnings.warn(f"{run_dir} is trained for {state['epoch']} of {config.epochs} epochs", QualityWarning, stacklevel=2)
    supernet = Supernet(space)
    supernet.load_state_dict(state["model"])
    return config, supernet.to(device or torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()


class SupernetAccuracy(CostModel):
    """Top-1 accuracy (0..1) of archs with the supernet's inherited weights."""

    metric = "accuracy"
    unit = "fraction"

    def __init__(self, run_dir: Path | str, split: str = "val", calib_images: int | None = None,
                 device: torch.device | None = None, quant: QuantSettings | None = None) -> None:
        ensure_configured()  # supernet queries during a search: the same default as training
        config, self.supernet = load_supernet(run_dir, device)
        self.space = self.supernet.space
        data = dataset_for(config, self.space)
        self.evaluator = SubnetEvaluator(self.supernet, data, split, calib_images or config.calib_images,
                                         config.eval_batch_size, config.seed, quant=quant or config.quant)

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        if isinstance(archs, np.ndarray):
            archs = self.space.decode_batch(np.atleast_2d(archs))
        scores = []
        for arch in archs:
            retune()
            scores.append(self.evaluator.accuracy(arch))
        return np.array(scores, dtype=np.float64)
