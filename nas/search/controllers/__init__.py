"""The controller registry: name -> Controller class (with its settings model).

Built-in controllers are named here and imported on first use, so `hwnas` commands
that never search load neither Optuna nor torch. A new controller is one
`Controller` subclass (nas.search.controllers.base) and one `register(cls)`; the
search config's controller union, the CLI help, `hwnas bench search` and the
experiment schema all read their names from here.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nas.errors import ConfigError, unknown_key

if TYPE_CHECKING:
    from nas.search.controllers.base import Controller

BUILTIN = {  # name -> "module:class", imported when first looked up
    "evolution": "nas.search.controllers.evolution:Evolution",
    "random": "nas.search.controllers.random:RandomSearch",
    "optuna-tpe": "nas.search.controllers.optuna_backed:TPE",
    "optuna-nsga2": "nas.search.controllers.optuna_backed:NSGA2",
    "differentiable": "nas.search.controllers.differentiable:Differentiable",
}
_REGISTERED: dict[str, type[Controller]] = {}


def register(cls: type[Controller]) -> type[Controller]:
    """Make a controller available by its `name` (usable as a class decorator)."""
    if cls.name in BUILTIN or cls.name in _REGISTERED:
        raise ValueError(f"a controller named {cls.name!r} is already registered")
    _REGISTERED[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a controller registered with `register` (built-ins stay)."""
    _REGISTERED.pop(name, None)


def controller_names() -> list[str]:
    """Every registered name, built-ins first."""
    return [*BUILTIN, *_REGISTERED]


def controller_class(name: str) -> type[Controller]:
    """The class registered under `name`; an unknown name is a ConfigError with the closest one."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN:
        raise ConfigError(unknown_key(name, controller_names(), "controller"))
    module, _, attr = BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), attr)
