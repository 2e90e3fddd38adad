"""Atomic file writes and folder locks.

``atomic_path`` writes a temporary file beside the target, then renames it: a
failure at any point leaves the target as it was (absent or the old version). The
temporary name carries the writer's pid, so the next write to the same path removes
temporaries whose writer died (killed runs leave them behind) and leaves live ones.
``atomic_folder`` does the same for a folder written by someone else's code (a Core
ML package). ``commit_pair`` renames a file and its JSON sidecar so that no crash leaves a new
file beside an old sidecar. ``folder_lock`` keeps a second process out of a folder.

No write follows a link: a file is only ever written as a fresh temporary
(``mkstemp``: ``O_CREAT | O_EXCL``) and renamed over the target, which replaces a
link standing there rather than writing through it; the lock file is opened with
``O_NOFOLLOW``; ``subfolder`` refuses a link where qretrain makes a folder inside
one the user chose.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
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
    except OSError as e:  # a full disk, a quota, an I/O error: the old file stands
        raise QretrainError(
            f"cannot write {str(path)!r} ({e.strerror or e}); it is left as it was: free "
            "some space, or write elsewhere"
        ) from e
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
        _discard(stale)
    tmp, old = (path.with_name(f".{path.name}.{os.getpid()}.{part}{path.suffix}")
                for part in ("new", "old"))  # fmt: skip
    for leftover in (tmp, old):
        _discard(leftover)
    try:
        yield tmp
        if tmp.exists():
            if os.path.lexists(path):
                os.replace(path, old)
            os.replace(tmp, path)
    finally:
        _discard(tmp)
        _discard(old)  # a link that stood at ``path`` goes as a link, its target untouched


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


def nofollow(path: str, flags: int) -> int:
    """``open(..., opener=nofollow)``: refuses a link at ``path`` instead of writing
    through it (the system's ``O_NOFOLLOW``)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


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
    return [
        candidate
        for candidate in path.parent.glob(f".{glob_escape(path.name)}.*")
        if (match := pattern.fullmatch(candidate.name)) and not _alive(int(match[1]))
    ]


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock while the body runs; QretrainError if another process
    holds it. The lock is an ``flock`` on ``LOCK_NAME``: the system drops it when its
    owner dies, so a killed run never leaves the folder locked.

    The lock file is opened without following links (a link planted there would
    otherwise have its target truncated) and removed on release, with the folders
    this call made when they are left empty: a refused run leaves nothing behind.
    """
    folder = Path(folder)
    made = _make_folders(folder)
    try:
        lock = folder / LOCK_NAME
        fd = _take_lock(lock, folder)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{what} (pid {os.getpid()})\n".encode())
            yield
        finally:
            # Unlinked while still held: whoever opened the old file and takes it next
            # sees that the name no longer leads to it, and starts over (_take_lock).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            os.close(fd)
    finally:
        for path in made:  # innermost first; a folder that holds files stays
            try:
                path.rmdir()
            except OSError:
                break


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; return those made, innermost first."""
    missing = []
    at = folder
    while not os.path.lexists(at) and at != at.parent:
        missing.append(at)
        at = at.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise QretrainError(f"output folder {str(folder)!r} is a file, not a folder; "
                            "choose another output folder") from None  # fmt: skip
    return missing


def _take_lock(lock: Path, folder: Path) -> int:
    """An open descriptor of ``lock`` holding its exclusive flock."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o666)  # fmt: skip
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise QretrainError(
                    f"{str(lock)!r} is a symbolic link: qretrain never writes through "
                    "links; remove it, or use another output folder"
                ) from None
            raise _no_files(lock, e) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise QretrainError(f"{str(lock)!r} is not a regular file; remove it, or use "
                                "another output folder")  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _printable(os.read(fd, 200)) or "another process"
            os.close(fd)
            raise QretrainError(
                f"{str(folder)!r} is in use by {owner}; wait for it to finish, or use "
                "another output folder"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous owner removed this file as we opened it


def _printable(raw: bytes) -> str:
    """The first line of ``raw`` without control characters (it is read from a file
    anyone may have written, and goes into a one-line message)."""
    text = raw.decode("utf-8", "replace").strip().split("\n")[0]
    return "".join(c for c in text if c.isprintable())[:100]


def subfolder(path: str | Path) -> Path:
    """``path``, a folder qretrain names inside a folder the user chose, made when
    missing; QretrainError when it is a link or not a folder: a link planted there
    would send every file written into it elsewhere."""
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    if path.is_symlink():
        raise QretrainError(f"{str(path)!r} is a symbolic link: qretrain never writes "
                            "through links; remove it")  # fmt: skip
    if not path.is_dir():
        raise QretrainError(f"{str(path)!r} is not a folder; remove it")
    return path


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        remove_path(path)


def remove_path(path: str | Path) -> None:
    """Remove a file, a link (never what it points to) or a folder, if present."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
