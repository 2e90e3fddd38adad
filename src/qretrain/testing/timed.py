"""One fuzzing case run under a watchdog: its outcome and the seconds it took.

``file_fuzz`` and ``record_fuzz`` hand every mutant to what reads it the same way: a
hang must end the case rather than the whole fuzzing run, and every exception must be
named in the report rather than stop it; only how they name an outcome differs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable


class _Hang(TimeoutError):
    """Raised by the watchdog alone, so that a TimeoutError (an OSError) raised by the
    code under test is never taken for a hang, nor a hang for a refusal."""


def timed_outcome(consume: Callable[[], str], name_error: Callable[[Exception], str],
                  hang_seconds: int) -> tuple[str, float]:  # fmt: skip
    """``(outcome, seconds)`` of ``consume()``: what it returned, ``"hang"`` when it ran
    past ``hang_seconds``, or ``name_error(e)`` for the exception ``e`` it raised.

    The watchdog is SIGALRM, so this runs in the main thread of a POSIX process; the
    previous handler is restored afterwards.
    """

    def hang(signum, frame):
        raise _Hang("hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(hang_seconds)
    start = time.perf_counter()
    try:
        outcome = consume()
    except _Hang:
        outcome = "hang"
    except Exception as e:  # the contract's breach or a refusal: recorded, never hidden
        outcome = name_error(e)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return outcome, time.perf_counter() - start
