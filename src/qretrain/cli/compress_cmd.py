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
from qretrain.cli.flags import add_flags, settings_from_args
from qretrain.errors import QretrainError
from qretrain.planner.settings import Metric
from qretrain.recipe.settings import RecipeSettings

DESCRIPTION = """\
With --data D and --target (or --max-drop), the whole recipe, no labels:
  1. share D's images out: a held-out part nothing is trained or chosen on;
  2. sweep every layer alone at every k (--signal fisher: predict each one's KL
  instead); 3. choose the smallest plan within the target and verify it by
  measurement; 4. cluster; 5. retrain block by block to reproduce the
  original; 6. keep the result only if it beats the clustered start on the
  held-out images (else keep the start, with a warning).
  Prints the ratio, the file size, agreement and KL with the original before and
  after retraining, and the time per stage; writes OUT.h5 and the record OUT.json.
With --plan: cluster the tensors PLAN selects, save OUT.h5 (and OUT.json) and print
  the size report."""
# RecipeSettings fields without a flag: how the images are shared out between the
# stages, which a run config's recipe section (or Python) sets; the command keeps the
# measured recipe's shares.
RECIPE_NOT_FLAGS = ("min_images", "max_held_out", "sweep_images", "verify_images",
                    "retrain_images")  # fmt: skip
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
    # RecipeSettings' fields but seed (--seed below) and how the images are shared out
    # (RECIPE_NOT_FLAGS); the recipe needs no labels, so no --metric accuracy.
    how = parser.add_mutually_exclusive_group(required=True)
    add_flags(how, RecipeSettings, "target", "max_drop", target={"metavar": "SIZE"},
              max_drop={"metavar": "X"})  # fmt: skip
    how.add_argument(
        "--plan", metavar="PLAN.yaml", help="cluster as this plan says (no retraining)"
    )
    add_flags(parser, RecipeSettings, "metric", "recover", "epochs", "signal", "deploy",
              "granularities", "channel_scales", epochs={"metavar": "E"}, granularities={"metavar": "G"},
              metric={"choices": [m.value for m in Metric if m is not Metric.ACCURACY]})  # fmt: skip
    parser.add_argument(
        "--work",
        metavar="DIR",
        help="keep the recipe's stages in DIR (sweep, plan, clustered start, "
        "retrained model, records); a rerun with the same DIR and arguments "
        "resumes there (default: a temporary folder, removed)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="let --work DIR replace another run's files there"
    )
    add_device_argument(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="model file")
    add_flags(parser, CompressSettings, "layout")
    add_data_arguments(parser, required=False,
                       purpose="unlabeled images: with --target, what the recipe sweeps, "
                       "verifies, retrains and guards on (at least 100, of the kind the "
                       "model sees); with --plan, for sensitive-kmeans rules (each weight's "
                       "Fisher information on its first 256 weighs its k-means error)")  # fmt: skip
    add_flags(parser, CompressSettings, "fold_batchnorm", "method", fold_batchnorm={
        "flag": "--keep-batchnorm", "action": "store_const", "const": False,
        "help": "store batch norm's four vectors as they are; by default the packed layout "
        "folds each into a scale and a shift per channel (same eval outputs up to float "
        "rounding; retrain such a file with --bn-stats frozen)"})  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.plan is None:
        return _recipe(args)
    return _with_plan(args)


def _recipe(args: argparse.Namespace) -> int:
    """The one command: the recipe on --data, the kept model to OUT.h5 (+ OUT.json)."""
    settings = settings_from_args(RecipeSettings, args)
    if args.data is None:
        raise QretrainError("--target and --max-drop retrain on unlabeled images: give "
                            "--data D (a folder of images, or a named set)")  # fmt: skip
    if args.overwrite and not args.work:
        raise QretrainError("--overwrite applies to --work DIR")
    plan_only = [flag for flag, given in (
        ("--layout", args.layout != CompressSettings.default("layout").value),
        ("--keep-batchnorm", args.fold_batchnorm is not None), ("--method", args.method))
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
              **result.to_dict()}  # fmt: skip
    with atomic_path(output) as tmp:
        tmp.write_bytes(result.file_data)
        commit_pair(tmp, output, json.dumps(record, indent=2), output.with_suffix(".json"))
    print(result.summary())
    print(f"wrote {output} and {output.with_suffix('.json')}")
    return 0


def _with_plan(args: argparse.Namespace) -> int:
    recipe_only = [flag for flag, given in (("--epochs", args.epochs is not None),
                   ("--signal", args.signal is not None),
                   ("--deploy", args.deploy != RecipeSettings.default("deploy").value),
                   ("--granularities", args.granularities != "tensor"),  # the default's text
                   ("--no-channel-scales", not args.channel_scales),
                   ("--work", args.work), ("--overwrite", args.overwrite)) if given]  # fmt: skip
    if recipe_only:
        raise QretrainError(f"{', '.join(recipe_only)}: for the recipe (--target or "
                            "--max-drop), not --plan")  # fmt: skip
    settings = settings_from_args(CompressSettings, args)
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
