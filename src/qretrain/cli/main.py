"""``qretrain`` command line: one module per subcommand, errors as one line, exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qretrain._heap import keep_freed_memory
from qretrain._memory import memory_limit
from qretrain._version import __version__
from qretrain.cli import (
    analyze_cmd,
    compress_cmd,
    evaluate_cmd,
    export_cmd,
    inspect_cmd,
    plan_cmd,
    report_cmd,
    retrain_cmd,
    run_cmd,
    teacher_cmd,
)
from qretrain.cli.common import add_max_memory_argument
from qretrain.errors import QretrainError

SUBCOMMANDS = (
    inspect_cmd,
    analyze_cmd,
    plan_cmd,
    compress_cmd,
    evaluate_cmd,
    export_cmd,
    retrain_cmd,
    run_cmd,
    report_cmd,
    teacher_cmd,
)
EXIT_USAGE = 2
# User errors: bad input (QretrainError) and the environment (a missing file, a folder
# that takes no files). Anything else is a bug and keeps its traceback.
USER_ERRORS = (QretrainError, OSError)


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error of the CLI."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="qretrain",
        description="Compress pretrained PyTorch classifiers by weight clustering and "
        "win their accuracy back without labels.",
    )
    parser.add_argument("--version", action="version", version=f"qretrain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--quiet", action="store_true", help="only results and errors")
    add_max_memory_argument(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def entry() -> int:
    """The ``qretrain`` program (and ``python -m qretrain``): ``main`` in a process that
    keeps freed memory on the heap, which spares forward passes their page faults
    (``qretrain._heap``). ``main`` alone changes nothing for the whole process, for
    callers that run it in a process of their own (tests, notebooks)."""
    keep_freed_memory()
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors, --help, --version: their code is main's
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    handler = _log_to_stderr(args.verbose, args.quiet)
    try:
        with memory_limit(args.max_memory):
            return args.run(args) or 0
    except USER_ERRORS as e:
        message = str(e).strip().replace("\n", "\n  ")
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename:
            message = f"{e.strerror or e}: {e.filename}"
        print(f"qretrain {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"qretrain {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _stop_logging(handler)


class _LineFormatter(logging.Formatter):
    """Progress (INFO) as plain lines; warnings and worse say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text if record.levelno == logging.INFO else f"debug {record.name}: {text}"


def _log_to_stderr(verbose: bool, quiet: bool) -> logging.Handler:
    """The one place that configures logging: qretrain's loggers to stderr, stage and
    epoch lines at INFO unless --quiet, everything with -v."""
    logger = logging.getLogger("qretrain")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    logger.addHandler(handler)
    handler.previous = (logger.level, logger.propagate)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    return handler


def _stop_logging(handler: logging.Handler) -> None:
    logger = logging.getLogger("qretrain")
    logger.removeHandler(handler)
    logger.setLevel(handler.previous[0])
    logger.propagate = handler.previous[1]


if __name__ == "__main__":
    sys.exit(main())
