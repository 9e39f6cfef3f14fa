"""Content-hash caching of pipeline steps.

A step's key hashes everything its outputs depend on: its config section, the keys of
the steps it reads, the source code of the packages it runs, the versions of the
libraries they use, the contents of input files, and (for profiling) the CPU. Equal
keys mean equal work, so a finished step is never redone: within a run its folder
holds `step.json` with the key, and across runs a copy of the folder lives in the cache
(`runs/.cache/<step>/<key>/`, hard links where the file system allows, so a supernet
checkpoint is not stored twice). The record of what went into a key is kept beside it,
so "why did this step run again?" has an answer in the files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
SKIP_SUFFIXES = (".tmp", ".lock")


def digest(data: Any) -> str:
    """Hash of a JSON-able value (key order does not matter)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes; for a folder (an image dataset), of its file names and sizes."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path)}\0{f.stat().st_size}\n".encode())
        return h.hexdigest()[:16]
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@cache
def code_digest(folders: tuple[str, ...]) -> str:
    """Hash of the Python sources under the given package folders (nas/space, ...) or files (nas/sources.py)."""
    h = hashlib.sha256()
    for folder in folders:
        path = PACKAGE_ROOT / folder
        for f in [path] if path.is_file() else sorted(path.rglob("*.py")):
            h.update(str(f.relative_to(PACKAGE_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def library_versions(names: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def step_key(step: str, inputs: Mapping[str, Any], upstream: Mapping[str, str], code: Sequence[str],
             libraries: Sequence[str], files: Sequence[str] = (), extra: Mapping[str, Any] | None = None
             ) -> tuple[str, dict[str, Any]]:
    """(key, record): the record lists what the key hashes."""
    record = {"step": step, "inputs": inputs, "upstream": dict(upstream), "code": code_digest(tuple(code)),
              "libraries": library_versions(libraries), "files": {f: file_digest(f) for f in files},
              "extra": dict(extra or {})}
    return digest(record), record


def link_tree(src: Path, dst: Path) -> None:
    """Recreate `src` at `dst` with hard links (copies across file systems)."""
    for path in sorted(src.rglob("*")):
        if path.name.endswith(SKIP_SUFFIXES):
            continue
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


class StepCache:
    """Finished step folders by (step, key) under one root (runs/.cache)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry(self, step: str, key: str) -> Path:
        return self.root / step / key

    def lookup(self, step: str, key: str) -> Path | None:
        entry = self.entry(step, key)
        return entry if (entry / "step.json").is_file() else None

    def publish(self, step: str, key: str, folder: Path) -> None:
        """Copy a finished step folder into the cache (first copy of a key wins)."""
        entry = self.entry(step, key)
        if entry.exists():
            return
        tmp = entry.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        link_tree(folder, tmp)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process published the same key first
            shutil.rmtree(tmp, ignore_errors=True)

    def restore(self, step: str, key: str, folder: Path) -> None:
        """Put the cached step folder at `folder` (replacing partial work there)."""
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        link_tree(self.entry(step, key), tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(tmp, folder)
