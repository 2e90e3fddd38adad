"""Arguments several subcommands share.

Registering them imports torch-free modules only (the forms, names and settings), so
that ``--help`` and argument errors answer at once; what builds a model or reads a
dataset is imported inside the function that does it, when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from qretrain import _memory as memory
from qretrain.data.forms import DATASET_FORMS
from qretrain.device import device_name
from qretrain.errors import QretrainError
from qretrain.models.forms import SPEC_FORMS
from qretrain.models.names import INTERPOLATIONS
from qretrain.storage.atomic import check_writable_folder

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
    add_max_memory_argument(parser, default=argparse.SUPPRESS)
    return parser


def add_max_memory_argument(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--max-memory", type=memory_size, default=default, metavar="SIZE",
        help=f"memory one input (a model or dataset file, an image, a forward pass) may "
        f"take, e.g. 4G; by default {memory.MODEL_RATIO} x a model file's size "
        f"({memory.DATA_RATIO} x a dataset file's) + {memory.ALLOWANCE >> 20} MiB, "
        f"{memory.MAX_PIXELS:,} pixels an image, {memory.ACTIVATIONS >> 20} MiB of "
        "activations an input")  # fmt: skip


def memory_size(text: str) -> int:
    """argparse type: bytes, with an optional K, M, G or T suffix (exit code 2 if not)."""
    try:
        return memory.parse_size(text)
    except QretrainError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def show_progress(args: argparse.Namespace) -> bool:
    """Progress unless --quiet: bars on a terminal, lines with an ETA at most every
    10 s in a log (``qretrain.progress``)."""
    return not args.quiet


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="model spec or file: " + "; ".join(SPEC_FORMS),
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict to load into MODEL: .pth (read with torch.load(weights_only=True)) "
        "or .safetensors",
    )
    add_facts_arguments(parser)
    add_trust_argument(parser)


def add_facts_arguments(parser: argparse.ArgumentParser) -> None:
    """--num-classes and the input contract: what the user's weights were trained with."""
    facts = parser.add_argument_group(
        "your model's facts",
        "what MODEL's weights were trained with, when they are not the architecture's "
        "documented ImageNet ones; stored in every file written from MODEL (a .h5 MODEL "
        "states its own)",
    )
    facts.add_argument(
        "--num-classes",
        type=positive_int,
        metavar="N",
        help="classes the classifier outputs (default: the architecture's)",
    )
    facts.add_argument(
        "--input-size", type=positive_int, metavar="PX", help="side of the square input, in pixels"
    )
    facts.add_argument(
        "--mean",
        type=numbers,
        metavar="M[,M,M]",
        help="per-channel mean subtracted from pixels in [0, 1]",
    )
    facts.add_argument(
        "--std",
        type=numbers,
        metavar="S[,S,S]",
        help="per-channel standard deviation pixels are divided by",
    )
    facts.add_argument(
        "--resize",
        type=resize_rule,
        metavar="PX|none",
        help="resize the shorter side to PX, then take the centre crop "
        "(default: the architecture's ratio of resize to crop); none: resize "
        "straight to --input-size",
    )
    facts.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        help="resampling used when resizing (default: the architecture's)",
    )


def model_facts(args: argparse.Namespace) -> tuple[dict[str, int], dict | None]:
    """(builder keyword arguments, stated contract facts or None) from the facts flags."""
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    names = {"input_size": "size", "mean": "mean", "std": "std", "resize": "resize",
             "interpolation": "interpolation"}  # fmt: skip
    stated = {fact: getattr(args, flag) for flag, fact in names.items()
              if getattr(args, flag) is not None}  # fmt: skip
    if stated.get("resize") == "none":
        stated["resize"] = None
    return kwargs, stated or None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def numbers(text: str) -> list[float]:
    """argparse type: ``0.5`` or ``0.485,0.456,0.406`` (one per channel)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be 1 or 3 comma-separated numbers; got {text!r}"
        ) from None
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be 1 or 3 finite numbers; got {text!r}")
    return values


def resize_rule(text: str) -> int | str:
    return "none" if text == "none" else positive_int(text)


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
        return device_name(text)
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
    """MODEL as typed (the user's own spec) with its facts; a .h5 file's spec needs
    --trust-code to name code."""
    from qretrain.models import load_model

    kwargs, contract = model_facts(args)
    if _random_weights(args.model, args.weights):
        logger.warning("%s has random weights (its pretrained ones are not downloaded); pass "
                       "--weights FILE for trained ones", args.model)  # fmt: skip
    return load_model(args.model, weights=args.weights, contract=contract,
                      trust_code=args.trust_code, **kwargs)  # fmt: skip


def companion_model(spec: str, weights: str | None, like, trust_code: bool):
    """A second model (--teacher, --reference) next to ``like``: given as the same
    spec as ``like``'s architecture, it is built with ``like``'s class count and input
    contract, so the user's facts are stated once."""
    from qretrain.models import get_arch, load_model

    arch = get_arch(like)
    same = arch is not None and arch.spec == spec and Path(spec).suffix not in (".h5", ".hdf5")
    if _random_weights(spec, weights):
        logger.warning("%s has random weights (its pretrained ones are not downloaded): pass "
                       "its weights file, or compare against a qretrain file", spec)  # fmt: skip
    if not same:
        return load_model(spec, weights=weights, trust_code=trust_code)
    return load_model(spec, weights=weights, contract=arch.contract, trust_code=trust_code,
                      **arch.kwargs)  # fmt: skip


def _random_weights(spec: str, weights: str | None) -> bool:
    return weights is None and spec.startswith(("torchvision:", "timm:"))


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True,
                       purpose: str = "dataset") -> None:  # fmt: skip
    parser.add_argument("--data", required=required, metavar="D",
                        help=f"{purpose}: " + "; ".join(DATASET_FORMS))  # fmt: skip
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
    from qretrain.data import load_dataset

    return load_dataset(args.data, contract, limit=args.limit, seed=args.seed, offset=args.offset,
                        classes=args.classes, teacher=teacher)  # fmt: skip
