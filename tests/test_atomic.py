"""lmrl_lightning.atomic: a file or directory appears whole or not at all, and a failure leaves no temporary."""
from __future__ import annotations

import pytest

from lmrl_lightning.atomic import atomic_directory, atomic_open, atomic_write_bytes, atomic_write_json


def test_a_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert path.read_text(encoding="utf-8") == '{\n  "a": 2\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_write_keeps_the_previous_file(tmp_path, error):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(error):
        with atomic_open(path, "wb", fsync=True) as f:
            f.write(b"half")
            raise error
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_directory_is_moved_into_place_or_removed(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(out) as staging:
        (staging / "a.txt").write_text("a")
    assert [p.name for p in tmp_path.iterdir()] == ["export"] and (out / "a.txt").read_text() == "a"


def test_a_filled_directory_is_replaced_only_when_asked(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OSError):
        with atomic_directory(out) as staging:
            (staging / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_directory(out, replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
