"""Layering: library modules never import the CLI (nas.cli or a subsystem's commands
module), warnings carry hwnas categories, and the CLI alone prints command results.

The CLI is a thin layer over the library (docs/ARCHITECTURE.md, decision 14); a library
module that imports it drags argparse wiring into every API user and makes the CLI
impossible to change on its own. The check reads every module's AST, so imports inside
functions count too.
"""
from __future__ import annotations

import argparse
import ast
import json
import typing
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_cli(name: str) -> bool:
    return name == "nas.cli" or name.split(".")[-1] == "commands"


def imported(path: Path) -> set[str]:
    """Every module `path` imports, with `from x import y` counted as x and as x.y."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if not is_cli(module_name(p)))


def test_the_walk_sees_the_package_and_recognises_cli_modules() -> None:
    names = {module_name(p) for p in LIBRARY}
    assert {"nas.space.base", "nas.experiment.runner", "nas.export.export", "nas.threads"} <= names
    assert not names & {"nas.cli", "nas.space.commands", "nas.export.commands"}
    assert is_cli("nas.hardware.commands") and not is_cli("nas.search.controllers")
    assert any(is_cli(m) for m in imported(PACKAGE / "export" / "commands.py"))  # the check can fire


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: module_name(p))
def test_library_modules_do_not_import_the_cli(path: Path) -> None:
    offending = sorted(m for m in imported(path) if is_cli(m))
    assert not offending, f"{module_name(path)} imports CLI module(s) {offending}"


def test_every_warning_hwnas_issues_has_an_hwnas_category() -> None:
    """Callers filter warnings by category (nas.errors), never by message text, so every
    warnings.warn in the package names one of the categories there."""
    import nas.errors

    categories = {name for name, value in vars(nas.errors).items()
                  if isinstance(value, type) and issubclass(value, nas.errors.HwnasWarning)}
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "warnings.warn":
                given = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "category"), None)
                calls.append((f"{module_name(path)}:{node.lineno}", ast.unparse(given) if given else None))
    assert calls, "the walk found no warnings.warn at all"
    assert [c for c in calls if c[1] not in categories] == []


def test_commands_return_results_and_only_the_cli_prints() -> None:
    """Every command handler returns a nas.cli.Result, rendered by nas.cli (JSON with
    --json, text otherwise); a commands module prints only progress to stderr."""
    from nas.cli import Result, build_parser

    handlers = []
    for path in sorted(PACKAGE.rglob("commands.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "print":
                assert any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr" for k in node.keywords), \
                    f"{module_name(path)}:{node.lineno} prints to stdout; return a Result instead"
    parser = build_parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        if "run" in p._defaults:
            handlers.append(p._defaults["run"])
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    assert len(handlers) > 30
    for handler in handlers:
        assert typing.get_type_hints(handler)["return"] is Result, handler.__qualname__
    assert Result({"a": 1}, "one").render(as_json=False) == "one"
    assert json.loads(Result({"a": 1}, "one").render(as_json=True)) == {"a": 1}
    assert json.loads(Result([1, 2]).render(as_json=False)) == [1, 2]  # no text: JSON either way
