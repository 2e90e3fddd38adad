"""Interrupted and concurrent writes: never a mix of two runs."""

import os

import pytest

import qretrain
from qretrain.errors import QretrainError
from qretrain.storage import atomic as atomic_module
from qretrain.storage import file_sha256, folder_lock


def test_file_and_sidecar_commit_as_one_unit(tmp_path, tiny_vgg, monkeypatch):
    path = tmp_path / "c.h5"
    first = qretrain.save(tiny_vgg, path, record=lambda saved: {"run": 1})
    assert __import__("json").loads(path.with_suffix(".json").read_text()) == {
        "run": 1, "file_sha256": first.sha256}
    assert file_sha256(path) == first.sha256
    qretrain.cluster_(tiny_vgg, {"rules": [{"type": "Linear", "k": 4}]})
    real_replace = os.replace
    calls = []

    def killed_before_the_sidecar(src, dst):
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # killed between the two renames
        real_replace(src, dst)

    monkeypatch.setattr(atomic_module.os, "replace", killed_before_the_sidecar)
    with pytest.raises(KeyboardInterrupt):
        qretrain.save(tiny_vgg, path, record=lambda saved: {"run": 2})
    monkeypatch.setattr(atomic_module.os, "replace", real_replace)
    # The new file is in place and the old sidecar is gone: no stale pair.
    assert file_sha256(path) != first.sha256
    assert not path.with_suffix(".json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, tiny_vgg):
    path = tmp_path / "m.h5"
    dead = tmp_path / ".m.h5.999999999.abc.tmp"  # no such pid
    live = tmp_path / f".m.h5.{os.getppid()}.abc.tmp"  # a live process's write
    other = tmp_path / ".n.h5.999999999.abc.tmp"  # another target's
    for p in (dead, live, other):
        p.write_bytes(b"partial")
    qretrain.save(tiny_vgg, path)
    assert not dead.exists() and live.exists() and other.exists()


def test_saved_files_follow_the_umask(tmp_path, tiny_vgg):
    old = os.umask(0o022)
    try:
        qretrain.save(tiny_vgg, tmp_path / "m.h5")
    finally:
        os.umask(old)
    assert (tmp_path / "m.h5").stat().st_mode & 0o777 == 0o644


def test_a_locked_folder_refuses_a_second_owner(tmp_path):
    with folder_lock(tmp_path, "qretrain run"):
        with pytest.raises(QretrainError, match=r"in use by qretrain run \(pid \d+\); wait"):
            with folder_lock(tmp_path, "qretrain run"):
                pass
    with folder_lock(tmp_path, "qretrain run"):  # released: free again
        pass


def test_a_folder_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    from qretrain.storage import atomic_folder

    path = tmp_path / "m.mlpackage"
    dead = tmp_path / ".m.mlpackage.999999999.new.mlpackage"  # a killed writer's
    live = tmp_path / f".m.mlpackage.{os.getppid()}.new.mlpackage"  # a live one's
    for p in (dead, live):
        p.mkdir()
    with atomic_folder(path) as tmp:
        assert tmp.suffix == ".mlpackage" and not tmp.exists()
        tmp.mkdir()
        (tmp / "a").write_text("first")
    assert (path / "a").read_text() == "first" and not dead.exists() and live.exists()
    with pytest.raises(RuntimeError), atomic_folder(path) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in path.iterdir()) == ["a"]  # the old folder, untouched
    with atomic_folder(path) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("second")
    assert sorted(p.name for p in path.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, live.name])
