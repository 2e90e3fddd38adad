"""Interrupted and concurrent writes: never a mix of two runs."""

import os
from pathlib import Path

import pytest

import qretrain
from qretrain.errors import QretrainError
from qretrain.storage import atomic as atomic_module
from qretrain.storage import file_sha256, folder_lock


def test_file_and_sidecar_commit_as_one_unit(tmp_path, tiny_vgg, monkeypatch):
    path = tmp_path / "c.h5"
    first = qretrain.save(tiny_vgg, path, record=lambda saved: {"run": 1})
    assert __import__("json").loads(path.with_suffix(".json").read_text()) == {
        "run": 1,
        "file_sha256": first.sha256,
    }
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


def test_the_lock_never_writes_through_a_link_and_leaves_nothing_behind(tmp_path):
    from qretrain.storage.atomic import LOCK_NAME

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    folder = tmp_path / "run"
    folder.mkdir()
    os.symlink(victim, folder / LOCK_NAME)
    with pytest.raises(QretrainError, match=r"\.qretrain\.lock' is a symbolic link: qretrain "
                       "never writes through links; remove it"):  # fmt: skip
        with folder_lock(folder, "qretrain run"):
            pass
    assert victim.read_text() == "precious\n"
    os.unlink(folder / LOCK_NAME)
    os.mkfifo(folder / LOCK_NAME)  # a reader would block on it for ever
    with pytest.raises(QretrainError, match="is not a regular file"):
        with folder_lock(folder, "qretrain run"):
            pass
    # Released, the lock goes, and so do the folders it made (when nothing was put there).
    with folder_lock(tmp_path / "a" / "b", "qretrain run"):
        assert (tmp_path / "a" / "b" / LOCK_NAME).is_file()
    assert not (tmp_path / "a").exists()
    with folder_lock(tmp_path / "c", "qretrain run"):
        (tmp_path / "c" / "result").write_text("kept")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["result"]


def test_a_lock_removed_by_its_last_owner_is_not_taken_in_its_place(tmp_path, monkeypatch):
    """A process that opened the lock file just before its owner removed it must not
    hold a lock on a file no one else can see."""
    from qretrain.storage.atomic import LOCK_NAME

    real_flock, calls = atomic_module.fcntl.flock, []

    def owner_leaves_meanwhile(fd, op):
        calls.append(fd)
        if len(calls) == 1:  # as if the last owner unlinked it between our open and flock
            os.unlink(tmp_path / LOCK_NAME)
        return real_flock(fd, op)

    monkeypatch.setattr(atomic_module.fcntl, "flock", owner_leaves_meanwhile)
    with folder_lock(tmp_path, "qretrain run"):
        held = os.stat(tmp_path / LOCK_NAME)
    assert len(calls) == 2 and held.st_nlink == 1  # tried again, on the file in place


def test_folders_made_inside_and_replaced_folders_never_follow_links(tmp_path):
    from qretrain.storage import atomic_folder, subfolder

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("mine")
    os.symlink(elsewhere, tmp_path / "figures")
    with pytest.raises(QretrainError, match=r"figures' is a symbolic link: qretrain never "
                       "writes through links; remove it"):  # fmt: skip
        subfolder(tmp_path / "figures")
    (tmp_path / "plain").write_text("")
    with pytest.raises(QretrainError, match="plain' is not a folder"):
        subfolder(tmp_path / "plain")
    assert subfolder(tmp_path / "new").is_dir()
    # A package written over a link replaces the link; the folder it named is untouched.
    os.symlink(elsewhere, tmp_path / "m.mlpackage")
    with atomic_folder(tmp_path / "m.mlpackage") as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("new")
    assert not (tmp_path / "m.mlpackage").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.mlpackage")]


def _full_disk(path, flags):
    """An opener that writes to /dev/full, as a file system with no space left would."""
    return os.open("/dev/full", os.O_WRONLY)


def test_a_full_disk_is_one_line_and_the_old_file_stands(tmp_path, tiny_vgg, monkeypatch,
                                                         capsys):  # fmt: skip
    from qretrain.cli.main import main
    from qretrain.retrain import checkpoint
    from qretrain.storage import h5

    path = tmp_path / "m.h5"
    old = qretrain.save(tiny_vgg, path).sha256
    monkeypatch.setattr(h5, "nofollow", _full_disk)
    with pytest.raises(
        QretrainError,
        match=rf"cannot write {str(path)!r} \(No space left on "
        r"device\); it is left as it was: free some space, or write elsewhere",
    ):
        qretrain.save(tiny_vgg, path)
    assert file_sha256(path) == old and sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]
    (tmp_path / "plan.yaml").write_text("rules:\n  - {type: Conv2d, k: 4}\n")
    assert main(["compress", str(path), "--plan", str(tmp_path / "plan.yaml"),
                 "-o", str(path), "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(No space left on device); it is left as it was" in err
    assert file_sha256(path) == old
    monkeypatch.setattr(checkpoint, "nofollow", _full_disk)
    with pytest.raises(QretrainError, match="No space left on device"):
        checkpoint.write_payload(tmp_path / "r.ckpt", {"epoch": 1})
    assert not (tmp_path / "r.ckpt").exists()


def test_compress_into_a_full_file_system_is_one_line_not_a_crash(tmp_path, tiny_vgg):
    """The real thing: a 64 KiB tmpfs (root only). libhdf5 used to fail inside close,
    keep a handle on the removed temporary and crash the interpreter (exit 139)."""
    import subprocess
    import sys

    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root to mount a tiny tmpfs (the patched test covers the rest)")
    try:
        model = tmp_path / "m.h5"
        qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=16, hidden=256), model)
        (disk / "m.h5").write_bytes(b"old")
        run = subprocess.run([sys.executable, "-m", "qretrain", "compress", str(model), "--plan",
                              "examples/plans/vgg-small-fmnist.yaml", "-o", str(disk / "m.h5"),
                              "--quiet"], capture_output=True, text=True,
                             cwd=Path(__file__).parents[2])  # fmt: skip
        assert run.returncode == 2, run.stderr[-2000:]
        assert run.stderr.count("\n") == 1 and "No space left on device" in run.stderr
        assert (disk / "m.h5").read_bytes() == b"old" and os.listdir(disk) == ["m.h5"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
