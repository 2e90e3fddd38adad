"""Arguments several subcommands share."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from qretrain.data import known_datasets, load_dataset
from qretrain.device import parse_device
from qretrain.errors import QretrainError
from qretrain.models import known_specs, load_model
from qretrain.storage import check_writable_folder

logger = logging.getLogger(__name__)


def add_command(
    sub: argparse._SubParsersAction, name: str, *, help: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with a real example, taking -v and --quiet too.

    They default to SUPPRESS so that ``qretrain -v CMD`` and ``qretrain CMD -v`` both
    work: the top-level parser holds the defaults.
    """
    parser = sub.add_parser(name, help=help, description=description, epilog=example)
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only results and errors: no progress bars or stage lines")  # fmt: skip
    return parser


def show_progress(args: argparse.Namespace) -> bool:
    """Progress unless --quiet: bars on a terminal, lines with an ETA at most every
    10 s in a log (``qretrain.progress``)."""
    return not args.quiet


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


    add_trust_argument(parser)


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="let .h5 files and records name code to run (package.module:callable); "
        "without it they may name known architectures only",
    )


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    parser.add_argument("--device", type=device_arg, default=default,
                        help="cpu, cuda or cuda:N (checked before any work)")  # fmt: skip


def device_arg(text: str) -> str:
    """argparse type: a device this machine has (the error becomes exit code 2)."""
    try:
        return str(parse_device(text))
    except QretrainError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def output_file(path: str, suffixes: tuple[str, ...]) -> Path:
    """An output path with one of ``suffixes`` in a folder that takes new files."""
    out = Path(path)
    if out.suffix not in suffixes:
        raise QretrainError(f"output {path!r} must end in {' or '.join(suffixes)}")
    check_writable_folder(out)
    return out


def check_output_folder(path: str) -> Path:
    """A folder that exists and takes files, or whose nearest existing parent does."""
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise QretrainError(f"output folder {path!r}: {str(existing)!r} is not a folder")
    check_writable_folder(existing / "probe")
    return folder


def model_from_args(args: argparse.Namespace):
    """MODEL as typed (the user's own spec); a .h5 file's spec needs --trust-code."""
    if args.model.startswith("torchvision:") and args.weights is None:
        logger.warning("%s has random weights (torchvision's pretrained ones are not "
                       "downloaded); pass --weights FILE.pth for trained ones", args.model)  # fmt: skip
    return load_model(args.model, weights=args.weights, trust_code=args.trust_code)


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True,
                       purpose: str = "dataset") -> None:  # fmt: skip
    parser.add_argument("--data", required=required, metavar="D",
                        help=f"{purpose}: " + "; ".join(known_datasets()))  # fmt: skip
    parser.add_argument("--classes", metavar="FILE",
                        help="class map of a labeled folder: one class name per line, line "
                        "i is class i (default: the folder's classes.txt, else sorted "
                        "subfolder names)")  # fmt: skip
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


def data_from_args(args: argparse.Namespace, contract, teacher=None):
    return load_dataset(args.data, contract, limit=args.limit, seed=args.seed, offset=args.offset,
                        classes=args.classes, teacher=teacher)  # fmt: skip
