"""LUT integrity (issue 14, item 3): a LUT file is refused, in one line, when its rows were
duplicated, edited or are absurd, and `lut import` never silently replaces a LUT that
`lut build` measured and calibrated."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nas.cli import main
from nas.errors import CompatibilityWarning, DataError, NasError
from nas.hardware import kit_runner
from nas.hardware.devices import load_device
from nas.hardware.lut import LUT, blocks_digest, lut_blocks, new_meta
from nas.hardware.measure import Summary
from nas.space import load_space
from tests.hw_helpers import SMALL_SPACE, small_space

REPO = Path(__file__).resolve().parents[2]


def _lut(path: Path, **meta_extra) -> LUT:
    """A complete LUT of the small space at `path`, as `lut build` writes it (no measuring)."""
    space, device = small_space(), load_device("local-cpu")
    meta = new_meta(space, device, [None], **meta_extra)
    meta["complete"] = True
    entries = {s.key: (s, Summary(1.0 + i / 100, 0.9, 1.2, 1.0, 0.05, 10, 0))
               for i, s in enumerate(lut_blocks(space, [None]))}
    lut = LUT(meta, entries)
    lut.save(path)
    return lut


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _set_cell(path: Path, line: int, column: str, value: str) -> None:
    rows = _rows(path)
    rows[line - 1][rows[0].index(column)] = value
    _write_rows(path, rows)


def _space_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_SPACE))
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwnas: error: ") and "Traceback" not in err, err
    return err


def test_an_untouched_lut_loads(tmp_path: Path) -> None:
    lut = _lut(tmp_path / "small.csv")
    assert LUT.load(tmp_path / "small.csv").entries == lut.entries


def test_a_duplicated_block_row_is_refused_with_both_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    _lut(path)
    rows = _rows(path)
    copy = list(rows[2])  # line 3's block again, with another value (the last row used to win)
    copy[rows[0].index("median")] = "50.0"
    _write_rows(path, [*rows, copy])
    with pytest.raises(DataError, match=rf"small.csv:{len(rows) + 1}: duplicated block .*, already on line 3$"):
        LUT.load(path)


def test_an_unknown_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    _lut(path)
    rows = _rows(path)
    _write_rows(path, [[*rows[0], "notes"], *[[*r, "x"] for r in rows[1:]]])
    with pytest.raises(DataError, match="unknown column 'notes'"):
        LUT.load(path)


def test_a_row_with_more_cells_than_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    _lut(path)
    rows = _rows(path)
    rows[3].append("7")
    _write_rows(path, rows)
    with pytest.raises(DataError, match="small.csv:4: .* cells, the header has"):
        LUT.load(path)


def test_a_complete_lut_whose_rows_were_edited_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    lut = _lut(path)
    assert lut.meta["blocks"] == blocks_digest(s for s, _ in lut.entries.values())
    rows = _rows(path)
    _write_rows(path, rows[:-1])  # a block deleted after the build
    with pytest.raises(DataError, match="rows were added, removed or edited"):
        LUT.load(path)


def test_a_lut_recording_another_space_fingerprint_is_used_with_a_warning_while_it_holds_every_block(
        tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    _lut(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["space_fingerprint"] = "0123456789abcdef"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.warns(CompatibilityWarning, match="0123456789abcdef"):
        LUT.load(path).check(small_space())


def test_an_incomplete_lut_is_not_held_to_its_fingerprint(tmp_path: Path) -> None:
    """A build in progress holds some of its blocks: it must stay resumable."""
    path = tmp_path / "small.csv"
    lut = _lut(path)
    lut.meta["complete"] = False
    lut.entries = dict(list(lut.entries.items())[:3])
    lut.save(path)
    assert len(LUT.load(path).entries) == 3


@pytest.mark.parametrize("column, value, message", [
    ("median", "1e30", "beyond the sanity limit of 3.6e[+]06 ms"),
    ("p90", "4000000", "beyond the sanity limit"),
    ("median", "-1.5", "not a positive finite value"),
    ("mean", "nan", "not a positive finite value"),
    ("p10", "inf", "not a positive finite value"),
    ("std", "nan", "must be finite"),
    ("n", "inf", "must be a count"),
    ("rejected", "-1", "must be a count"),
    ("n", "2.5", "must be a count"),
])
def test_absurd_or_non_finite_entries_are_refused(tmp_path: Path, column: str, value: str, message: str) -> None:
    path = tmp_path / "small.csv"
    _lut(path)
    _set_cell(path, 2, column, value)
    with pytest.raises(NasError, match=rf"small.csv:2: {column} = .*{message}"):
        LUT.load(path)


def test_the_sanity_limit_follows_the_unit(tmp_path: Path) -> None:
    """An energy LUT in mJ has its own limit: 4e6 mJ per block is plausible for no block, but
    below the energy limit; 1e30 mJ is refused."""
    path = tmp_path / "energy.csv"
    _lut(path, metric="energy", unit="mJ")
    _set_cell(path, 2, "median", "4000000")
    assert LUT.load(path).unit == "mJ"
    _set_cell(path, 2, "median", "1e30")
    with pytest.raises(DataError, match="mJ is beyond the sanity limit"):
        LUT.load(path)


def test_non_utf8_lut_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    _lut(path)
    path.write_bytes(path.read_bytes().replace(b"mbconv", b"mbc\xffnv", 1))
    with pytest.raises(DataError, match="small.csv: not UTF-8 text"):
        LUT.load(path)
    _lut(path)
    meta = path.with_suffix(".json")
    meta.write_bytes(meta.read_bytes().replace(b"local-cpu", b"local-\xfe\xffcpu", 1))
    with pytest.raises(DataError, match="small.json: not UTF-8 text"):
        LUT.load(path)


def test_the_cli_reports_a_garbled_lut_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    _lut(path)
    path.write_bytes(path.read_bytes() + b"\xff\xfe\n")
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "energy", "estimate", "--space", str(_space_file(tmp_path)),
                           "--device", "local-cpu", "--lut", str(path), "max"],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hwnas: error: ")
    assert "not UTF-8 text" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- lut import
def _kit_results(path: Path, median: float) -> Path:
    """A kit runner's results file for every block of the small space, as the CLI loads it
    (from its YAML file: the decision order, and so the fingerprint, follow the file)."""
    space, device = load_space(_space_file(path.parent)), load_device("local-cpu")
    specs = lut_blocks(space, [None])
    header = {"schema": kit_runner.RESULTS_SCHEMA, "kit": space.fingerprint(), "space": space.name,
              "resolutions": [None], "provider": device.provider, "threads": device.threads, "batch": device.batch,
              "reference": {"ms": 1.0}}
    lines = ["# " + json.dumps(header), "id,key,median,p10,p90,mean,std,n,rejected"]
    lines += [f"{i},{s.key},{median},{median},{median},{median},0.0,5,0" for i, s in enumerate(specs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_lut_import_refuses_to_replace_a_built_lut_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "small.csv"
    built = _lut(out)
    built.meta["calibration"] = {"intercept": 0.1}
    built.save(out)
    before = (out.read_bytes(), out.with_suffix(".json").read_bytes())
    results = _kit_results(tmp_path / "results.csv", 2.5)
    args = ["lut", "import", str(results), "--space", str(_space_file(tmp_path)), "--device", "local-cpu", "-o", str(out)]
    assert main(args) == 2
    assert "pass --force" in _one_error_line(capsys)
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before  # calibration kept
    assert main([*args, "--force"]) == 0
    replaced = LUT.load(out)
    assert replaced.meta["calibration"] is None and {s.median for _, s in replaced.entries.values()} == {2.5}


def test_lut_import_replaces_a_previous_import_of_kit_results(tmp_path: Path, capsys) -> None:
    out = tmp_path / "small.csv"
    space = _space_file(tmp_path)
    args = ["--space", str(space), "--device", "local-cpu", "-o", str(out)]
    assert main(["lut", "import", str(_kit_results(tmp_path / "r1.csv", 2.0)), *args]) == 0
    assert main(["lut", "import", str(_kit_results(tmp_path / "r2.csv", 3.0)), *args]) == 0
    assert {s.median for _, s in LUT.load(out).entries.values()} == {3.0}
