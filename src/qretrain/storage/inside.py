"""Reading files inside a folder without following links out of it.

A run folder may come from anyone (mailed, unpacked, or made in a shared folder), and
what ``qretrain report`` reads from it ends up in report.md and report.html. So its
files are read only when they are regular files reached through real folders from
the folder the user named: a link to ``~/.ssh/id_rsa`` named ``census.txt`` is
refused, not embedded. The folder the user names may itself be a link: it is theirs.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from qretrain.errors import QretrainFileError

MAX_RECORD_BYTES = 64 * 2**20  # far above any record a run writes; keeps a planted
# multi-gigabyte "record" from being read into memory whole


def read_inside(root: str | Path, relative: str | Path) -> bytes | None:
    """The bytes of ``root/relative``, or None when nothing is there; QretrainFileError
    when it, or a folder on the way, is a link or not a regular file."""
    root = Path(root)
    at = root
    parts = Path(relative).parts
    for i, part in enumerate(parts):
        at = at / part
        try:
            mode = os.lstat(at).st_mode
        except FileNotFoundError:
            return None
        last = i == len(parts) - 1
        if stat.S_ISLNK(mode):
            raise QretrainFileError(f"{str(at)!r} is a symbolic link; qretrain reads only "
                                    f"files inside {str(root)!r}, never through links: "
                                    "remove the link")  # fmt: skip
        if last and not stat.S_ISREG(mode) or not last and not stat.S_ISDIR(mode):
            raise QretrainFileError(f"{str(at)!r} is not a regular "
                                    f"{'file' if last else 'folder'}; remove it")  # fmt: skip
    # O_NOFOLLOW too: a link swapped in after the check is refused by the system.
    fd = os.open(at, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode) or size > MAX_RECORD_BYTES:
            raise QretrainFileError(f"{str(at)!r} is not a regular file of at most "
                                    f"{MAX_RECORD_BYTES:,} bytes; remove it")  # fmt: skip
        return f.read()


def text_inside(root: str | Path, relative: str | Path) -> str | None:
    """``read_inside`` as UTF-8 text (QretrainFileError when it is not)."""
    raw = read_inside(root, relative)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise QretrainFileError(
            f"{str(Path(root) / relative)!r} is not UTF-8 text ({e}); remove it, or run the "
            "stage that writes it again"
        ) from None


def json_inside(root: str | Path, relative: str | Path) -> Any:
    """``read_inside`` as a JSON document, or None when nothing is there."""
    text = text_inside(root, relative)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise QretrainFileError(f"{str(Path(root) / relative)!r} is not a JSON record "
                                f"({type(e).__name__}: {str(e)[:120]}); remove it, or run "
                                "the stage that writes it again") from None  # fmt: skip
