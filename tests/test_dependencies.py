"""Dependencies that say the truth: no private module of another library is imported, and
the PostgreSQL driver is an extra whose absence is a one-line error naming it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.search.ledger import make_storage

PACKAGE = Path(__file__).resolve().parents[1] / "nas"


def test_no_module_imports_a_private_module_of_another_library() -> None:
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] not in ("nas", "__future__") and any(p.startswith("_") for p in parts[1:]):
                    private.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}")
    assert not private, private


def test_a_postgresql_url_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if hwnas[postgres] were not installed
    for url in ("postgresql://user@127.0.0.1:1/hwnas", "postgresql+psycopg2://user@127.0.0.1:1/hwnas"):
        with pytest.raises(NasError) as info:
            make_storage(url)
        message = str(info.value)
        assert "pip install 'hwnas[postgres]'" in message and "\n" not in message
