"""``qretrain teacher vgg|resnet``: train a reference teacher once, then reuse it."""

from __future__ import annotations

import argparse
import json

from qretrain.cli.common import add_command, show_progress

EXAMPLE = "example: qretrain teacher vgg --epochs 15 --seed 0"
# qretrain.assets.teachers' names and default epochs (a test holds them equal), written here
# so that --help loads no torch.
TEACHERS = ("resnet", "vgg")
DEFAULT_EPOCHS = 15


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "teacher",
        help="train a reference teacher on Fashion-MNIST (cached after the first run)",
        description="Train the zoo's VGG- or ResNet-style net on fashion-mnist:train, "
        "evaluate it on fashion-mnist:test and cache it in the user cache folder, keyed "
        "by name, epochs and seed; a second run only prints the cached record. "
        "The cached file is a qretrain .h5 usable as MODEL anywhere. ",
        example=EXAMPLE,
    )
    parser.add_argument("name", choices=TEACHERS)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qretrain.assets.teachers import teacher, teacher_path, teacher_record

    cached = teacher_path(args.name, args.epochs, args.seed).exists()
    teacher(args.name, args.epochs, args.seed, progress=show_progress(args))
    record = teacher_record(args.name, args.epochs, args.seed) or {}
    path = teacher_path(args.name, args.epochs, args.seed)
    if args.json:
        print(json.dumps({**record, "path": str(path), "cached": cached}, indent=2))
        return 0
    print(
        f"teacher {args.name} ({args.epochs} epochs, seed {args.seed}): fashion-mnist:test "
        f"top-1 {record.get('test_top1', float('nan')):.2%}, trained in "
        f"{record.get('train_seconds', float('nan')):.0f} s{' (cached)' if cached else ''}\n{path}"
    )
    return 0
