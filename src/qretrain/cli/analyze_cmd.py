"""``qretrain analyze MODEL --data D -o DIR``: census and cluster-alone sweep."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from qretrain.analysis.settings import AnalyzeSettings
from qretrain.cli.common import (
    add_command,
    add_data_arguments,
    add_device_argument,
    add_model_arguments,
    check_output_folder,
    data_from_args,
    model_from_args,
    show_progress,
)
from qretrain.cli.flags import add_flags, settings_from_args

if TYPE_CHECKING:
    from qretrain.distributed import Ranks

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
        "into DIR skips finished cells. With --signal fisher each cell's KL is predicted "
        "instead, from its clustering error weighted by the Fisher information (one "
        "forward and backward pass over the images in all): a sweep to plan on the kl "
        "metric from. Under torchrun (torchrun --nproc-per-node N --no-python qretrain "
        "analyze ...) the processes share the cells out (gloo on cpu, nccl on cuda) and "
        "rank 0 writes the same record one process would.",
        example=EXAMPLE,
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    # Every AnalyzeSettings field but seed, which --seed above sets.
    add_flags(parser, AnalyzeSettings, "ks", "select", "kinds", "granularities", "unit", "method",
              "precision", "batch_size", "signal", select={"metavar": "SELECTOR"},
              granularities={"metavar": "G"})  # fmt: skip
    add_device_argument(parser)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(AnalyzeSettings, args, "analyze")
    from qretrain.distributed import process_group_from_env

    with process_group_from_env(args.device) as (ranks, device):  # several under torchrun
        return _analyze(args, settings, ranks, device)


def _analyze(args: argparse.Namespace, settings: AnalyzeSettings, ranks: Ranks,
             device: str) -> int:  # fmt: skip
    from qretrain.analysis import analyze  # the stage, once its settings are checked
    from qretrain.models import get_arch

    out = check_output_folder(args.output)
    model = model_from_args(args)
    arch = get_arch(model)
    data = data_from_args(args, arch.contract if arch else None)
    sweep = analyze(
        model,
        data,
        out,
        settings,
        device=device,
        model_name=args.model,
        source={
            "model": args.model,
            "weights": args.weights,
            "data": args.data,
            "limit": args.limit,
            "seed": args.seed,
            "offset": args.offset,
        },
        progress=show_progress(args),
        plots=not args.no_plots,
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    if not ranks.leader:
        return 0
    if not args.quiet:
        print(sweep.census_table())
        print()
        print(sweep.summary())
    print(f"{len(sweep.cells)} cells, {sweep.seconds:.1f} s of sweeping; wrote {out}/")
    return 0
