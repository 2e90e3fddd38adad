"""``qretrain inspect MODEL``: the layer table with the numbers plans use."""

from __future__ import annotations

import argparse
import json

from qretrain.cli.common import add_command, add_model_arguments, model_from_args

EXAMPLE = "example: qretrain inspect torchvision:vgg16"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "inspect",
        help="list layers, their numbers, shapes and parameter counts",
        description="List every module holding tensors: layer number (what plans' "
        "'layers' select), name, type, weight shape, counts per kind and share of the "
        "model's bytes. ",
        example=EXAMPLE,
    )
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qretrain.analysis.census import module_census

    census = module_census(model_from_args(args))
    if args.json:
        print(json.dumps(census.to_dict(), indent=2))
    else:
        print(census.table())
        print(census.summary())
    return 0
