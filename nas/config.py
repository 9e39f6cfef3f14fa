"""The one configuration layer: pydantic models with strict types and no unknown keys.

Every config hwnas reads (experiment, search, controller settings, supernet training,
device profiles) is a `Section` subclass and is checked with `validate`, so a mistake
always reads the same way: one line, the dotted key, the closest known key for a typo.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo, model_validator

from nas.errors import ConfigError, closest, unknown_key


class Section(BaseModel):
    """A config mapping: strict types, no unknown keys (each reported with the closest known one)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    key_word: ClassVar[str] = "key"  # what an unknown key is called: "unknown setting 'x'" for settings

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = cls.known_keys()
            for key in data:
                if key not in known:
                    raise ValueError(unknown_key(key, known, cls.key_word))
        return data

    @classmethod
    def known_keys(cls) -> list[str]:
        """The keys a config mapping of this section may hold."""
        return [f.alias or name for name, f in cls.model_fields.items()]


def _as_tuple(value: Any) -> Any:
    """YAML and JSON give lists; a frozen config keeps tuples (the items stay strictly typed)."""
    return tuple(value) if isinstance(value, list) else value


T = TypeVar("T")
Tuple = Annotated[T, BeforeValidator(_as_tuple)]
"""`Tuple[tuple[int, ...]]`: a tuple field that also accepts a list."""


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, where: str, context: Mapping[str, Any] | None = None) -> M:
    """`model` from `data`, or a ConfigError 'where: dotted.key: message' for the first fault."""
    try:
        return model.model_validate(data, context=dict(context or {}))
    except ValidationError as exc:
        raise ConfigError(f"{where}: {first_error(exc)}") from None


def first_error(exc: ValidationError) -> str:
    """The first validation error as 'dotted.key: message'."""
    err = exc.errors(include_url=False)[0]
    loc = ""
    for part in err["loc"]:
        if isinstance(part, int):
            loc += f"[{part}]"
        elif part not in ("function-after", "function-before") and not str(part).startswith(("function-", "lax-")):
            loc += f".{part}" if loc else str(part)
    kind, msg, got, ctx = err["type"], err["msg"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return f"missing required key {loc!r}" if loc else "missing a required key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        parent, _, key = loc.rpartition(".")
        if key and msg.startswith(f"{key} "):  # the message names its own key: say it once
            loc = parent
        return f"{loc}: {msg}" if loc else msg
    if kind == "greater_than_equal":
        text = f"must be at least {ctx['ge']}"
    elif kind == "less_than_equal":
        text = f"must be at most {ctx['le']}"
    elif kind == "literal_error":
        choices = [c.strip().strip("'") for c in ctx["expected"].replace(" or ", ", ").split(",")]
        text = f"unknown {got!r}{closest(str(got), choices)}; choose {', '.join(choices)}"
        return f"{loc}: {text}" if loc else text
    else:
        text = msg[0].lower() + msg[1:]
    hint = " (true or false)" if kind == "bool_type" else ""
    return f"{loc}: {text}, got {got!r}{hint}" if loc else f"{text}, got {got!r}{hint}"


def expand_path(value: str) -> str:
    """~ and $VARIABLES in a path; an unset variable is an error, not a literal '$' path."""
    text = os.path.expandvars(os.path.expanduser(value))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
    if unset:
        raise ValueError(f"{value}: environment variable {unset[0]} is not set")
    return text


def locate_path(value: str, info: ValidationInfo) -> Path:
    """A path as given: from the working folder if it exists there, else from the folder
    named `base` in the validation context (the config file's folder); a context
    `relative_to` folder (a step's, for files it wrote) is the only place looked in."""
    path = Path(expand_path(value))
    context = info.context or {}
    if context.get("relative_to") is not None and not path.is_absolute():
        return (Path(context["relative_to"]) / path).resolve()
    base = context.get("base")
    if not path.is_absolute() and not path.exists() and base is not None:
        path = Path(base) / path
    return path.resolve()


def existing_path(value: str, info: ValidationInfo) -> str:
    """An existing file or folder as an absolute path (see locate_path)."""
    path = locate_path(value, info)
    if not path.exists():
        base = (info.context or {}).get("base")
        raise ValueError(f"{value} does not exist" + (f" (looked in . and {base})" if base is not None else ""))
    return str(path)
