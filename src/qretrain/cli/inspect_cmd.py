"""``qretrain inspect MODEL``: the layer table with the numbers plans use."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from qretrain._table import format_table, human_bytes
from qretrain.cli.common import add_command, add_model_arguments, model_from_args
from qretrain.cluster.state import clusters_of
from qretrain.models import get_arch
from qretrain.models.layers import BN_KINDS, ParamKind, describe_tensors

EXAMPLE = "example: qretrain inspect torchvision:vgg16"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "inspect",
        help="list layers, their numbers, shapes and parameter counts",
        description="List every module holding tensors: layer number (what plans' "
        "'layers' select), name, type, weight shape, counts per kind and share of the "
        "model's bytes. ",
        example=EXAMPLE,
    )
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def census(model) -> dict:
    """Per-module rows and totals, as printed by ``inspect``."""
    arch = get_arch(model)
    example = arch.example_input() if arch is not None else None
    infos = describe_tensors(model, example)
    clusters = clusters_of(model)
    total_bytes = sum(i.nbytes for i in infos) or 1
    modules: dict[str, dict] = {}
    for info in infos:
        row = modules.setdefault(
            info.module_name,
            {
                "layer": info.layer,
                "name": info.module_name,
                "type": info.module_type,
                "weight_shape": None,
                "counts": defaultdict(int),
                "bytes": 0,
                "clustered": [],
            },
        )
        if info.kind is ParamKind.WEIGHT:
            row["weight_shape"] = list(info.shape)
        group = "bn" if info.kind in BN_KINDS else (info.kind.value if info.kind else "other")
        row["counts"][group] += info.numel
        row["bytes"] += info.nbytes
        if info.name in clusters:
            row["clustered"].append(f"{info.attr}:{int(clusters[info.name].sizes.max())}")
    rows = list(modules.values())  # state-dict order: batch norm right after its conv
    for row in rows:
        row["counts"] = dict(row["counts"])
        row["share"] = row["bytes"] / total_bytes
    params = sum(i.numel for i in infos if i.is_parameter)
    return {
        "model": arch.spec if arch else type(model).__name__,
        "layer_order": "forward" if example is not None else "registration",
        "layers": sum(1 for r in rows if r["layer"] is not None),
        "parameters": params,
        "buffers": sum(i.numel for i in infos if not i.is_parameter),
        "bytes": total_bytes,
        "modules": rows,
    }


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    c = census(model)
    if args.json:
        print(json.dumps(c, indent=2))
        return 0
    rows = [
        [
            r["layer"] or "",
            r["name"] or "(root)",
            r["type"],
            "x".join(map(str, r["weight_shape"])) if r["weight_shape"] else "",
            r["counts"].get("weight", ""),
            r["counts"].get("bias", ""),
            r["counts"].get("bn", ""),
            f"{r['share']:.2%}",
            ",".join(r["clustered"]),
        ]
        for r in c["modules"]
    ]
    headers = ["layer", "name", "type", "weight shape", "weights", "biases", "bn", "share",
               "clustered (k)"]
    print(format_table(headers, rows, right="rlllrrrrl"))
    print(
        f"{c['model']}: {c['layers']} conv/linear layers (numbered in {c['layer_order']} "
        f"order), {c['parameters']:,} parameters, {c['buffers']:,} buffer values, "
        f"{human_bytes(c['bytes'])}"
    )
    return 0
