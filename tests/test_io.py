"""Atomic writes never leave partial files behind."""

from __future__ import annotations

import json
import os
import stat

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


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_atomic_files_get_the_permissions_of_a_plain_open(tmp_path, umask):
    """mkstemp made them 0600 whatever the umask."""
    atomic_write_json(tmp_path / "report.json", {"a": 1})
    with open(tmp_path / "plain.json", "w") as handle:
        handle.write("{}")
    assert mode(tmp_path / "report.json") == mode(tmp_path / "plain.json") == 0o666 & ~umask


def test_atomic_folders_get_the_permissions_of_a_plain_mkdir(tmp_path, umask):
    """mkdtemp made them 0700 whatever the umask."""
    with atomic_directory(tmp_path / "checkpoint") as tmp:
        (tmp / "weights").write_text("w")
    (tmp_path / "plain").mkdir()
    assert mode(tmp_path / "checkpoint") == mode(tmp_path / "plain") == 0o777 & ~umask
    assert mode(tmp_path / "checkpoint" / "weights") == 0o666 & ~umask


def test_replacing_a_file_keeps_its_mode_as_open_would(tmp_path, umask):
    target = tmp_path / "data.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new" and mode(target) == 0o640


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
