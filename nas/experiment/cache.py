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

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from nas.catalog import package_dir
from nas.provenance import library_versions

SKIP_SUFFIXES = (".tmp", ".lock")
RECORD_FILES = ("step.json", ".key")  # what the runner writes about a step, not what the step produced


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
    """Hash of the Python sources of the given subpackages (nas/space, ...) or modules
    (nas/sources.py), read from where the running package is installed (a checkout or
    site-packages), each file named by its path from the package's parent (nas/space/arch.py)
    so the hash does not depend on where."""
    h = hashlib.sha256()
    for entry in folders:
        package, _, module = entry.rpartition("/") if entry.endswith(".py") else (entry, "", "")
        root = package_dir(package.replace("/", "."))
        for f in [root / module] if module else sorted(root.rglob("*.py")):
            h.update(f"{package}/{f.relative_to(root).as_posix()}".encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


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


def output_digest(folder: Path, result: Any) -> str:
    """Hash of what a finished step produced: its result and every file it wrote.

    Downstream keys hash this, not the upstream key, so a step whose work is not
    reproducible (profiling times the machine) can never be paired with another run's
    downstream outputs: equal upstream keys with different outputs give different keys."""
    files = {str(p.relative_to(folder)): file_digest(p) for p in sorted(Path(folder).rglob("*"))
             if p.is_file() and p.name not in RECORD_FILES and not p.name.endswith(SKIP_SUFFIXES)}
    return digest({"result": result, "files": files})


class StepCache:
    """Finished step folders by (step, key) under one root (runs/.cache)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @contextmanager
    def claim(self, step: str, key: str, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold (step, key) exclusively while looking it up, computing and publishing it.

        A second run of the same work at the same time waits here (`waiting` is told once)
        and then finds the first run's result in the cache instead of computing its own."""
        path = self.root / step / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
