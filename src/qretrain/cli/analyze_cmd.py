"""``qretrain analyze MODEL --data D -o DIR``: census and cluster-alone sweep."""

from __future__ import annotations

import argparse

from qretrain.analysis import DEFAULT_KS, SWEEP_KINDS, analyze
from qretrain.analysis.sweep import PRECISIONS
from qretrain.cli.common import (
    add_command,
    add_data_arguments,
    add_device_argument,
    add_model_arguments,
    check_output_folder,
    data_from_args,
    model_from_args,
)
from qretrain.cluster import Method
from qretrain.errors import QretrainError
from qretrain.models import get_arch

EXAMPLE = (
    "example: qretrain analyze efficientnet-lite0 --data opencv-frames --limit 256 "
    "-o out/effnet-sweep --precision bfloat16"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "analyze",
        help="per-layer census and the cluster-alone sweep over k (sizes and quality)",
        description="Count each layer's weights, biases and batch-norm parameters, then, "
        "for every layer (or block), kind and k, cluster that alone and measure the "
        "packed file size and the quality on D: agreement and mean KL against the "
        "unclustered model (no labels needed), and top-1 when D has labels. Writes "
        "sweep.json, sweep.csv, census.txt, summary.md and PNG plots to DIR; rerunning "
        "into DIR skips finished cells.",
        example=EXAMPLE,
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--ks",
        default=",".join(map(str, DEFAULT_KS)),
        help="centroid counts to sweep (default: %(default)s)",
    )
    parser.add_argument(
        "--layers",
        metavar="SELECTOR",
        help="units to sweep: layer numbers/ranges (13-49), block names (block3), "
        "module-name globs, comma-separated (default: all)",
    )
    parser.add_argument(
        "--kinds",
        default="weight,bias",
        help=f"tensor kinds to sweep, some of {','.join(SWEEP_KINDS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--granularity",
        choices=["layer", "block"],
        default="layer",
        help="one unit per layer, or per block of layers sharing an output size",
    )
    parser.add_argument("--method", choices=[m.value for m in Method], default="kmeans")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="float32",
        help="forward passes in bfloat16 are ~3x faster on CPUs with AMX/AVX-512 BF16",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    add_device_argument(parser)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or tables")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise QretrainError(f"--ks must be comma-separated integers; got {args.ks!r}") from None
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    out = check_output_folder(args.output)
    model = model_from_args(args)
    arch = get_arch(model)
    data = data_from_args(args, arch.contract if arch else None)
    sweep = analyze(
        model,
        data,
        out,
        ks=ks,
        kinds=kinds,
        granularity=args.granularity,
        layers=args.layers,
        method=args.method,
        seed=args.seed,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        model_name=args.model,
        source={
            "model": args.model,
            "weights": args.weights,
            "data": args.data,
            "limit": args.limit,
            "seed": args.seed,
            "offset": args.offset,
        },
        progress=not args.quiet,
        plots=not args.no_plots,
    )
    if not args.quiet:
        print(sweep.census_table())
        print()
        print(sweep.summary())
    print(f"{len(sweep.cells)} cells, {sweep.seconds:.1f} s of sweeping; wrote {out}/")
    return 0
