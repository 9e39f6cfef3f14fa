"""Architectures as plain data: an immutable mapping of a space's decisions to values."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Value = int | float | str | bool


@dataclass(frozen=True)
class Decision:
    """One choice the search makes, with the values it may take (order = code order)."""

    name: str
    choices: tuple[Value, ...]

    def code(self, value: Any) -> int:
        """Index of `value` among the choices (KeyError-free: the space validates first)."""
        return self.choices.index(value)


class Arch(Mapping[str, Value]):
    """A point in a search space: decision name -> value, in the space's decision order.

    Equality, hashing and the id come from the canonical JSON form, so the same
    architecture has the same id in every process and on every machine.
    """

    __slots__ = ("space", "_values", "_canonical")

    def __init__(self, space: str, values: Mapping[str, Value]) -> None:
        self.space = space
        self._values = dict(values)
        self._canonical = json.dumps({"space": space, "arch": self._values}, sort_keys=True, separators=(",", ":"))

    def __getitem__(self, name: str) -> Value:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)

    def __repr__(self) -> str:
        return f"Arch({self.space!r}, id={self.arch_id})"

    def to_json(self) -> str:
        """Canonical JSON: {"space": ..., "arch": {...}} with sorted keys, no spaces."""
        return self._canonical

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "arch": dict(self._values), "arch_id": self.arch_id}

    @property
    def arch_id(self) -> str:
        """Short stable id: the first 12 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self._canonical.encode()).hexdigest()[:12]
