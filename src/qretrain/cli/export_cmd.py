"""``qretrain export MODEL.h5 --format safetensors|onnx|torchscript|coreml -o OUT``."""

from __future__ import annotations

import argparse

from qretrain.cli.common import add_command, add_model_arguments, model_from_args
from qretrain.export.options import FORMATS

EXAMPLE = "example: qretrain export lite0.h5 --format safetensors -o lite0.safetensors"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "export",
        help="write a model for other tools: safetensors, onnx, coreml (all keep the "
        "codebooks) or torchscript",
        description="safetensors keeps the clustering: each clustered tensor as its codebook "
        "and uint8 indices, plus JSON metadata, no code and no pickle. onnx rebuilds each "
        "clustered weight in the graph from its codebook and bit-packed indices (stock "
        "operators in one ONNX function per bit width), and stores large float32 tensors "
        "exactly in about 29 bits per value (pip install 'qretrain[onnx]'). coreml writes an ML "
        "program .mlpackage (iOS 18 / macOS 15) whose clustered weights are lookup tables "
        "of exactly their codebook values, the input contract as the image input's "
        "preprocessing (pip install 'qretrain[coreml]'). torchscript is the dequantized "
        "model, runnable without qretrain, as large as float32. Each program is run against "
        "the model on random images of its input contract before it is kept: one that "
        "computes something else (a forward branching on tensor values, which exporters fix "
        "to one branch) is refused and nothing is written. ",
        example=EXAMPLE,
    )
    add_model_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("-o", "--output", required=True, metavar="OUT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qretrain.export import export

    result = export(model_from_args(args), args.output, args.format)
    print(result.summary())
    return 0
