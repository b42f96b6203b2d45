"""Atomic writes: readers see the old file or the whole new one, with normal permissions."""

from __future__ import annotations

import os

import pytest

from anomaly.atomic import atomic_file


def test_success_replaces_the_file_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_file(target) as staging:
        staging.write_text("new")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as staging:
        staging.write_text("half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
