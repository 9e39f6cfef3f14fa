"""Library versions for provenance: the one helper behind every file that records them
(LUT runtimes, model cards, predictor files, experiment step keys and run records).

Versions come from the installed packages' metadata, so asking imports nothing (torch
alone takes seconds to import) and a missing library reads "not installed" instead of
failing.
"""
from __future__ import annotations

import functools
import platform
from collections.abc import Iterable
from importlib import metadata

NOT_INSTALLED = "not installed"


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """name -> version for distribution names ("torch", "scikit-learn"), import names of
    other distributions ("onnxruntime" when onnxruntime-gpu provides it), and two
    specials: "python" (the interpreter) and "hwnas" (this code, also from a checkout)."""
    return {name: _version(name) for name in names}


def _version(name: str) -> str:
    if name == "python":
        return platform.python_version()
    if name == "hwnas":
        import nas

        return nas.__version__
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    for dist in _providers().get(name, ()):
        return metadata.version(dist)
    return NOT_INSTALLED


@functools.cache
def _providers() -> dict[str, list[str]]:
    """Import name -> the distributions that install it."""
    return metadata.packages_distributions()
