"""``qretrain retrain STUDENT.h5 --teacher MODEL --data D -o OUT.h5``."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from qretrain.cli.common import (
    add_command,
    add_data_arguments,
    add_device_argument,
    add_trust_argument,
    companion_model,
    data_from_args,
    output_file,
    show_progress,
)
from qretrain.cli.flags import add_flags, settings_from_args
from qretrain.errors import QretrainError
from qretrain.retrain.config import Loss, RetrainConfig

if TYPE_CHECKING:
    from qretrain.distributed import Ranks

logger = logging.getLogger(__name__)
EXAMPLE = (
    "example: qretrain retrain small.h5 --teacher teacher:vgg --data fashion-mnist:train "
    "--limit 10000 -o retrained.h5"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "retrain",
        help="win a clustered model's quality back, label-free or with labels",
        description="Retrain the unclustered parameters of STUDENT.h5 so that its outputs "
        "match the teacher's on D (no labels needed), or, with --objective blocks, so that "
        "each block's output matches the teacher's block by block (docs/RETRAINING.md), "
        "or with --labels by cross-entropy "
        "on D's labels (conventional retraining). Clustered tensors stay on their "
        "codebooks, so OUT.h5 keeps the size of STUDENT.h5. Writes OUT.json with the "
        "run record and a checkpoint OUT.ckpt after every epoch (OUT.blocks.ckpt after every "
        "pass over a block). Under torchrun "
        "(torchrun --nproc-per-node N --no-python qretrain retrain ...) each process trains on "
        "its shard of D (gloo on cpu, nccl on cuda; --batch-size is per process) and "
        "rank 0 writes the files: output matching with DistributedDataParallel; "
        "--objective blocks sums each step's gradients over the processes, so that it "
        "ends as one process with N times the batch would, up to float rounding. ",
        example=EXAMPLE,
    )
    parser.add_argument("student", metavar="STUDENT.h5", help="the clustered model")
    parser.add_argument(
        "--teacher",
        metavar="MODEL",
        help="the original model (label-free); the same spec as the student's "
        "architecture takes the student's class count and input contract",
    )
    parser.add_argument("--teacher-weights", metavar="FILE",
                        help="state dict for --teacher: .pth (torch.load(weights_only=True)) or "
                        ".safetensors")  # fmt: skip
    add_data_arguments(parser)
    parser.add_argument(
        "--views",
        type=int,
        metavar="N",
        help="retrain on N augmented views of D's images (random resized "
        "crops, flips, mixup/cutmix; drawn from --seed, no labels)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5")
    # Every RetrainConfig field but seed, which --seed above sets (for D's subset too);
    # --loss ce is what --labels means.
    add_flags(parser, RetrainConfig, "labels", "trainable", "loss", "temperature", "objective",
              "block_epochs", "block_values", "epochs", "batch_size", "lr", "weight_decay", "bn_stats",
              "tune_centroids", "tune_assignments", "rounding_lambda", "cache",
              loss={"choices": [x.value for x in Loss if x is not Loss.CE]})  # fmt: skip
    parser.add_argument(
        "--val-data",
        metavar="V",
        help="guard: keep the best epoch on V, never worse than the start",
    )
    parser.add_argument("--val-limit", type=int, metavar="N", help="a random subset of V")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep OUT.ckpt after a successful run (removed by default)")  # fmt: skip
    add_device_argument(parser)
    add_trust_argument(parser)
    parser.set_defaults(run=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    config = settings_from_args(RetrainConfig, args)  # checked before anything is loaded
    from qretrain.distributed import process_group_from_env

    with process_group_from_env(args.device) as (ranks, device):  # several under torchrun
        return _retrain_and_save(args, config, ranks, device)


def _retrain_and_save(args: argparse.Namespace, config: RetrainConfig, ranks: Ranks,
                      device: str) -> int:  # fmt: skip
    from qretrain.data import load_dataset
    from qretrain.data.views import augmented
    from qretrain.models import get_arch
    from qretrain.retrain import block_checkpoint, retrain
    from qretrain.storage import load, save

    output = output_file(args.output, (".h5",))
    if args.views is not None and args.views < 1:
        raise QretrainError(f"--views must be at least 1; got {args.views}")
    if not args.labels and not args.teacher:
        raise QretrainError("label-free retraining needs --teacher MODEL (or --labels)")
    if args.resume and not output.with_suffix(".ckpt").exists():
        logger.warning("--resume: no checkpoint at %s; starting fresh", output.with_suffix(".ckpt"))
    student = load(args.student, trust_code=args.trust_code)
    teacher = None
    if args.teacher:
        teacher = companion_model(args.teacher, args.teacher_weights, student, args.trust_code)
    contract = get_arch(student).contract if get_arch(student) else None
    data = data_from_args(args, contract, teacher)
    if args.views is not None:
        data = augmented(data, args.views, args.seed)
    if not args.labels:
        data.labels = None  # label-free: whatever labels D has are withheld
    val = None
    if args.val_data:
        val = load_dataset(args.val_data, contract, limit=args.val_limit, seed=args.seed + 1)
    result = retrain(student, teacher, data, config, val_data=val,
                     checkpoint=output.with_suffix(".ckpt"), resume=args.resume,
                     device=device, progress=show_progress(args), rank=ranks.rank,
                     world_size=ranks.world_size)  # fmt: skip
    if not ranks.leader:
        return 0
    extra = {"student": args.student, "teacher": args.teacher, "data": data.describe(),
             "val_data": val.describe() if val else None}  # fmt: skip
    save(
        result.model.cpu(),
        output,
        record=lambda saved: {**extra, "file_bytes": saved.file_bytes, **result.record},
    )
    if not args.keep_checkpoint:  # the run is complete
        output.with_suffix(".ckpt").unlink(missing_ok=True)
        block_checkpoint(output.with_suffix(".ckpt")).unlink(missing_ok=True)
    print(result.summary())
    print(f"wrote {output} and {output.with_suffix('.json')}")
    return 0
