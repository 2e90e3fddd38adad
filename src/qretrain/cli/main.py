"""``qretrain`` command line: one module per subcommand, errors as one line, exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qretrain._version import __version__
from qretrain.cli import (
    analyze_cmd,
    compress_cmd,
    evaluate_cmd,
    inspect_cmd,
    plan_cmd,
    report_cmd,
    retrain_cmd,
    run_cmd,
    teacher_cmd,
)
from qretrain.errors import QretrainError

SUBCOMMANDS = (
    inspect_cmd,
    analyze_cmd,
    plan_cmd,
    compress_cmd,
    evaluate_cmd,
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors, --help, --version: their code is main's
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
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


if __name__ == "__main__":
    sys.exit(main())
