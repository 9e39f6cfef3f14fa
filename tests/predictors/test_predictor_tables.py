"""Training tables: the public benchmark CSVs read as archs of our spaces, merged, and
bad tables refused with the file and line of the fault."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from nas.errors import NasError
from nas.predictors.tables import read_archs, read_table, read_tables
from nas.space import load_space


@pytest.fixture(scope="module")
def nb201_dir(benchmarks) -> Path:
    folder = benchmarks / "nb201"
    if not (folder / "hwnasbench_cifar10.csv").is_file():
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    return folder


@pytest.fixture(scope="module")
def nb201_table(nb201_dir):
    return read_tables([nb201_dir / "hwnasbench_cifar10.csv", nb201_dir / "help_latency.csv"], load_space("nb201"))


def test_public_nb201_tables_map_onto_the_nb201_space(nb201_table, nb201_dir):
    space = nb201_table.space
    assert len(nb201_table.arch_ids) == 15625 == len(set(nb201_table.arch_ids))
    # rows are in NB201 index order, and our arch of row i has NB201 index i
    for i in (0, 1, 777, 15624):
        assert space.nb201_index(space.decode(nb201_table.codes[i])) == i
    # both tables merged on the arch: HELP's columns sit beside HW-NAS-Bench's
    assert {"edgegpu_latency", "gold_6226_latency", "samsung_a50_latency"} <= set(nb201_table.value_columns)
    rows, values, column = nb201_table.rows("edgetpu_latency")
    assert column.missing == 4699 and len(rows) == 15625 - 4699  # the Edge TPU's -1: did not compile
    with open(nb201_dir / "hwnasbench_cifar10.csv") as fh:
        raw = [float(r["edgetpu_latency"]) for r in csv.DictReader(fh)]
    assert np.array_equal(values, np.array([v for v in raw if v >= 0]))


def test_public_fbnet_table_maps_onto_fbnet_cifar(benchmarks):
    path = benchmarks / "fbnet" / "help_latency.csv"
    if not path.is_file():
        pytest.skip(f"public benchmark tables not found at {benchmarks} (set HWNAS_BENCHMARKS)")
    table = read_table(path, load_space("fbnet_cifar"))
    assert len(table.arch_ids) == 5000
    with open(path) as fh:
        header = next(csv.reader(fh))
    # every latency column of the file, in the file's order (SOURCES.md lists the devices)
    assert table.value_columns == [c for c in header if c != "arch"]
    assert {"eyeriss_latency", "gold_6226_latency", "raspi4_latency", "pixel3_latency",
            "samsung_a50_latency", "1080ti_64_latency"} <= set(table.value_columns)
    with open(path) as fh:
        first = next(csv.DictReader(fh))["arch"]
    assert "-".join(table.archs([0])[0].values()) == first


def test_arch_forms(nb201_table):
    space = nb201_table.space
    arch = space.decode(nb201_table.codes[5])
    assert space.parse_arch(arch.to_json()) == arch
    assert space.parse_arch(space.to_string(arch)) == arch
    assert space.parse_arch(space.format_arch(arch)) == arch and space.format_arch(arch) == space.to_string(arch)
    fb = load_space("fbnet_cifar")
    a = fb.sample(0)
    assert fb.parse_arch("-".join(a.values())) == a
    assert fb.parse_arch(fb.format_arch(a)) == a and fb.resolve_arch("-".join(a.values())) == a


def _write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


GOOD = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
OTHER = "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"


def test_bad_tables_name_the_line(tmp_path):
    space = load_space("nb201")
    bad_op = GOOD.replace("skip_connect", "skip")
    unknown = _write(tmp_path / "a.csv", [["arch_str", "lat"], [GOOD, "1.0"], [bad_op, "2"]])
    with pytest.raises(NasError, match=r"a\.csv:3: .*unknown op 'skip'"):
        read_table(unknown, space)
    text = _write(tmp_path / "b.csv", [["arch_str", "lat"], [GOOD, "1.0"], [OTHER, "fast"]])
    table = read_table(text, space)  # only parsed when the column is asked for
    with pytest.raises(NasError, match=r"b\.csv:3: lat = 'fast' is not a number"):
        table.column("lat")
    empty = _write(tmp_path / "c.csv", [["arch_str", "lat"], [GOOD, ""], [OTHER, "-1"]])
    with pytest.raises(NasError, match=r"c\.csv: column lat has no values \(2 rows, all missing\)"):
        read_table(empty, space).column("lat")
    no_arch = _write(tmp_path / "d.csv", [["name", "lat"], ["x", "1"]])
    with pytest.raises(NasError, match="needs an 'arch' column"):
        read_table(no_arch, space)
    twice = _write(tmp_path / "e.csv", [["arch_str", "lat"], [GOOD, "1"], [OTHER, "2"], [GOOD, "3"]])
    with pytest.raises(NasError, match=r"e\.csv:4: arch .* already appears on line 2"):
        read_table(twice, space)
    zero = _write(tmp_path / "f.csv", [["arch_str", "lat"], [GOOD, "1"], [OTHER, "0"]])
    with pytest.raises(NasError, match=r"f\.csv:3: lat = 0 is not positive"):
        read_table(zero, space).rows("lat", positive=True)
    with pytest.raises(NasError, match="no column 'latency'.*did you mean 'lat'"):
        read_table(zero, space).column("latency")


def test_merge_refuses_a_column_from_two_files(tmp_path):
    space = load_space("nb201")
    a = _write(tmp_path / "a.csv", [["arch_str", "lat"], [GOOD, "1"]])
    b = _write(tmp_path / "b.csv", [["arch", "lat"], [OTHER, "2"]])
    with pytest.raises(NasError, match="column 'lat' is in both"):
        read_tables([a, b], space)


def test_read_archs_accepts_csv_json_lines_and_strings(tmp_path):
    space = load_space("nb201")
    archs = [space.from_string(GOOD), space.from_string(OTHER)]
    lines = tmp_path / "archs.jsonl"
    lines.write_text("\n".join(json.dumps(a.to_dict()) for a in archs) + "\n")
    strings = tmp_path / "archs.txt"
    strings.write_text(f"{GOOD}\n\n{OTHER}\n")
    table = _write(tmp_path / "archs.csv", [["arch_id", "arch"], *[[a.arch_id, a.to_json()] for a in archs]])
    for path in (lines, strings, table):
        assert read_archs(path, space) == archs
    strings.write_text(f"{GOOD}\n|bogus|\n")
    with pytest.raises(NasError, match=r"archs\.txt:2: "):
        read_archs(strings, space)
