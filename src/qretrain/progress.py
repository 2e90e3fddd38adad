"""Progress of long work: a bar on a terminal, plain lines in a log.

Every long loop of the library goes through ``Progress`` (or ``track``). Where it
shows depends on where stderr goes, so a command's output suits its reader:

- stderr a terminal: a tqdm bar (carriage returns redraw it in place);
- anything else (a log file, a pipe, a notebook's captured stream): a line on the
  ``qretrain.progress`` logger at most every ``LOG_EVERY`` seconds, with what is
  done, the time so far and an estimate of the time left, and a closing line when
  the work took long enough to have printed any; never a carriage return;
- ``enabled=False``: nothing.

The library never configures logging: the CLI shows these lines on stderr, and a
Python user sees them after ``logging.basicConfig(level=logging.INFO)``. Inner
loops whose outer loop already reports pass ``log=False``: a bar on a terminal,
no lines in a log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

logger = logging.getLogger(__name__)
LOG_EVERY = 10.0  # seconds between two progress lines in a log
T = TypeVar("T")


def on_terminal() -> bool:
    """Whether stderr is a terminal (bars), rather than a log (lines)."""
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


def duration(seconds: float) -> str:
    """``3 s``, ``2 min 5 s``, ``1 h 4 min``: a time span a reader takes in at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Progress:
    """Counts ``total`` units of work under a label; see the module docstring.

    ``update(n)`` after each step; ``note(text)`` names what is being worked on (a
    layer, a block); ``close()`` at the end (or use it as a context manager).

    Units of kinds that cost very differently (a sweep's cells: one codebook per tensor,
    or one per channel at many times the time) pass ``kinds``: how many of the ``total``
    units are of each kind (``{"tensor": 450, "channel": 87}``), and ``update(n,
    kind=name)``. The estimate of the time left then prices each kind's units left at
    that kind's own time per unit so far (the overall one until one of them is done).
    """

    def __init__(self, desc: str, total: int | None, unit: str = "it", *,
                 enabled: bool = True, log: bool = True,
                 kinds: dict[str, int] | None = None) -> None:  # fmt: skip
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self.detail = ""
        self.start = self.last_line = self.last_update = time.perf_counter()
        self.kinds = dict(kinds or {})
        self.kind_done = dict.fromkeys(self.kinds, 0)
        self.kind_seconds = dict.fromkeys(self.kinds, 0.0)
        self.bar = None
        self.log = enabled and log and not on_terminal()
        self.printed = False
        if enabled and on_terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=log, dynamic_ncols=True)

    def update(self, n: int = 1, *, kind: str | None = None) -> None:
        now = time.perf_counter()
        if kind is not None:  # the time since the last step went to this kind's units
            self.kind_done[kind] += n
            self.kind_seconds[kind] += now - self.last_update
        self.last_update = now
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.log and time.perf_counter() - self.last_line >= LOG_EVERY:
            self._line()

    def note(self, text: str) -> None:
        self.detail = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.log and self.printed:
            logger.info("%s: %s in %s", self.desc, self._count(),
                        duration(time.perf_counter() - self.start))  # fmt: skip

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        return f"{self.done}{total} {self.unit}"

    def _left(self, elapsed: float) -> float:
        """Seconds still to go: at the time per unit so far, or with ``kinds`` at each
        kind's own."""
        if not any(self.kind_done.values()):
            return elapsed / self.done * (self.total - self.done)
        overall = sum(self.kind_seconds.values()) / sum(self.kind_done.values())
        left = 0.0
        for kind, total in self.kinds.items():
            done = self.kind_done[kind]
            left += (total - done) * (self.kind_seconds[kind] / done if done else overall)
        return left

    def _line(self) -> None:
        now = time.perf_counter()
        elapsed = now - self.start
        parts = [f"{self.desc}: {self._count()}", f"{duration(elapsed)} elapsed"]
        if self.total and 0 < self.done < self.total:
            parts.append(f"ETA {duration(self._left(elapsed))}")
        if self.detail:
            parts.append(self.detail)
        logger.info(", ".join(parts))
        self.last_line, self.printed = now, True


def track(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
          enabled: bool = True, log: bool = True) -> Iterator[T]:  # fmt: skip
    """Yield ``items``, counting each one as a unit of ``desc``'s progress."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit, enabled=enabled, log=log) as progress:
        for item in items:
            yield item
            progress.update()
