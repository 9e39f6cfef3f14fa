"""Reference archs: the K archs to measure on a new device for few-shot transfer.

K measurements fit best when the archs spread over the directions in which archs
differ physically, without wasting measurements on freaks. The design works in the
space of the coarse LayerSpec features (network and stage aggregates: MACs, params,
activations, op counts per graph role), standardised and whitened by PCA to `dims`
components: archs outside the central `typical` share (by distance from the centre)
are set aside (an NB201 cell cut off from its input is one), and the rest are ordered
by farthest-point traversal from a seeded start, each next arch the one farthest from
all chosen so far. Any prefix of the order is itself a spread-out design, so one
shipped list serves every K. The design reads no measurements: it is the same for
every device, and evaluating it on a device never leaks that device's values.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nas import catalog
from nas.errors import NasError
from nas.jsonfile import read_json
from nas.predictors.features import COARSE, Featurizer, get_featurizer
from nas.space.arch import Arch
from nas.space.base import SearchSpace

SCHEMA = "hwnas.reference/1"
DIMS = 6
TYPICAL = 0.8


def reference_dir() -> Path:
    """Where new reference sets are written, one JSON per space: reference/ of the first
    user predictors layer (nas.catalog.write_dir), never the installed package."""
    return catalog.write_dir(catalog.PREDICTORS) / "reference"


def design_order(features: np.ndarray, n: int, seed: int = 0, dims: int = DIMS, typical: float = TYPICAL) -> np.ndarray:
    """Indices of n rows of `features` (coarse features of a candidate pool) in
    farthest-point order among the typical rows (see the module doc)."""
    X = np.asarray(features, dtype=np.float64)
    scale = X.std(axis=0)
    Z = (X[:, scale > 0] - X[:, scale > 0].mean(axis=0)) / scale[scale > 0]
    U, _, _ = np.linalg.svd(Z, full_matrices=False)
    P = U[:, :dims] * np.sqrt(len(Z))  # whitened principal components
    radius = np.sum(P ** 2, axis=1)
    pool = np.flatnonzero(radius <= np.quantile(radius, typical))
    if len(pool) < n:
        raise NasError(f"the candidate pool has {len(pool)} typical archs, fewer than the {n} asked for")
    Q = P[pool]
    chosen = [int(np.random.default_rng(seed).integers(len(pool)))]
    distance = np.sum((Q - Q[chosen[0]]) ** 2, axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.sum((Q - Q[nxt]) ** 2, axis=1))
    return pool[chosen]


def coarse_features(featurizer: Featurizer, codes: np.ndarray) -> np.ndarray:
    mask = np.array([g in COARSE for g in featurizer.groups])
    return featurizer.transform(codes)[:, mask]


def make_reference(space: SearchSpace, n: int = 50, seed: int = 0, pool_size: int = 20_000) -> dict[str, Any]:
    """A reference set for a space: the whole space when it has at most pool_size archs,
    else pool_size seeded random archs, ordered by design_order."""
    if space.size <= pool_size:
        codes = space.encode_batch(list(space.enumerate()))
        pool = f"all {space.size} archs"
    else:
        codes = np.unique(space.sample_codes(np.random.default_rng(seed), pool_size), axis=0)
        pool = f"{len(codes)} random archs (seed {seed})"
    order = design_order(coarse_features(get_featurizer(space), codes), n, seed)
    archs = space.decode_batch(codes[order])
    as_string = getattr(space, "to_string", None)  # NB201's own arch string, for people reading the file
    return {"schema": SCHEMA, "space": space.name,
            "design": {"method": "farthest-point order over whitened PCA of coarse LayerSpec features",
                       "dims": DIMS, "typical": TYPICAL, "seed": seed, "pool": pool},
            "archs": [{"arch_id": a.arch_id, **({"string": as_string(a)} if as_string else {}), "arch": dict(a)}
                      for a in archs]}


def reference_text(data: dict[str, Any]) -> str:
    """The set as JSON with one arch per line: readable, and diffs show which archs changed."""
    head = {k: v for k, v in data.items() if k != "archs"}
    lines = [json.dumps(entry) for entry in data["archs"]]
    body = json.dumps(head, indent=1)[:-2]
    return body + ',\n "archs": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def load_reference(space: SearchSpace, path: Path | str | None = None) -> list[Arch] | None:
    """The ordered reference archs from `path`, or the space's reference/<space>.json from
    the first predictors layer that has one (None if none has)."""
    if path is None:
        path = catalog.find(catalog.PREDICTORS, f"reference/{space.name}.json")
        if path is None:
            return None
    path = Path(path)
    data = read_json(path, f"no reference set at {path}", schema=SCHEMA)
    if data.get("space") != space.name:
        raise NasError(f"{path} is a reference set for space {data.get('space')!r}, not {space.name!r}")
    archs = []
    for i, entry in enumerate(data.get("archs", [])):
        try:
            archs.append(space.arch(entry["arch"]))
        except (KeyError, TypeError):
            raise NasError(f"{path}: reference entry {i} has no 'arch'") from None
    return archs
