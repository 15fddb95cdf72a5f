"""Atomic writes never leave partial files behind."""

from __future__ import annotations

import json

import pytest

from graphopt.io import atomic_directory, atomic_write, atomic_write_json


def test_json_round_trip(tmp_path):
    target = atomic_write_json(tmp_path / "a" / "report.json", {"x": [1, 2]})
    assert json.loads(target.read_text()) == {"x": [1, 2]}


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("old")

    def explode(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]


def test_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "ckpt"
    with pytest.raises(ValueError), atomic_directory(target) as tmp:
        (tmp / "part").write_text("1")
        raise ValueError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "part").write_text("2")
    with atomic_directory(target) as tmp:
        (tmp / "other").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["other"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
