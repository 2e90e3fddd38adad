"""``qretrain evaluate MODEL --data D``: accuracy with labels, agreement without."""

from __future__ import annotations

import argparse
import json

from qretrain.cli.common import (
    add_command,
    add_data_arguments,
    add_device_argument,
    add_model_arguments,
    companion_model,
    data_from_args,
    model_from_args,
    show_progress,
)
from qretrain.cli.flags import add_flags, settings_from_args
from qretrain.errors import QretrainError
from qretrain.metrics.settings import EvaluateSettings

EXAMPLE = "example: qretrain evaluate efficientnet-lite0 --data foolbox-imagenet"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "evaluate",
        help="top-1/top-5 on labeled data; agreement and KL against a reference",
        description="Run MODEL over the images of D, fitted to MODEL's input contract. "
        "With labels: top-1 and top-5 accuracy. With --reference: agreement (share of "
        "equal top-1 predictions) and mean KL(reference || MODEL), which need no labels.",
        example=EXAMPLE,
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument(
        "--reference",
        metavar="MODEL2",
        help="model to compare with (the same spec as MODEL's architecture "
        "takes MODEL's class count and input contract)",
    )
    parser.add_argument(
        "--reference-weights",
        metavar="FILE",
        help="state dict for MODEL2 (.pth read with weights_only=True, or .safetensors)",
    )
    add_flags(parser, EvaluateSettings, "batch_size")
    add_device_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(EvaluateSettings, args)
    from qretrain.metrics import evaluate  # the stage, once its settings are checked
    from qretrain.models import get_arch

    model = model_from_args(args)
    contract = get_arch(model).contract if get_arch(model) else None
    if args.reference_weights and not args.reference:
        raise QretrainError("--reference-weights needs --reference MODEL2")
    reference = None
    if args.reference:
        reference = companion_model(args.reference, args.reference_weights, model,
                                    args.trust_code)  # fmt: skip
    if reference is not None and get_arch(reference) and get_arch(reference).contract != contract:
        raise QretrainError(
            f"MODEL and --reference expect different inputs ({contract} vs "
            f"{get_arch(reference).contract}); compare models with the same input contract"
        )
    data = data_from_args(args, contract)
    result = evaluate(model, data, reference=reference, batch_size=settings.batch_size,
                      device=args.device, progress=show_progress(args) and not args.json)  # fmt: skip
    if args.json:
        print(json.dumps({"model": args.model, "data": data.describe(), **result.to_dict()},
                         indent=2, allow_nan=False))  # fmt: skip
    else:
        print(f"{args.model} on {data.describe()}\n{result}")
    return 0
