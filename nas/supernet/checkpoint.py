"""Checkpoints: plain tensors and JSON-like values, written atomically, read without pickle code.

A checkpoint is a torch.save file of dicts, lists, numbers, strings and tensors only,
loaded with torch.load(weights_only=True), which refuses anything else: a checkpoint
received from someone else cannot run code. Writing goes through nas.atomic (temp file,
fsync, rename), so a kill at any moment leaves either the previous checkpoint or the
new one, never a torn file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nas.atomic import atomic_path
from nas.errors import DataError, NasError

FORMAT = "hwnas.supernet-checkpoint/1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise NasError(f"no checkpoint at {path}; train with 'hwnas supernet train ... --out {path.parent}'") from None
    except Exception as exc:  # noqa: BLE001 - torch raises several types for foreign or damaged files (MemoryError too)
        raise NasError(f"{path}: not a readable hwnas checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise NasError(f"{path}: not a {FORMAT} file")
    check_finite(state.get("model"), path)
    return state


def first_line(exc: BaseException) -> str:
    """'Type: first line of the message' (a 0-byte file or a MemoryError has no message;
    torch colours some of its messages with terminal escapes)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def check_finite(tensors: Any, path: Path) -> None:
    """Refuse weights holding NaN or infinity: such a network evaluates to chance accuracy
    without any error, so every loader of saved weights checks them."""
    if not isinstance(tensors, dict):
        return
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"{path}: tensor {name!r} holds NaN or infinite values; the weights are corrupt "
                            "(a diverged training): train again")
