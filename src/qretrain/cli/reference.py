"""docs/CLI.md, made from the parser itself, so the reference never drifts from --help.

    python -m qretrain.cli.reference > docs/CLI.md

(``tests/cli/test_reference.py`` fails when the file and the parser disagree.)
"""

from __future__ import annotations

import argparse
import os

WIDTH = "100"  # columns argparse wraps the help at: the same text on every terminal

HEADER = """# Command-line reference

Every `qretrain` command with its full `--help`, made from the parser
(`python -m qretrain.cli.reference > docs/CLI.md`). Errors print one line and exit
with code 2; `-v` adds debug lines, `--quiet` keeps only results and errors, and
`--max-memory SIZE` raises the memory a file may make qretrain use. Tasks, with
examples: [YOUR_MODEL.md](YOUR_MODEL.md), [RETRAINING.md](RETRAINING.md),
[DATA.md](DATA.md), [SECURITY.md](SECURITY.md).
"""


def reference() -> str:
    """The Markdown of docs/CLI.md: the top-level help, then each command's."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from qretrain.cli.main import build_parser

        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = [HEADER, "## qretrain\n", "```\n" + parser.format_help().rstrip() + "\n```\n"]
        for name, sub in commands.choices.items():
            parts += [f"## qretrain {name}\n", "```\n" + sub.format_help().rstrip() + "\n```\n"]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
