"""``qretrain report DIR``: report.md and a self-contained report.html from records."""

from __future__ import annotations

import argparse
from pathlib import Path

from qretrain.cli.common import add_command

EXAMPLE = "example: qretrain report out/demo"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "report",
        help="write report.md and report.html (images embedded) for a run folder",
        description="Read the JSON records a `qretrain run` left in DIR (analyze, plan, "
        "compress, retrain, evaluate) and write report.md and a self-contained "
        "report.html with the census, sweep plots, the plan, sizes, quality before and "
        "after retraining and retraining times, each next to the seed's figure number.",
        example=EXAMPLE,
    )
    parser.add_argument("folder", metavar="DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qretrain.pipeline import final_table
    from qretrain.report import write_report

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder {str(folder)!r}")
    md, page = write_report(folder)
    print(final_table(folder))
    print(f"wrote {md} and {page}")
    return 0
