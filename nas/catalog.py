"""Where hwnas finds its files, and where it writes new ones.

Three kinds of folder, named as in the repository:

    search_spaces/   space YAML files, at any depth (reference networks in reference/)
    latency_luts/    device profiles <device>/device.yaml, and LUTs <device>/<space>.csv
    predictors/      predictors <device>/<space>_<metric>.npz (accuracy/ for accuracy),
                     reference sets reference/<space>.json

Each kind is looked up in layers, and the first layer holding a file wins, so a user's
file hides a shipped one of the same name:

 1. folders given explicitly (a function's `given` argument: a flag, an experiment's own files)
 2. the environment variable of the kind, an os.pathsep-separated list of folders:
    HWNAS_SPACES, HWNAS_LUTS, HWNAS_PREDICTORS
 3. the working folder's ./search_spaces, ./latency_luts, ./predictors, where they exist
 4. the shipped data: the package nas._shipped.<kind>, found through importlib.resources
    (pyproject.toml maps the repository's folders there, in a wheel and in an editable install)

In a source checkout run from its root, layer 3 is the repository's own folders (and 4 the
same folders again, through the editable install), so a checkout behaves as it always did.

New files go to the first user layer (`write_dir`): the first explicit folder, else the
first folder of the environment variable, else ./<kind> of the working folder (created
when written), never into the installed package. A LUT that `hwnas lut build` profiles
for local-cpu is written to $HWNAS_LUTS/local-cpu/<space>.csv, else
./latency_luts/local-cpu/<space>.csv; a reference set that `hwnas predictors reference`
makes goes to <first predictors layer>/reference/<space>.json.

The shipped layer is absent when the nas package was not installed (a bare source tree on
PYTHONPATH): then only the user layers serve, which from the checkout's root are its folders.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from nas.errors import NasError

SPACES = "search_spaces"
LUTS = "latency_luts"
PREDICTORS = "predictors"
ENVIRONMENT = {SPACES: "HWNAS_SPACES", LUTS: "HWNAS_LUTS", PREDICTORS: "HWNAS_PREDICTORS"}

Folders = Sequence[str | os.PathLike]


def package_dir(package: str = "nas") -> Path:
    """The folder an installed package's files are in (a checkout's nas/, or site-packages/nas/)."""
    folder = resources.files(package)
    if not isinstance(folder, Path):
        raise NasError(f"the {package} package is not installed on a file system ({folder}); reinstall it with pip")
    return folder


def shipped_dir(kind: str) -> Path | None:
    """The data of `kind` shipped inside the installed package, None when nas was not installed."""
    if kind not in ENVIRONMENT:
        raise ValueError(f"unknown kind of catalogue folder {kind!r}; known: {', '.join(ENVIRONMENT)}")
    try:
        return package_dir(f"nas._shipped.{kind}")
    except ModuleNotFoundError:
        return None


def _chosen(kind: str, given: Folders) -> list[Path]:
    """The folders a user named: explicit ones, then the environment variable's (absolute)."""
    named = [*given, *(p for p in os.environ.get(ENVIRONMENT[kind], "").split(os.pathsep) if p)]
    return [Path(p).expanduser().absolute() for p in named]


def user_dirs(kind: str, given: Folders = ()) -> list[Path]:
    """The user layers of `kind`, in order: explicit folders, the environment variable's
    folders, the working folder's ./<kind> where it exists."""
    here = Path(kind).absolute()
    return _chosen(kind, given) + ([here] if here.is_dir() else [])


def layers(kind: str, given: Folders = ()) -> list[Path]:
    """Every folder of `kind` to look in, first match first: the user layers, then the shipped
    data (a folder reached twice, like a checkout's own folders, is listed once)."""
    found: list[Path] = []
    seen: set[Path] = set()
    shipped = shipped_dir(kind)
    for folder in [*user_dirs(kind, given), *([shipped] if shipped else [])]:
        key = folder.resolve()
        if key not in seen and folder.is_dir():
            seen.add(key)
            found.append(folder)
    return found


def write_dir(kind: str, given: Folders = ()) -> Path:
    """Where new files of `kind` go: the first explicit or environment folder, else ./<kind>."""
    chosen = _chosen(kind, given)
    return chosen[0] if chosen else Path(kind).absolute()


def find(kind: str, relative: str | os.PathLike, given: Folders = ()) -> Path | None:
    """The first layer's file at `relative` (like `edgegpu/nb201_latency.npz`), None if no layer has one."""
    for folder in layers(kind, given):
        path = folder / relative
        if path.is_file():
            return path
    return None


def glob(kind: str, pattern: str, given: Folders = ()) -> dict[str, Path]:
    """Relative name -> file for every file matching the glob `pattern` in any layer (the
    first layer's file of a name wins), sorted by name; `**` patterns reach any depth."""
    found: dict[str, Path] = {}
    for folder in layers(kind, given):
        for path in sorted(folder.glob(pattern)):
            if path.is_file():
                found.setdefault(path.relative_to(folder).as_posix(), path)
    return dict(sorted(found.items()))


# ----------------------------------------------------------------------------- predictors

def predictor_dirs(given: Folders = ()) -> list[Path]:
    """The predictor layers, first match first (explicit, $HWNAS_PREDICTORS, ./predictors, shipped)."""
    return layers(PREDICTORS, given)


def find_predictor(name: str, given: Folders = ()) -> Path | None:
    """A predictor file by its name relative to a predictors layer, with or without `.npz`
    (`edgegpu/nb201_latency`, `accuracy/nb201_cifar10`); None if no layer has it."""
    return find(PREDICTORS, name if name.endswith(".npz") else f"{name}.npz", given)


def predictor_files(space: str, given: Folders = ()) -> dict[str, Path]:
    """Every predictor `*/<space>_*.npz` over the layers, by name without `.npz`
    (`edgegpu/nb201_latency` -> file); a name in an earlier layer hides later ones."""
    return {name[:-len(".npz")]: path for name, path in glob(PREDICTORS, f"*/{space}_*.npz", given).items()}

