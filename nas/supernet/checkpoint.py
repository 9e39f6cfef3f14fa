"""Checkpoints: plain tensors and JSON-like values, written atomically, read without pickle code.

A checkpoint is a torch.save file of dicts, lists, numbers, strings and tensors only,
loaded with torch.load(weights_only=True), which refuses anything else: a checkpoint
received from someone else cannot run code. Writing goes through nas.atomic (temp file,
fsync, rename), so a kill at any moment leaves either the previous checkpoint or the
new one, never a torn file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nas.atomic import atomic_path
from nas.errors import NasError

FORMAT = "hwnas.supernet-checkpoint/1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise NasError(f"no checkpoint at {path}; train with 'hwnas supernet train ... --out {path.parent}'") from None
    except Exception as exc:  # noqa: BLE001 - torch raises several types for foreign or damaged files
        raise NasError(f"{path}: not a readable hwnas checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise NasError(f"{path}: not a {FORMAT} file")
    return state
