"""Arguments several subcommands share."""

from __future__ import annotations

import argparse

from qretrain.models import known_specs, load_model


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="model spec: " + "; ".join(known_specs()),
    )
    parser.add_argument(
        "--weights",
        metavar="FILE.pth",
        help="state dict to load into MODEL (read with torch.load(weights_only=True))",
    )


def model_from_args(args: argparse.Namespace):
    return load_model(args.model, weights=args.weights)
