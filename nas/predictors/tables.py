"""Training tables: measured values of whole archs, read from CSV files.

One reader serves every source: the public benchmark tables (an `arch_str` column of
NB201 strings, or an `arch` column of FBNet op names joined by '-'), the CSV written by
`hwnas lut validate` and `hwnas measure` (an `arch` column of canonical arch JSON) and
any user CSV with an `arch` column in one of those forms. Every other column is a
candidate value column, parsed only when asked for, so a stray text column does not
stop a table from being used for another target. Missing values (an empty cell, NaN,
or a negative sentinel such as the Edge TPU's -1 for "did not compile") are dropped
with a count; anything else that is not a number is an error naming the file and line.
Several tables of one space merge on the arch. A JSON list of objects, each with an
"arch" and value fields, is read the same way (an entry's number stands in for its line).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nas.errors import DataError, NasError, closest
from nas.space.arch import Arch
from nas.space.base import SearchSpace

ARCH_COLUMNS = ("arch", "arch_str")
ID_COLUMNS = ("arch_id", "nb201_index", "index")
MISSING = ("", "nan", "NaN", "NA", "N/A", "null", "None")


@dataclass
class Column:
    """The values of one column: NaN where missing, with the file lines for messages."""

    name: str
    values: np.ndarray
    lines: np.ndarray
    source: str
    missing: int = 0


@dataclass
class ArchTable:
    """Archs of one space (codes, ids) and the value columns measured on them."""

    space: SearchSpace
    codes: np.ndarray
    arch_ids: list[str]
    raw: dict[str, tuple[str, list[str], list[int]]]  # column -> (file, texts per row, lines)
    sources: list[str]
    digests: dict[str, str]
    _parsed: dict[str, Column] = field(default_factory=dict)

    @property
    def value_columns(self) -> list[str]:
        return list(self.raw)

    def column(self, name: str) -> Column:
        """A value column parsed to floats (missing -> NaN); errors name file and line."""
        if name not in self.raw:
            raise NasError(f"no column {name!r} in {', '.join(self.sources)}{closest(name, self.raw)}; "
                           f"columns: {', '.join(self.raw) or 'none'}")
        if name not in self._parsed:
            source, texts, lines = self.raw[name]
            values = np.full(len(texts), np.nan)
            missing = 0
            for i, (text, line) in enumerate(zip(texts, lines)):
                text = text.strip()
                if text in MISSING:
                    missing += 1
                    continue
                try:
                    value = float(text)
                except ValueError:
                    raise NasError(f"{source}:{line}: {name} = {text!r} is not a number") from None
                if math.isnan(value) or value < 0:
                    missing += 1
                    continue
                if not math.isfinite(value):
                    raise NasError(f"{source}:{line}: {name} = {text!r} is not finite")
                values[i] = value
            if missing == len(texts):
                raise NasError(f"{source}: column {name} has no values ({len(texts)} rows, all missing)")
            self._parsed[name] = Column(name, values, np.asarray(lines), source, missing)
        return self._parsed[name]

    def rows(self, name: str, positive: bool = False) -> tuple[np.ndarray, np.ndarray, Column]:
        """(row indices with a value, those values, the column). `positive` refuses zeros,
        which relative-error models cannot fit."""
        col = self.column(name)
        keep = np.flatnonzero(~np.isnan(col.values))
        if positive:
            zero = keep[col.values[keep] <= 0]
            if len(zero):
                raise NasError(f"{col.source}:{col.lines[zero[0]]}: {name} = 0 is not positive; a cost model fits "
                               "relative error (drop the row or mark it missing with an empty cell)")
        return keep, col.values[keep], col

    def target(self, name: str) -> tuple[np.ndarray, np.ndarray, Column]:
        """rows(name, positive=True) of a column a model is to learn: refuses a column
        with fewer than 2 values or one value throughout (nothing to learn)."""
        keep, values, col = self.rows(name, positive=True)
        if len(keep) < 2:
            raise NasError(f"{name} in {col.source} has {len(keep)} value(s) ({col.missing} missing): "
                           "nothing to learn from")
        if np.ptp(values) == 0:
            raise NasError(f"{name} in {col.source} is constant ({values[0]:g} in all {len(keep)} rows): "
                           "a device column must vary over archs")
        return keep, values, col

    def subset(self, rows: Sequence[int]) -> np.ndarray:
        return self.codes[np.asarray(rows, dtype=np.int64)]

    def archs(self, rows: Sequence[int]) -> list[Arch]:
        return self.space.decode_batch(self.codes[np.asarray(rows, dtype=np.int64)])

    @property
    def digest(self) -> str:
        """One hash over the files' bytes: the provenance recorded in predictor files."""
        text = "\n".join(f"{Path(s).name}:{self.digests[s]}" for s in sorted(self.digests))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_table(path: Path | str, space: SearchSpace) -> ArchTable:
    """One table: a CSV with an arch column (see the module doc) and value columns, or a
    JSON list of objects with an "arch" (an arch mapping or string) and value fields."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise NasError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise NasError(f"{path}: not a UTF-8 text file") from None
    header, records = _json_records(path, text) if path.suffix.lower() == ".json" else _csv_records(path, text)
    values = [c for c in header if c not in ARCH_COLUMNS and c not in ID_COLUMNS and c]
    codes, ids, lines = [], [], []
    texts: dict[str, list[str]] = {c: [] for c in values}
    seen: dict[str, int] = {}
    cache: dict[str, tuple[np.ndarray, str]] = {}
    for line, arch_ref, row in records:
        key = arch_ref if isinstance(arch_ref, str) else json.dumps(arch_ref, sort_keys=True)
        if key not in cache:
            try:
                arch = space.parse_arch(arch_ref) if isinstance(arch_ref, str) else space.arch(arch_ref)
            except NasError as exc:
                raise NasError(f"{path}:{line}: {exc}") from None
            cache[key] = (space.encode(arch), arch.arch_id)
        code, arch_id = cache[key]
        if arch_id in seen:
            raise NasError(f"{path}:{line}: arch {arch_id} already appears on line {seen[arch_id]}; "
                           "average repeated measurements into one row")
        seen[arch_id] = line
        codes.append(code)
        ids.append(arch_id)
        lines.append(line)
        for c in values:
            value = row.get(c)
            texts[c].append("" if value is None else str(value))
    if not codes:
        raise NasError(f"{path}: no rows")
    source = str(path)
    return ArchTable(space, np.array(codes, dtype=np.int64), ids, {c: (source, texts[c], lines) for c in values},
                     [source], {source: hashlib.sha256(data).hexdigest()})


def _csv_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, str, dict]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    arch_column = next((c for c in ARCH_COLUMNS if c in header), None)
    if arch_column is None:
        raise NasError(f"{path}: needs an 'arch' column (arch JSON, an NB201 string or choices joined by '-') "
                       f"or an 'arch_str' column; has {', '.join(header) or 'no header'}")
    return header, [(line, row.get(arch_column) or "", row) for line, row in enumerate(reader, start=2)]


def _json_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, object, dict]]]:
    """Entries of a JSON list; an entry's number stands in for a line number."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NasError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise NasError(f"{path}: a JSON table must be a list of objects, each with an 'arch'")
    header: list[str] = []
    for entry in data:
        header += [k for k in entry if k not in header]
    records = []
    for number, entry in enumerate(data, start=1):
        if "arch" not in entry:
            raise NasError(f"{path}:{number}: entry has no 'arch'")
        records.append((number, entry["arch"], entry))
    return header, records


def read_tables(paths: Sequence[Path | str], space: SearchSpace) -> ArchTable:
    """Several CSVs merged on the arch: a row per arch in any of them, a column's value
    missing where its file lacks the arch. A column name may come from one file only."""
    tables = [read_table(p, space) for p in paths]
    if len(tables) == 1:
        return tables[0]
    index: dict[str, int] = {}
    codes: list[np.ndarray] = []
    for t in tables:
        for arch_id, code in zip(t.arch_ids, t.codes):
            if arch_id not in index:
                index[arch_id] = len(codes)
                codes.append(code)
    raw: dict[str, tuple[str, list[str], list[int]]] = {}
    for t in tables:
        where = [index[a] for a in t.arch_ids]
        for name, (source, texts, lines) in t.raw.items():
            if name in raw:
                raise NasError(f"column {name!r} is in both {raw[name][0]} and {source}; rename one")
            merged_texts, merged_lines = [""] * len(codes), [0] * len(codes)
            for i, text, line in zip(where, texts, lines):
                merged_texts[i], merged_lines[i] = text, line
            raw[name] = (source, merged_texts, merged_lines)
    digests = {s: d for t in tables for s, d in t.digests.items()}
    return ArchTable(space, np.array(codes, dtype=np.int64), list(index), raw, [s for t in tables for s in t.sources],
                     digests)


def read_archs(path: Path | str, space: SearchSpace) -> list[Arch]:
    """Archs to score or evaluate: a .csv file with an arch column, a JSON list of archs,
    or one arch per line (JSON, as 'hwnas space sample' writes, or the space's string
    form). Each arch is a decision mapping, a {"space", "arch"} object or arch text."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        table = read_table(path, space)
        return table.archs(range(len(table.arch_ids)))
    try:
        body = path.read_text().strip()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; expected JSON lines or a JSON list of archs") from None
    except OSError as exc:
        raise NasError(f"{path}: cannot read ({exc.strerror})") from None
    if body.startswith("["):
        items = [(f"{path}: arch {i}", item) for i, item in enumerate(_json(body, f"{path}"), start=1)]
    else:
        items = [(f"{path}:{line}", _json(row, f"{path}:{line}") if row.strip()[:1] in ("{", '"') else row.strip())
                 for line, row in enumerate(body.splitlines(), start=1) if row.strip()]
    archs = [_arch_item(space, item, where) for where, item in items]
    if not archs:
        raise DataError(f"{path}: holds no archs")
    return archs


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno}); expected JSON lines or a JSON "
                        "list of archs") from None


def _arch_item(space: SearchSpace, item, where: str) -> Arch:
    if not isinstance(item, (str, dict)):
        raise DataError(f"{where} is {json.dumps(item)[:40]}; expected a decision mapping, "
                        "a {\"space\", \"arch\"} object or the space's string form")
    try:
        return space.parse_arch(item) if isinstance(item, str) else space.arch(item)
    except NasError as exc:
        raise DataError(f"{where}: {exc}") from None
