"""``qretrain compress MODEL --plan PLAN -o OUT.h5``: cluster, save, report sizes."""

from __future__ import annotations

import argparse

from qretrain.cli.common import (
    add_command,
    add_data_arguments,
    add_model_arguments,
    data_from_args,
    model_from_args,
    output_file,
    show_progress,
)
from qretrain.cluster import Method
from qretrain.apply import CompressSettings, cluster_and_save
from qretrain.models import get_arch
from qretrain.plan import Plan
from qretrain.storage import Layout

EXAMPLE = (
    "example: qretrain compress torchvision:vgg16 --plan examples/plans/vgg16-paper.yaml "
    "-o vgg16.h5"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "compress",
        help="cluster a model's tensors as a plan says and save it as HDF5",
        description="Cluster the tensors PLAN selects, save the model to OUT.h5 "
        "(atomically), print the size report and write it as JSON to OUT.json. ",
        example=EXAMPLE,
    )
    add_model_arguments(parser)
    parser.add_argument("--plan", required=True, metavar="PLAN.yaml", help="plan file")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="model file")
    parser.add_argument(
        "--layout",
        choices=[layout.value for layout in Layout],
        default=CompressSettings.default("layout").value,
        help="packed: bit-packed indices + codebook (default); paper: the seed's "
        "float32 + gzip",
    )
    add_data_arguments(parser, required=False,
                       purpose="unlabeled images for sensitive-kmeans rules (each weight's "
                       "Fisher information on its first 256 weighs its k-means error)")  # fmt: skip
    parser.add_argument(
        "--keep-batchnorm",
        action="store_true",
        help="store batch norm's four vectors as they are; by default the packed layout "
        "folds each into a scale and a shift per channel (same eval outputs up to float "
        "rounding; retrain such a file with --bn-stats frozen)",
    )
    parser.add_argument(
        "--method",
        choices=[m.value for m in Method],
        help="default clustering method, overriding the plan's (rules naming one keep it)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = CompressSettings(layout=args.layout, method=args.method,
                                fold_batchnorm=False if args.keep_batchnorm else None)
    output = output_file(args.output, (".h5", ".hdf5"))
    plan = Plan.load(args.plan)
    model = model_from_args(args)
    arch = get_arch(model)
    contract = arch.contract if arch is not None else None
    data = (lambda: data_from_args(args, contract)) if args.data else None
    result = cluster_and_save(model, plan, output, settings, extra={"model": args.model}, data=data,
                      progress=show_progress(args))  # fmt: skip
    if not args.quiet:
        print(result.report.table(only_clustered=True))
    print(f"{result.summary()}\nwrote {output} and {output.with_suffix('.json')}")
    return 0
