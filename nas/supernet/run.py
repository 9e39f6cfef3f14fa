"""A training run's folder: config.json, checkpoint.pt and history.json.

config.json records what the run computes (config, space and its fingerprint, and the arch of a
stand-alone run). Rerunning with the same folder resumes only if that matches, so a
changed setting can never mix two different trainings in one checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.atomic import write_atomic
from nas.errors import CompatibilityError, NasError
from nas.jsonfile import read_json
from nas.space.arch import Arch
from nas.space.base import SearchSpace
from nas.supernet.config import RUNTIME_KEYS, TrainConfig, config_from_dict

SCHEMA = "hwnas.supernet-run/1"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.config_file = self.path / "config.json"
        self.checkpoint = self.path / "checkpoint.pt"
        self.history_file = self.path / "history.json"

    def describe(self, config: TrainConfig, space: SearchSpace, arch: Arch | None) -> dict[str, Any]:
        return {"schema": SCHEMA, "config": config.to_dict(), "space": space.name,
                "space_fingerprint": space.fingerprint(), "arch": None if arch is None else arch.to_dict()}

    def prepare(self, config: TrainConfig, space: SearchSpace, arch: Arch | None) -> None:
        """Write config.json for a new run, or check that an existing run is the same training."""
        wanted = self.describe(config, space, arch)
        if self.path.exists() and not self.path.is_dir():
            raise NasError(f"--out {self.path} is a file; give a folder for the run")
        if not self.config_file.is_file():
            write_atomic(self.config_file, json.dumps(wanted, indent=2) + "\n")
            return
        found = self.read()
        if found.get("space") == wanted["space"] and found.get("space_fingerprint") != wanted["space_fingerprint"]:
            raise CompatibilityError(f"{self.path} holds a run of another version of space {space.name} (space "
                                     f"fingerprint {found.get('space_fingerprint')} there, {wanted['space_fingerprint']} "
                                     "now); use another --out folder or delete it")
        for key in ("space", "arch"):
            if found.get(key) != wanted[key]:
                raise CompatibilityError(f"{self.path} holds a run with another {key}; "
                                         "use another --out folder or delete it")
        differences = _differences(found["config"], wanted["config"])
        if differences:
            raise CompatibilityError(f"{self.path} holds a run with other settings ({'; '.join(differences[:3])}); "
                                     "use another --out folder or delete it to start over")

    def read(self) -> dict[str, Any]:
        return read_json(self.config_file, f"{self.path} is not a training run (no config.json); train one with "
                         "'hwnas supernet train ... --out DIR'", schema=SCHEMA)

    def config(self) -> TrainConfig:
        return config_from_dict(self.read()["config"], str(self.config_file))

    def write_history(self, history: list[dict[str, Any]]) -> None:
        write_atomic(self.history_file, json.dumps(history, indent=2) + "\n")


def _differences(found: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(found) | set(wanted)):
        if not prefix and key in RUNTIME_KEYS:
            continue
        a, b = found.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} there, {json.dumps(b)} now")
    return out
