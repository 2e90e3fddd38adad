"""``qretrain run CONFIG.yaml``: the whole pipeline from one config file."""

from __future__ import annotations

import argparse

from qretrain.cli.common import (
    add_command,
    add_device_argument,
    add_trust_argument,
    show_progress,
)

EXAMPLE = "example: qretrain run examples/demo.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "run",
        help="the whole pipeline from one YAML config: analyze, plan, compress, retrain, "
        "evaluate, report",
        description="Load the model, sweep it, choose a plan (or read one), write the "
        "packed file, retrain label-free (and conventionally, and on far-off data when "
        "asked), evaluate every model on the held-out set and write report.md and "
        "report.html. The resolved config is written to OUT/config.yaml; stages whose "
        "record exists are skipped, so a killed run resumes (retraining from its last "
        "epoch). OUT must be new, empty, or a run of the same config and model weights "
        "(OUT/run.json records them): anything else is refused unless --overwrite. Keys: "
        "see qretrain.pipeline.config or examples/demo.yaml.",
        example=EXAMPLE,
    )
    parser.add_argument("config", metavar="CONFIG.yaml")
    parser.add_argument("-o", "--output", metavar="OUT", help="override the config's output")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in OUT even when it holds files no run wrote, "
                        "another config's run or another model's: the files a run writes "
                        "there are removed first; nothing else is touched")  # fmt: skip
    add_device_argument(parser, default=None)
    add_trust_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qretrain.pipeline.config import RunConfig  # torch-free: a bad config fails at once

    config = RunConfig.load(args.config, output=args.output).with_device(args.device)
    from qretrain.pipeline import final_table, run_pipeline  # once the config is checked

    run_pipeline(config, progress=show_progress(args), trust_code=args.trust_code,
                 overwrite=args.overwrite)  # fmt: skip
    print()
    print(final_table(config.output))
    print(f"\nreport: {config.output / 'report.md'} and {config.output / 'report.html'}")
    return 0
