"""The train step: the weight-sharing supernet that scores accuracy during search.

A thin adapter over nas.supernet: the experiment's `train:` settings plus its space,
dataset and seed become one training config; training happens in the step's folder,
where nas.supernet checkpoints every epoch (and every N steps) and resumes after a kill.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.experiment.schema import Experiment
    from nas.supernet.config import TrainConfig

READS = ()  # steps whose outputs this one uses (their keys are part of its key)
CODE = ("nas/space", "nas/supernet", "nas/data")
LIBRARIES = ("torch", "numpy", "scikit-learn", "pillow")


def train_config(exp: Experiment, space: str | None = None) -> TrainConfig:
    """The nas.supernet config of this experiment: its `train:` settings (validated with the
    experiment; only the keys it sets, so the space family's recipe fills the rest) plus
    its space, dataset and seed."""
    from nas.config import validate
    from nas.supernet.config import TrainConfig

    given = exp.train.model_dump(exclude_unset=True) if exp.train else {}
    data = {**given, "space": space or exp.space, "data": dict(exp.dataset), "seed": exp.seed}
    return validate(TrainConfig, data, "train")


def inputs(exp: Experiment) -> dict[str, Any]:
    """What the trained weights depend on (hashed for the step cache; `workers` changes how
    fast training goes, not what it computes)."""
    return {"train": exp.train.model_dump(mode="json", exclude={"workers"}) if exp.train else None, "dataset": exp.dataset,
            "space": exp.space, "seed": exp.seed}


def run(exp: Experiment, space: str, out: Path, progress: bool) -> dict[str, Any]:
    """Train (or resume training) into `out`; returns the last epoch's record."""
    from nas.supernet import train

    history = train(train_config(exp, space), out, progress=progress)
    return {"epochs": len(history), "last": history[-1] if history else {}}
