"""Arguments several subcommands share."""

from __future__ import annotations

import argparse

from qretrain.data import known_datasets, load_dataset
from qretrain.models import known_specs, load_model


def add_command(
    sub: argparse._SubParsersAction, name: str, *, help: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with a real example."""
    return sub.add_parser(name, help=help, description=description, epilog=example)


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


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, metavar="D", help="dataset: " + "; ".join(known_datasets())
    )
    parser.add_argument("--limit", type=int, metavar="N", help="a random subset of N images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    parser.add_argument(
        "--offset",
        type=int,
        default=0,
        metavar="M",
        help="take images M .. M+N of the seed's permutation: --offset N with the same "
        "--seed and --limit N gives a set disjoint from the default one",
    )


def data_from_args(args: argparse.Namespace, contract):
    return load_dataset(args.data, contract, limit=args.limit, seed=args.seed, offset=args.offset)
