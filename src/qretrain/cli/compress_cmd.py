"""``qretrain compress MODEL --data D --target 7x -o OUT.h5``: the whole recipe in one
command; ``qretrain compress MODEL --plan PLAN -o OUT.h5``: cluster as a plan says."""

from __future__ import annotations

import argparse
import json

from qretrain.apply.settings import CompressSettings
from qretrain.cli.common import (
    add_command,
    add_data_arguments,
    add_device_argument,
    add_model_arguments,
    data_from_args,
    model_from_args,
    output_file,
    show_progress,
)
from qretrain.cluster.options import Method
from qretrain.errors import QretrainError
from qretrain.recipe.settings import RecipeSettings, Recover
from qretrain.storage.layout import Layout

DESCRIPTION = """\
With --data D and --target (or --max-drop), the whole recipe, no labels:
  1. share D's images out: a held-out part nothing is trained or chosen on;
  2. sweep every layer alone at every k; 3. choose the smallest plan within the
  target and verify it; 4. cluster; 5. retrain block by block to reproduce the
  original; 6. keep the result only if it beats the clustered start on the
  held-out images (else keep the start, with a warning).
  Prints the ratio, the file size, agreement and KL with the original before and
  after retraining, and the time per stage; writes OUT.h5 and the record OUT.json.
With --plan: cluster the tensors PLAN selects, save OUT.h5 (and OUT.json) and print
  the size report."""
EXAMPLE = """examples:
  qretrain compress torchvision:mobilenet_v3_small --weights mine.pth --num-classes 10 \\
      --input-size 64 --mean 0.5 --std 0.25 --data my-images/ --target 7x -o small.h5
  qretrain compress torchvision:vgg16 --plan examples/plans/vgg16-paper.yaml -o vgg16.h5"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "compress",
        help="make a model smaller: to a target size, recovered on unlabeled images "
        "(--data D --target 7x), or as a plan says (--plan)",
        description=DESCRIPTION,
        example=EXAMPLE,
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_model_arguments(parser)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--target", metavar="SIZE",
                     help="a ratio to float32 (7x) or a file size (2.6MB, 900KB, bytes)")
    how.add_argument("--max-drop", type=float, metavar="X",
                     help="instead of --target: the largest drop of --metric the plan may cost")
    how.add_argument("--plan", metavar="PLAN.yaml", help="cluster as this plan says (no retraining)")
    parser.add_argument("--metric", choices=["kl", "agreement"], default="kl",
                        help="what --max-drop and the plan's verification measure (default kl, "
                        "in nats; agreement in points)")
    parser.add_argument("--recover", choices=[r.value for r in Recover], default="blocks",
                        help="how quality is won back: blocks (block-wise reconstruction, "
                        "default), output (match the original's outputs) or none")
    parser.add_argument("--epochs", type=int, metavar="E",
                        help="passes per block (blocks, default 4) or epochs (output, default 5)")
    parser.add_argument("--work", metavar="DIR",
                        help="keep the recipe's stages in DIR (sweep, plan, clustered start, "
                        "retrained model, records); a rerun with the same DIR and arguments "
                        "resumes there (default: a temporary folder, removed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --work DIR replace another run's files there")
    add_device_argument(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="model file")
    parser.add_argument(
        "--layout",
        choices=[layout.value for layout in Layout],
        default=CompressSettings.default("layout").value,
        help="packed: bit-packed indices + codebook (default); paper: the seed's "
        "float32 + gzip",
    )
    add_data_arguments(parser, required=False,
                       purpose="unlabeled images: with --target, what the recipe sweeps, "
                       "verifies, retrains and guards on (at least 100, of the kind the "
                       "model sees); with --plan, for sensitive-kmeans rules (each weight's "
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
    if args.plan is None:
        return _recipe(args)
    return _with_plan(args)


def _recipe(args: argparse.Namespace) -> int:
    """The one command: the recipe on --data, the kept model to OUT.h5 (+ OUT.json)."""
    settings = RecipeSettings(target=args.target, max_drop=args.max_drop, metric=args.metric,
                              recover=args.recover, seed=args.seed, epochs=args.epochs)  # fmt: skip
    if args.data is None:
        raise QretrainError("--target and --max-drop retrain on unlabeled images: give "
                            "--data D (a folder of images, or a named set)")  # fmt: skip
    if args.overwrite and not args.work:
        raise QretrainError("--overwrite applies to --work DIR")
    plan_only = [flag for flag, given in (("--layout", args.layout != "packed"),
                 ("--keep-batchnorm", args.keep_batchnorm), ("--method", args.method))
                 if given]  # fmt: skip
    if plan_only:
        raise QretrainError(f"{', '.join(plan_only)} appl{'ies' if len(plan_only) == 1 else 'y'} "
                            "to --plan; the recipe writes the packed layout")  # fmt: skip
    output = output_file(args.output, (".h5", ".hdf5"))
    from qretrain.models import get_arch  # the stages, once their settings are checked
    from qretrain.recipe import compress
    from qretrain.storage import atomic_path, commit_pair

    model = model_from_args(args)
    arch = get_arch(model)
    data = data_from_args(args, arch.contract if arch is not None else None)
    result = compress(model, data, settings=settings, device=args.device,
                      progress=show_progress(args), workdir=args.work,
                      overwrite=args.overwrite)  # fmt: skip
    record = {"model": args.model, "weights": args.weights, "data": data.describe(),
              "settings": settings.to_dict(), **result.to_dict()}  # fmt: skip
    with atomic_path(output) as tmp:
        tmp.write_bytes(result.file_data)
        commit_pair(tmp, output, json.dumps(record, indent=2), output.with_suffix(".json"))
    print(result.summary())
    print(f"wrote {output} and {output.with_suffix('.json')}")
    return 0


def _with_plan(args: argparse.Namespace) -> int:
    recipe_only = [flag for flag, given in (("--epochs", args.epochs is not None),
                   ("--work", args.work), ("--overwrite", args.overwrite)) if given]  # fmt: skip
    if recipe_only:
        raise QretrainError(f"{', '.join(recipe_only)}: for the recipe (--target or "
                            "--max-drop), not --plan")  # fmt: skip
    settings = CompressSettings(layout=args.layout, method=args.method,
                                fold_batchnorm=False if args.keep_batchnorm else None)
    output = output_file(args.output, (".h5", ".hdf5"))
    from qretrain.apply import cluster_and_save  # the stage, once its settings are checked
    from qretrain.models import get_arch
    from qretrain.plan import Plan

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
