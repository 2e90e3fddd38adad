"""docs/CLI.md is the parser's own help: regenerate it when a flag changes."""

import sys
from pathlib import Path

import pytest

from qretrain.cli.reference import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLI.md"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="argparse lays help out differently across Python versions; "
                    "docs/CLI.md is made with the project's Python 3.11")  # fmt: skip
def test_the_cli_reference_is_the_parsers_help():
    assert DOC.read_text() == reference(), (
        "docs/CLI.md is out of date: python -m qretrain.cli.reference > docs/CLI.md"
    )
