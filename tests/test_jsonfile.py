"""The one reader of hwnas's JSON files: every way a file can be unusable is one line."""
from __future__ import annotations

import pytest

from nas.errors import DataError, NasError
from nas.jsonfile import read_json


@pytest.mark.parametrize("content, message", [
    (b'{"schema": "x/1", "a": 1', r"f.json: not valid JSON \(Expecting .*line 1\); rebuild it"),
    (b'{"schema": "x/1", "a": "\xff"}', r"f.json: not UTF-8 text; rebuild it"),
    (b'[1, 2]', r"f.json: expected a JSON object; rebuild it"),
    (b'{"schema": "y/1"}', r"f.json: not a x/1 file \(schema 'y/1'\); rebuild it"),
])
def test_a_damaged_file_is_a_data_error_naming_it(tmp_path, content, message) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_json(path, "missing", schema="x/1", damaged="rebuild it")


def test_a_missing_file_is_the_callers_message_and_a_good_one_reads(tmp_path) -> None:
    with pytest.raises(NasError, match="^no such record$"):
        read_json(tmp_path / "none.json", "no such record")
    (tmp_path / "ok.json").write_text('{"schema": "x/1", "a": [1, 2]}')
    assert read_json(tmp_path / "ok.json", "missing", schema="x/1") == {"schema": "x/1", "a": [1, 2]}
