"""``qretrain compress MODEL --plan PLAN -o OUT.h5``: cluster, save, report sizes."""

from __future__ import annotations

import argparse

from qretrain._table import human_bytes
from qretrain.cli.common import add_command, add_model_arguments, model_from_args, output_file
from qretrain.cluster import Method
from qretrain.compress.apply import cluster_
from qretrain.plan import Plan
from qretrain.storage import Layout, save

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
        default=Layout.PACKED.value,
        help="packed: bit-packed indices + codebook (default); paper: the seed's "
        "float32 + gzip",
    )
    parser.add_argument(
        "--method",
        choices=[m.value for m in Method],
        help="default clustering method, overriding the plan's (rules naming one keep it)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = output_file(args.output, (".h5", ".hdf5"))
    plan = Plan.load(args.plan)
    if args.method:
        plan = plan.with_method(args.method)
    model = model_from_args(args)
    report = cluster_(model, plan, progress=not args.quiet)
    saved = save(model, output, layout=args.layout, record=lambda saved: {
        "model": args.model,
        "plan": plan.to_dict(),
        "layout": saved.layout.value,
        "file": str(output),
        "file_bytes": saved.file_bytes,
        "float32_bytes": report.original_bytes,
        "reduction": 1 - saved.file_bytes / report.original_bytes,
        "tensor_file_bytes": saved.tensor_bytes,
        "report": report.to_dict(),
    })  # fmt: skip
    json_path = output.with_suffix(".json")
    reduction = 1 - saved.file_bytes / report.original_bytes
    if not args.quiet:
        print(report.table(only_clustered=True))
    print(
        f"{len(report.clustered)} of {len(report.records)} tensors clustered; "
        f"float32 {human_bytes(report.original_bytes)} -> file "
        f"{human_bytes(saved.file_bytes)} ({reduction:.2%} smaller, "
        f"{saved.layout.value} layout)\nwrote {output} and {json_path}"
    )
    return 0
