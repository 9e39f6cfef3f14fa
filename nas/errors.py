"""User-facing errors: one line that says what is wrong and how to fix it.

The CLI prints a NasError as a single line and exits with code 2; anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class NasError(Exception):
    """A problem with the user's input (file, name, value), not with hwnas itself."""


def closest(name: str, options: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix when one of `options` is close to `name`, else ''."""
    match = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
