"""Find and load search spaces by name (YAML files in the catalogue's search_spaces layers) or by path."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from nas import catalog
from nas.errors import NasError, closest
from nas.space.base import SearchSpace
from nas.space.cell import NB201Space
from nas.space.chain import ChainSpace

SPACE_TYPES = {"chain": ChainSpace, "nb201": NB201Space}


def space_files() -> dict[str, Path]:
    """Space name -> YAML file, over the search_spaces layers ($HWNAS_SPACES, ./search_spaces,
    the shipped ones; see nas.catalog), reference networks included: a user's space of a
    shipped name hides the shipped one."""
    found: dict[str, Path] = {}
    for folder in catalog.layers(catalog.SPACES):
        for path in sorted(folder.rglob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def load_space(name_or_path: str | os.PathLike) -> SearchSpace:
    """A shipped space by name (`tiny_mbconv`) or any space YAML by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text):
        files = space_files()
        if text not in files:
            raise NasError(f"unknown space {text!r}{closest(text, files)}; see 'hwnas space list'")
        path = files[text]
    if not path.is_file():
        raise NasError(f"space file {path} does not exist")
    stat = path.stat()
    return _load(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int) -> SearchSpace:
    return space_from_dict(read_yaml(Path(path)), path)


def read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise NasError(f"{path}: malformed YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise NasError(f"{path}: malformed YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise NasError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise NasError(f"{path}: cannot read: {exc.strerror}") from None


def read_config(path: Path, what: str) -> dict[str, Any]:
    """A YAML config file, which must hold a mapping of settings (an empty file holds none);
    `what` names it in errors."""
    if not path.is_file():
        raise NasError(f"{what} {path} does not exist")
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NasError(f"{path}: the {what} must be a mapping of settings")
    return data


def space_from_dict(data: Any, source: str = "<dict>") -> SearchSpace:
    if not isinstance(data, dict):
        raise NasError(f"{source}: a space file must hold a mapping, got {type(data).__name__}")
    kind = data.get("type", "chain")
    if kind not in SPACE_TYPES:
        raise NasError(f"{source}: unknown space type {kind!r}{closest(str(kind), SPACE_TYPES)}; known: {', '.join(SPACE_TYPES)}")
    return SPACE_TYPES[kind](data, source)
