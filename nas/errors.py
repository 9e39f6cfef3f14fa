"""User-facing errors and warnings: one line that says what is wrong and how to fix it.

The CLI prints a NasError as a single line and exits with code 2; anything else is a
bug and keeps its traceback. Subclasses say which kind of input was wrong, so callers
(and tests) can catch one kind without matching message text; warnings have their own
categories for the same reason: a caller filters `CompatibilityWarning`, never a message.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class NasError(Exception):
    """A problem with the user's input (file, name, value), not with hwnas itself."""


class ConfigError(NasError):
    """A config file or mapping (experiment, search, training, device profile, space) is invalid."""


class CompatibilityError(NasError):
    """Two artifacts do not belong together: a LUT or checkpoint of another space, device or runtime."""


class DataError(NasError):
    """A data file (dataset, table, LUT rows, predictor arrays, checkpoint) is malformed."""


class HwnasWarning(UserWarning):
    """Base category of every warning hwnas issues."""


class CompatibilityWarning(HwnasWarning):
    """An artifact is used although it does not fully match (a LUT under --allow-mismatch, a changed space)."""


class QualityWarning(HwnasWarning):
    """A result is usable but weaker than it should be (a short training, a noisy measurement)."""


def closest(name: str, options: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix when one of `options` is close to `name`, else ''."""
    match = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_key(key: object, known: Iterable[str], what: str = "key") -> str:
    """The one wording of an unknown name: "unknown key 'x' (did you mean 'y'?); known: a, b"."""
    known = [str(k) for k in known]
    return f"unknown {what} {str(key)!r}{closest(str(key), known)}; known: {', '.join(known) or 'none'}"
