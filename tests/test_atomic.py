"""Atomic writes leave either the old file or the complete new one, readable by others."""
from __future__ import annotations

import os
import stat

import pytest

from nas.atomic import atomic_path, write_atomic


def test_write_replaces_whole_file_with_shared_permissions(tmp_path) -> None:
    target = tmp_path / "sub" / "lut.csv"
    write_atomic(target, "old\n")
    write_atomic(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["lut.csv"]


def test_failure_mid_write_keeps_the_old_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "kit.zip"
    write_atomic(target, "complete")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["kit.zip"]
