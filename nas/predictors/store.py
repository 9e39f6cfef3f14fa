"""Predictor files: one compressed .npz of named float/int arrays and a JSON metadata record.

The metadata (schema, metric, unit, space, feature set, device, training-table hash,
training archs, model structure, library versions) is UTF-8 JSON stored as a byte
array, so the file is read with np.load(allow_pickle=False): no object arrays, no
pickle, nothing in a file can run code. Floats survive both ways exactly (numpy
arrays bit for bit, JSON floats through their shortest round-tripping repr). Files are
written to a temporary name beside the target and renamed, so a crash never leaves a
half-written predictor.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nas.atomic import atomic_path
from nas.errors import NasError

SCHEMA = "hwnas.predictor/1"
META_KEY = "__meta__"
ARRAY_PREFIX = "a/"


def save_arrays(path: Path | str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {META_KEY: np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)}
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            raise TypeError(f"array {name!r} has dtype {value.dtype}; predictor files hold numbers only")
        payload[ARRAY_PREFIX + name] = value
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **payload)


def load_arrays(path: Path | str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of a predictor file; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"no predictor file at {path}")
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle anything else
        raise NasError(f"{path}: not a readable .npz predictor file")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            if META_KEY not in names:
                raise NasError(f"{path}: not an hwnas predictor (no metadata record)")
            meta = json.loads(data[META_KEY].tobytes().decode())
            arrays = {n[len(ARRAY_PREFIX):]: data[n] for n in names if n.startswith(ARRAY_PREFIX)}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise NasError(f"{path}: not a readable .npz predictor file ({exc})") from None
    except ValueError as exc:  # object arrays (pickle) are refused by allow_pickle=False
        raise NasError(f"{path}: refused: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NasError(f"{path}: garbled metadata record") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        found = meta.get("schema") if isinstance(meta, dict) else None
        raise NasError(f"{path}: schema {found!r} is not {SCHEMA!r}; refit the predictor with this hwnas")
    return meta, arrays
