"""Shared test helpers: the shipped search spaces and the benchmark data folder.

Spaces are discovered at run time from nas.space.space_files(), so every YAML file
added to search_spaces/ (or search_spaces/reference/) is covered by the generic
space tests without editing them. A test asks for them with the argument
`shipped_space_name`, which is parametrised over every shipped space.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nas.space import space_files


def shipped_space_names() -> list[str]:
    """Every shipped space, reference networks included, in name order."""
    return sorted(space_files())


def benchmarks_dir() -> Path:
    """$HWNAS_BENCHMARKS, else the shared/benchmarks folder beside the repository."""
    env = os.environ.get("HWNAS_BENCHMARKS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shipped_space_name" in metafunc.fixturenames:
        metafunc.parametrize("shipped_space_name", shipped_space_names())


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    return benchmarks_dir()

