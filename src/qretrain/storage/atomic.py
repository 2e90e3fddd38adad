"""Atomic file writes and folder locks.

``atomic_path`` writes a temporary file beside the target, then renames it: a
failure at any point leaves the target as it was (absent or the old version). The
temporary name carries the writer's pid, so the next write to the same path removes
temporaries whose writer died (killed runs leave them behind) and leaves live ones.
``atomic_folder`` does the same for a folder written by someone else's code (a Core
ML package). ``commit_pair`` renames a file and its JSON sidecar so that no crash leaves a new
file beside an old sidecar. ``folder_lock`` keeps a second process out of a folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qretrain.errors import QretrainError

LOCK_NAME = ".qretrain.lock"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``path``.

    The body may rename the temporary file itself (``commit_pair`` does); then
    nothing is left to rename.
    """
    path = Path(path)
    _check_folder(path)
    remove_stale_temporaries(path)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
    except OSError as e:
        raise _no_files(path, e) from None
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; files follow the umask
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            _fsync(tmp)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a path beside ``path`` for the body to create a folder at (its name ends
    in ``path``'s suffix, which some writers insist on); on success the folder takes
    ``path``'s place (an old folder there is moved aside first, then removed). A
    failure leaves ``path`` as it was; temporaries of writers that died are removed."""
    path = Path(path)
    _check_folder(path)
    for stale in _dead_writers(path, rf"(new|old){re.escape(path.suffix)}"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp, old = (path.with_name(f".{path.name}.{os.getpid()}.{part}{path.suffix}")
                for part in ("new", "old"))  # fmt: skip
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        yield tmp
        if tmp.exists():
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def commit_pair(tmp: Path, path: Path, sidecar_text: str, sidecar: Path) -> None:
    """Put ``tmp`` at ``path`` and ``sidecar_text`` at ``sidecar``, as one unit.

    The old sidecar goes first, so a crash in between leaves the new file with no
    sidecar (or the old file with none), never a new file beside an old sidecar;
    the sidecar names the file's checksum, so readers can tell the pair apart too.
    """
    with atomic_path(sidecar) as side_tmp:
        side_tmp.write_text(sidecar_text)
        _fsync(side_tmp)
        _fsync(tmp)
        sidecar.unlink(missing_ok=True)
        os.replace(tmp, path)
        os.replace(side_tmp, sidecar)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_writable_folder(path: str | Path) -> None:
    """QretrainError unless ``path``'s folder exists and takes new files: the check a
    command makes before its work starts (writes themselves fail the same way)."""
    _check_folder(Path(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".qretrain-probe.", dir=Path(path).parent)
    except OSError as e:
        raise _no_files(Path(path), e) from None
    os.close(fd)
    os.unlink(probe)


def _check_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise QretrainError(
            f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist; "
            "create it first"
        )


def _no_files(path: Path, error: OSError) -> QretrainError:
    return QretrainError(
        f"cannot write {str(path)!r}: folder {str(path.parent)!r} takes no new files "
        f"({error.strerror}); choose another output folder"
    )


def remove_stale_temporaries(path: Path) -> None:
    """Remove ``.NAME.PID.*.tmp`` files beside ``path`` whose writer is gone."""
    for stale in _dead_writers(path, r"[^.]+\.tmp"):
        stale.unlink(missing_ok=True)


def _dead_writers(path: Path, tail: str) -> list[Path]:
    """Temporaries ``.NAME.PID.TAIL`` beside ``path`` (``tail`` a regex) whose writer,
    process PID, is gone."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.{tail}")
    return [candidate for candidate in path.parent.glob(f".{glob_escape(path.name)}.*")
            if (match := pattern.fullmatch(candidate.name)) and not _alive(int(match[1]))]


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock while the body runs; QretrainError if another process
    holds it. The lock is an ``flock`` on ``LOCK_NAME``: the system drops it when its
    owner dies, so a killed run never leaves the folder locked."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise QretrainError(
                f"{str(folder)!r} is in use by {owner}; wait for it to finish, or use "
                "another output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what} (pid {os.getpid()})\n")
        handle.flush()
        yield
    finally:
        handle.close()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
