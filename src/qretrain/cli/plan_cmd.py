"""``qretrain plan DIR --max-drop X -o PLAN.yaml``: an automatic plan from a sweep."""

from __future__ import annotations

import argparse

from qretrain.cli.common import add_command, add_device_argument, add_trust_argument, output_file
from qretrain.cli.flags import add_flags, settings_from_args
from qretrain.planner.settings import PlanSettings

EXAMPLE = (
    "example: qretrain plan out/effnet-sweep --max-drop 1 --metric agreement "
    "--limit 256 --offset 256 -o effnet-plan.yaml"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "plan",
        help="choose per-layer k from a sweep: smallest file within a quality budget",
        description="Pick, per layer (or block) and kind, a k or no clustering, making the "
        "packed file as small as possible while the predicted drop stays within "
        "--max-drop points (or the file within --target-size bytes). Then verify: "
        "cluster the model with the plan, measure the real drop, and back off (largest "
        "predicted offender first) until it fits. Model and data come from the sweep's "
        "record; --data/--limit/--offset/--seed verify on other images instead.",
        example=EXAMPLE,
    )
    parser.add_argument("sweep", metavar="DIR", help="folder written by `qretrain analyze`")
    budget = parser.add_mutually_exclusive_group(required=True)
    add_flags(budget, PlanSettings, "max_drop", "target_size", max_drop={"metavar": "X"},
              target_size={"metavar": "BYTES"})  # fmt: skip
    add_flags(parser, PlanSettings, "metric")
    parser.add_argument("-o", "--output", required=True, metavar="PLAN.yaml", help="plan file")
    parser.add_argument("--data", metavar="D", help="verify on D instead of the sweep's data")
    parser.add_argument("--limit", type=int, metavar="N", help="a random subset of N images")
    parser.add_argument("--seed", type=int, help="seed of the --limit subset")
    parser.add_argument(
        "--offset",
        type=int,
        metavar="M",
        help="images M .. M+N of the "
        "seed's permutation (the sweep's --limit as offset: disjoint images)",
    )
    parser.add_argument("--no-verify", action="store_true", help="selection only")
    add_flags(
        parser,
        PlanSettings,
        "refine",
        "last_layer_weight",
        "batch_size",
        "deploy",
        refine={"metavar": "R"},
        last_layer_weight={"metavar": "W"},
    )
    add_device_argument(parser)
    add_trust_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(PlanSettings, args, "plan")
    from qretrain.analysis import Sweep  # the stage, once its settings are checked
    from qretrain.planner import auto_plan
    from qretrain.planner.source import DataChoice, sweep_inputs
    from qretrain.storage import write_text_atomic

    output = output_file(args.output, (".yaml", ".yml"))
    sweep = Sweep.load(args.sweep)
    model = data = None
    if not args.no_verify:
        choice = DataChoice(args.data, args.limit, args.seed, args.offset)
        model, data = sweep_inputs(sweep, args.sweep, choice, trust_code=args.trust_code)
    result = auto_plan(sweep, model, data, settings, device=args.device)
    write_text_atomic(output, result.to_yaml(args.sweep))
    for step in result.backoffs:
        print(f"backed off: {step}")
    for step in result.refinements:
        print(f"refined: {step}")
    for step in result.resized:
        print(f"re-sized: {step}")
    print(result.describe())
    print(f"wrote {output}")
    return 0
