"""Reading the JSON files hwnas writes (run records, LUT metadata, exports, reference sets).

One reader, so a damaged file always reads the same way: a missing file is the caller's
one-line hint, anything else (not UTF-8, not JSON, not an object, another schema) a
DataError naming the file and the line, never a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.errors import DataError, NasError


def read_json(path: Path | str, missing: str, *, schema: str | None = None, damaged: str = "") -> dict[str, Any]:
    """The JSON object in `path`.

    `missing` is the whole message for a file that does not exist; `schema`, when given,
    must equal the object's "schema" field; `damaged` is appended to the message for a
    file that exists but cannot be used (what to do about it)."""
    path = Path(path)
    tail = f"; {damaged}" if damaged else ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NasError(missing) from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text{tail}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}){tail}") from None
    except OSError as exc:
        raise NasError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object{tail}")
    if schema is not None and data.get("schema") != schema:
        raise DataError(f"{path}: not a {schema} file (schema {data.get('schema')!r}){tail}")
    return data
