"""Block-wise reconstruction: each block of the student learns to reproduce the
teacher's output of the same block, in forward order.

**Blocks** are cut on the traced graph (``models.graph``). A cut may fall only where
one tensor crosses it (its frontier is one value, so a block reads one tensor and
writes one), and only where the *owner* of the modules called changes: a module
path down to the first item of a ``ModuleList`` or ``Sequential`` (``_blocks.3``,
``layer1.0``, ``features.4``), else its top-level module (``_conv_stem``). A block
holding no clustered tensor joins the block before it (the first joins the next),
so each block has something the clustering changed. EfficientNet-Lite0 gives the
stem, each MBConv block, the head convolution and the classifier. Models fx cannot
trace, and those with fewer than two blocks, have no split: retraining falls back
to output matching and says so in its record.

**Inputs and targets.** Block i trains on the student's own outputs of blocks
0..i-1, computed after those were trained (errors do not accumulate unseen), to
match the teacher's output of block i on the teacher's own input. Each is computed
once per image and block, in chunks of ``CHUNK`` images; they stay in memory when
the largest two boundaries' values for all images fit in ``MEMORY_BUDGET``, and
otherwise in memory-mapped files in the temporary folder (``TMPDIR``). Peak memory:
about 2 x (largest block input + output) x images x 4 bytes (EfficientNet-Lite0 at
224 px: ~4.8 MB per image).

**Images per pass.** A pass over a block trains on every image, or with
``block_values`` on the first ``pass_images`` of that pass's own seeded order: as
many as hold that many of the block's output values. Early blocks of a mobile
network run at high resolution with few weights (EfficientNet-Lite0's stem and first
two MBConv blocks: a thousandth of its weights, half of the block-wise time), so a few hundred
images per pass fit them; each image still goes through every block once to feed
the next.

**Frozen batch norm** is computed inside the convolution before it while the blocks
train and run (``retrain.fuse``): the same function and gradients up to float
rounding, at a fraction of the cost in high-resolution blocks.

Trained per block: its parameters that ``config.trainable`` selects, and with
``tune_centroids`` its codebook values (assignments fixed; with ``tune_assignments``
each weight also chooses between its two neighbouring centroids, ``retrain.rounding``).
Batch norm stays in eval mode throughout (``bn_stats`` must be ``frozen``).

**Several processes** (``qretrain.distributed``): each rank holds the block values of
its shard of the images (i % world_size == rank, none dropped), so the teacher and
the trained blocks still run once per image in all. Every pass walks one order of
all the images; a step takes ``batch_size`` x world_size of them, each rank computes
its share of the step's mean loss on those it holds, and the gradients are summed
over ranks before the codebooks and learned assignments take theirs: every rank
takes the step one process with that batch would take (equal up to float rounding),
and the ranks stay identical. The errors that decide something (a block's mse, the
learned assignments' test) are summed over ranks too.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn
from torch.utils.data import Dataset

from qretrain.cluster.state import clusters_of
from qretrain.data.batches import image_batches
from qretrain.distributed import Ranks
from qretrain.errors import QretrainError, QretrainFileError
from qretrain.models.channels import in_student_scales, teacher_ratios
from qretrain.models.graph import Graph
from qretrain.models.layers import get_tensor
from qretrain.progress import Progress, track
from qretrain.retrain.centroids import CentroidTuner
from qretrain.retrain.checkpoint import check_same_run, check_tensor, write_payload
from qretrain.retrain.config import MIN_PASS_IMAGES, RetrainConfig
from qretrain.retrain.fuse import fuse_frozen
from qretrain.retrain.rounding import LR as ROUNDING_LR
from qretrain.retrain.rounding import LearnedAssignments

logger = logging.getLogger(__name__)
CHUNK = 64  # images per forward pass when computing a block's inputs and targets
MEMORY_BUDGET = 8 << 30  # bytes of block values kept in memory before spilling to files
CHOICE_IMAGES = 256  # images on which learned assignments must beat the nearest centroids
ONE_PROCESS = Ranks()


@dataclass(frozen=True)
class Block:
    """Graph nodes [start, stop) of a traced model; ``stop`` None: to the output."""

    name: str  # owners it spans: "_blocks.3" or "_conv_head.._fc"
    start: int
    stop: int | None
    parameters: tuple[str, ...]  # state-dict names of the parameters it reads


def find_blocks(model: nn.Module) -> tuple[Graph, list[Block]] | None:
    """The model's blocks in forward order, or None when it cannot be split."""
    graph = Graph.trace(model, "block-wise retraining")
    if graph is None:
        return None
    clustered = set(clusters_of(model))
    params = {name for name, _ in model.named_parameters()}
    owners = [_owner(model, n) for n in graph.nodes]
    cuts, current = [graph.inputs], None
    for i, node in enumerate(graph.nodes):
        if owners[i] is None or node.op == "output":
            continue
        if current is not None and owners[i] != current and _one_tensor(graph, i):
            cuts.append(i)
        current = owners[i]
    spans = list(zip(cuts, [*cuts[1:], None]))
    reads = [_parameters_read(model, graph, a, b, params) for a, b in spans]
    names = [_span_name(owners, a, b if b is not None else len(owners)) for a, b in spans]
    # Merge blocks that hold no clustered tensor into the one before (the first: after).
    merged: list[list] = []
    for (a, b), read, name in zip(spans, reads, names):
        if merged and (not clustered & set(read) or not clustered & set(merged[-1][2])):
            merged[-1] = [merged[-1][0], b, merged[-1][2] + read, _join(merged[-1][3], name)]
        else:
            merged.append([a, b, read, name])
    if merged and not clustered & set(merged[-1][2]) and len(merged) > 1:
        last = merged.pop()
        merged[-1] = [
            merged[-1][0],
            last[1],
            merged[-1][2] + last[2],
            _join(merged[-1][3], last[3]),
        ]
    blocks = [Block(name, a, b, tuple(dict.fromkeys(read))) for a, b, read, name in merged]
    return (graph, blocks) if len(blocks) >= 2 else None


def _owner(model: nn.Module, node: fx.Node) -> str | None:
    """The module path a node's call or tensor read belongs to (see the module doc)."""
    if node.op not in ("call_module", "get_attr"):
        return None
    parts = str(node.target).split(".")
    module = model
    for i, part in enumerate(parts):
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            return ".".join(parts[: i + 1])
        child = getattr(module, part, None)
        if not isinstance(child, nn.Module):
            break
        module = child
    return parts[0]


def _one_tensor(graph: Graph, boundary: int) -> bool:
    frontier = graph.tensor_frontier(boundary)
    return frontier is not None and len(frontier) == 1


def _parameters_read(model, graph: Graph, start: int, stop: int | None, params: set[str]):
    read = []
    for node in graph.nodes[start:stop]:
        if node.op == "call_module":
            prefix = f"{node.target}."
            read += [f"{prefix}{n}" for n, _ in model.get_submodule(node.target).named_parameters()]
        elif node.op == "get_attr" and node.target in params:
            read.append(str(node.target))
    # Parameter reads before the cut that the segment uses (fx hoists get_attr nodes).
    end = len(graph.nodes) if stop is None else stop
    position = {n: i for i, n in enumerate(graph.nodes)}
    for node in graph.nodes[:start]:
        if (
            node.op == "get_attr"
            and node.target in params
            and any(start <= position[u] < end for u in node.users)
        ):
            read.append(str(node.target))
    return read


def _span_name(owners: list[str | None], start: int, stop: int) -> str:
    named = [o for o in owners[start:stop] if o is not None]
    if not named:
        return "(no modules)"
    return named[0] if named[0] == named[-1] else f"{named[0]}..{named[-1]}"


def _join(first: str, second: str) -> str:
    return f"{first.split('..')[0]}..{second.split('..')[-1]}"


class _Values:
    """One value per image at a block boundary: in memory, or in a mapped file.

    4-D values are stored channels-last when the segment writes them so (the layout
    ``retrain.layout`` gives convolutional models): copying each chunk into a store
    of the other layout would transpose every value twice per block."""

    def __init__(self, n: int, like: torch.Tensor, spill: bool):
        shape = tuple(like.shape[1:])
        last = (
            like.dim() == 4
            and not like.is_contiguous()
            and like.is_contiguous(memory_format=torch.channels_last)
        )
        stored = (shape[1], shape[2], shape[0]) if last else shape  # (H, W, C) when last
        size = n * math.prod(shape)
        if spill:
            handle, path = tempfile.mkstemp(prefix="qretrain-block-", suffix=".f32")
            os.close(handle)
            try:
                os.truncate(path, size * 4)
                data = torch.from_file(path, shared=True, size=size).view(n, *stored)
            finally:
                os.unlink(path)  # the mapping keeps it until released
        else:
            data = torch.empty(n, *stored)
        self.data = data.permute(0, 3, 1, 2) if last else data


@torch.no_grad()
def _run(segment: fx.GraphModule, values: torch.Tensor, device, spill: bool,
         target: torch.Tensor | None = None,
         ranks: Ranks = ONE_PROCESS) -> tuple[torch.Tensor | None, float | None]:  # fmt: skip
    """segment applied to every row of ``values`` (N, ...), in chunks of CHUNK (None
    when N is 0); with ``target`` also the mean squared error to it over all ranks'
    rows, summed chunk by chunk (a whole-set difference would allocate another copy of
    the block's outputs)."""
    out, squared = None, 0.0
    for start in range(0, len(values), CHUNK):
        y = segment(values[start : start + CHUNK].to(device))
        y = (y[0] if isinstance(y, tuple) else y).float()
        if target is not None:
            squared += float(
                torch.nn.functional.mse_loss(
                    y, target[start : start + len(y)].to(device), reduction="sum"
                )
            )
        y = y.cpu()
        if out is None:
            out = _Values(len(values), y, spill).data
        out[start : start + len(y)] = y
    if target is None:
        return out, None
    squared, count = ranks.sum(squared, 0 if out is None else out.numel())
    return out, squared / count


@dataclass
class BlockPlan:
    """Blocks found for a student and its teacher, with the segments that run them:
    ``student[i]`` and ``teacher[i]`` map block i's input tensor to its output."""

    blocks: list[Block]
    student: list[nn.Module]
    teacher: list[nn.Module]


def plan_blocks(student: nn.Module, teacher: nn.Module) -> BlockPlan | None:
    """The student's blocks and both models' segments, or None without a split."""
    found = find_blocks(student)
    if found is None:
        return None
    graph, blocks = found
    teacher_graph = Graph.trace(teacher, "block-wise retraining")
    if teacher_graph is None or len(teacher_graph.nodes) != len(graph.nodes):
        return None
    return BlockPlan(blocks, [graph.block(b.start, b.stop) for b in blocks],
                     [teacher_graph.block(b.start, b.stop) for b in blocks])  # fmt: skip


@dataclass
class _Position:
    """Where a block-wise run stands: the next block and pass to run."""

    block: int = 0
    epoch: int = 0
    history: list = field(default_factory=list)  # entries of finished blocks
    losses: list = field(default_factory=list)  # the current block's passes so far
    optimizer: dict | None = None  # the current block's optimizer, mid-block only
    rounding: dict | None = None  # the current block's learned assignments, mid-block only


def reconstruct(student: nn.Module, teacher: nn.Module, plan: BlockPlan, data: Dataset,
                config: RetrainConfig, trainable: set[str], *, device, progress: bool,
                checkpoint: Path | None = None, resume: bool = False,
                fingerprints: dict[str, str] | None = None,
                ranks: Ranks = ONE_PROCESS) -> dict:  # fmt: skip
    """Train ``student``'s blocks in turn, in place; returns the stage's record.

    ``trainable``: the unclustered parameters retraining may change (each block trains
    those it reads). ``checkpoint``: written (by rank 0) after every pass over a block;
    ``resume`` continues from it at the block and pass where it stopped. ``ranks``:
    this process's place under torchrun; ``data`` is all the images, of which it
    takes its shard (see the module doc).
    """
    start = time.perf_counter()
    images = _images(ranks.shard(data, equal=False))
    total = len(data)  # images over all ranks: one pass's order covers them all
    spill = _needs_spill(plan, images)
    tuner = CentroidTuner(student) if config.tune_centroids else None
    student.eval()
    teacher.eval()
    # Batch norm is frozen from here on: each segment computes it inside the
    # convolution before it, the same function at a fraction of the cost (retrain.fuse).
    students = [fuse_frozen(segment) for segment in plan.student]
    teachers = [fuse_frozen(segment) for segment in plan.teacher]
    # The learned assignments start from the teacher's values in the student's channel
    # scales (models.channels), read before any batch norm trains or a checkpoint loads.
    ratios = teacher_ratios(teacher, student) if config.tune_assignments else {}
    at = _Position()
    if resume and checkpoint is not None and checkpoint.exists():
        at = _load(checkpoint, student, tuner, config, fingerprints or {}, ranks.world_size)
        logger.info("resuming block-wise retraining at block %d, pass %d", at.block + 1,
                    at.epoch + 1)  # fmt: skip
    history = at.history
    teacher_in = student_in = images
    passes = Progress("Block-wise", len(plan.blocks) * config.block_epochs, "block passes",
                      enabled=progress)  # fmt: skip
    passes.update(min(at.block, len(plan.blocks)) * config.block_epochs + at.epoch)
    done = at.block >= len(plan.blocks)  # every block was done before the restart
    for i, block in enumerate([] if done else plan.blocks):
        if i < at.block:  # done before the restart: only its outputs are needed
            teacher_in, _ = _run(teachers[i], teacher_in, device, spill)
            student_in, _ = _run(students[i], student_in, device, spill)
            continue
        block_start = time.perf_counter()
        target, _ = _run(teachers[i], teacher_in, device, spill)
        own = [n for n in block.parameters if n in trainable]
        books = [n for n in block.parameters if tuner is not None and n in tuner.codebooks]
        for name, p in student.named_parameters():
            p.requires_grad_(name in own or name in books)
        params = [p for n, p in student.named_parameters() if n in own]
        params += [tuner.codebooks[n] for n in books]
        per_pass = pass_images(total, target[0].numel(), config)
        losses, first = (at.losses, at.epoch) if i == at.block else ([], 0)
        # Learned assignments: every pass but the last (retrain.rounding), then chosen.
        soft = max(config.block_epochs - 1, 1) if config.tune_assignments and books else 0
        resumed = at.rounding if i == at.block else None
        chosen = resumed if resumed is not None and "chosen" in resumed else None
        rounding = None
        if params:
            groups = [{"params": params}]
            if first < soft:
                steps = soft * _steps(total, per_pass, config.batch_size * ranks.world_size)
                originals = _originals(teacher, student, books, ratios)
                rounding = LearnedAssignments(tuner, books, originals, steps, target[0].numel(),
                                              config.rounding_lambda)  # fmt: skip
                groups.append({"params": rounding.parameters(), "lr": ROUNDING_LR,
                               "weight_decay": 0.0})  # fmt: skip
                if resumed is not None:
                    rounding.load_state(resumed)
            optimizer = torch.optim.Adam(groups, config.lr, weight_decay=config.weight_decay)
            if i == at.block and at.optimizer is not None:
                optimizer.load_state_dict(at.optimizer)
            for epoch in range(first, config.block_epochs):
                passes.note(f"block {i + 1}/{len(plan.blocks)} {block.name}")
                active = rounding if epoch < soft else None
                step = _Step(optimizer, tuner, books, active, _with_grads(student, own, books),
                             ranks)  # fmt: skip
                losses.append(_train_pass(students[i], student_in, target, step, total,
                                          per_pass, config, i, epoch, device, progress,
                                          block.name))  # fmt: skip
                passes.update()
                if active is not None and epoch + 1 == soft:
                    chosen = _choose(rounding, students[i], student_in, target, device,
                                     ranks, total)  # fmt: skip
                    optimizer = _without_rounding(optimizer)
                if checkpoint is not None and ranks.leader and epoch + 1 < config.block_epochs:
                    # Mid-block: the soft assignments while they learn, then the choice.
                    state = rounding.state() if epoch + 1 < soft else chosen
                    mid = _Position(i, epoch + 1, history, losses, optimizer.state_dict(), state)
                    _save(checkpoint, mid, student, trainable, tuner, config, fingerprints,
                          ranks.world_size)  # fmt: skip
        else:
            passes.update(config.block_epochs - first)  # nothing in the block to train
        for p in student.parameters():
            p.requires_grad_(False)
        student_out, mse = _run(students[i], student_in, device, spill, target, ranks)
        entry = {"block": i + 1, "name": block.name, "trained": len(own), "codebooks": len(books),
                 "loss_per_pass": losses,
                 "mse_after": mse,
                 "seconds": time.perf_counter() - block_start}  # fmt: skip
        if chosen is not None:
            entry["assignments"] = chosen
        history.append(entry)
        logger.info("block %d/%d %s: %d tensors and %d codebooks trained, mse %.3g, %.1f s",
                    i + 1, len(plan.blocks), block.name, len(own), len(books), entry["mse_after"],
                    entry["seconds"])  # fmt: skip
        if checkpoint is not None and ranks.leader:
            _save(checkpoint, _Position(i + 1, 0, history), student, trainable, tuner, config,
                  fingerprints, ranks.world_size)  # fmt: skip
        teacher_in, student_in = target, student_out
    passes.close()
    if tuner is not None:
        tuner.write_back()
    return {"blocks": [b.name for b in plan.blocks], "history": history,
            "activations": "files" if spill else "memory",
            "seconds": time.perf_counter() - start}  # fmt: skip


def _choose(rounding: LearnedAssignments, segment, inputs, target, device, ranks: Ranks,
            total: int) -> dict:  # fmt: skip
    """Keep the learned assignments if they reconstruct the block's output better than
    the nearest centroids on (up to CHOICE_IMAGES of) its images, the first of all
    ``total`` images whichever rank holds them (so every rank chooses alike); returns
    the record."""
    sample = slice(0, len(ranks.mine(torch.arange(min(total, CHOICE_IMAGES)))))
    errors = {}
    for learned in (True, False):
        moved = rounding.use(learned)
        errors[learned] = _run(segment, inputs[sample], device, False, target[sample], ranks)[1]
    keep = errors[True] < errors[False]
    rounding.use(keep)
    return {"chosen": "learned" if keep else "nearest", "moved": moved if keep else 0,
            "free": rounding.free_count(), "mse_learned": errors[True],
            "mse_nearest": errors[False]}  # fmt: skip


def _without_rounding(optimizer: torch.optim.Adam) -> torch.optim.Adam:
    """The optimizer without its learned-assignment group (the last pass trains the
    codebooks and parameters alone; their Adam state carries on)."""
    state = optimizer.state_dict()
    state["param_groups"] = state["param_groups"][:1]
    kept = set(state["param_groups"][0]["params"])
    state["state"] = {k: v for k, v in state["state"].items() if k in kept}
    fresh = torch.optim.Adam(optimizer.param_groups[0]["params"])
    fresh.load_state_dict(state)
    return fresh


def _originals(teacher: nn.Module, student: nn.Module, names: list[str],
               ratios: dict[str, torch.Tensor]) -> dict:  # fmt: skip
    """The teacher's values of the student's clustered tensors ``names`` (the values
    the learned assignments start from), in the student's channel scales (``ratios``:
    ``models.channels.teacher_ratios``)."""
    for name in names:
        value = get_tensor(teacher, name)
        if value.shape != get_tensor(student, name).shape:
            raise QretrainError(f"tune_assignments: the teacher's {name!r} has shape "
                                f"{tuple(value.shape)}, the student's "
                                f"{tuple(get_tensor(student, name).shape)}; "
                                "retrain with the original as the teacher")  # fmt: skip
    return in_student_scales(teacher, names, ratios)


@dataclass
class _Step:
    """What one optimizer step of a block touches: ``grads`` are the tensors whose
    gradients the ranks sum (the trained parameters and the clustered weights, whose
    gradients become their codebooks' and learned assignments')."""

    optimizer: torch.optim.Optimizer
    tuner: CentroidTuner | None
    books: list[str]
    rounding: LearnedAssignments | None
    grads: list[torch.Tensor]
    ranks: Ranks


def _with_grads(student: nn.Module, own: list[str], books: list[str]) -> list[torch.Tensor]:
    wanted = set(own) | set(books)
    return [p for n, p in student.named_parameters() if n in wanted]


def pass_images(total: int, values_per_image: int, config: RetrainConfig) -> int:
    """How many of the ``total`` images one pass over a block trains on: all of them,
    or with ``config.block_values`` as many as hold that many of the block's output
    values (``values_per_image`` each), at least MIN_PASS_IMAGES. An early block at
    high resolution has few weights and many output values per image, so a few hundred
    images fit its weights as well as thousands, at a fraction of its time. The pass
    still takes as many steps as a pass over all images (``_train_pass``): a block
    learns by its steps, and its few weights see enough output values in a smaller
    batch."""
    if config.block_values is None:
        return total
    return min(total, max(MIN_PASS_IMAGES, math.ceil(config.block_values / values_per_image)))


def _steps(total: int, per_pass: int, size: int) -> int:
    """Optimizer steps in a pass over ``per_pass`` of ``total`` images: those of a
    pass over all of them in batches of ``size``, or one per image if fewer."""
    return min(math.ceil(total / size), per_pass)


def _train_pass(segment, inputs, target, step: _Step, total: int, per_pass: int,
                config: RetrainConfig, block: int, epoch: int, device, progress: bool,
                name: str) -> float:  # fmt: skip
    """One pass over ``per_pass`` of all ``total`` images (of which ``inputs`` and
    ``target`` hold this rank's shard): the first of an order seeded by (seed, block,
    pass), so that each pass draws its own images and a resumed run repeats an
    uninterrupted one, in batches of ``batch_size`` x world_size, or with fewer images
    in as many steps on smaller batches; returns the mean batch loss over all ranks
    (the reconstruction error, without the learned assignments' term)."""
    optimizer, tuner, books, rounding, ranks = (step.optimizer, step.tuner, step.books,
                                                step.rounding, step.ranks)  # fmt: skip
    if rounding is not None:
        rounding.write()
    seed = config.seed * 1_000_003 + 7_919 * block + epoch
    torch.manual_seed(seed)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:per_pass]
    loss_sum, batches = 0.0, 0
    size = config.batch_size * ranks.world_size  # batch_size is per process
    steps = _steps(total, per_pass, size)
    chunks = order.split(size) if per_pass == total else order.tensor_split(steps)
    for index in track(chunks, f"{name} pass {epoch + 1}/{config.block_epochs}",
                       unit="batches", enabled=progress, log=False):  # fmt: skip
        local = ranks.mine(index)  # this rank's images of the step (possibly none)
        optimizer.zero_grad(set_to_none=True)
        if len(local):
            out = segment(inputs[local].to(device))
            out = out[0] if isinstance(out, tuple) else out
            loss = torch.nn.functional.mse_loss(out.float(), target[local].to(device))
            if ranks.several:  # this rank's share of the step's mean over all its images
                loss = loss * (len(local) / len(index))
            loss.backward()
            loss_sum += loss.item()
        ranks.sum_grads(step.grads)
        if rounding is not None:
            rounding.collect_grads()
        elif tuner is not None:
            tuner.collect_grads(books)
        optimizer.step()
        if rounding is not None:
            rounding.write()
        elif tuner is not None:
            tuner.apply(books)
        batches += 1
    (loss_sum,) = ranks.sum(loss_sum)
    return loss_sum / max(batches, 1)


@torch.no_grad()
def _images(data: Dataset) -> torch.Tensor:
    loader = image_batches(data, 256)
    return torch.cat([x.float() for x, _ in loader])


def _needs_spill(plan: BlockPlan, images: torch.Tensor) -> bool:
    """Whether the block values would pass MEMORY_BUDGET (shapes probed on the
    student's segments with two images)."""
    x, biggest = images[:2], 0
    with torch.no_grad():
        for segment in plan.student:
            y = segment(x)
            x = y[0] if isinstance(y, tuple) else y
            biggest = max(biggest, x[0].numel())
    return 4 * biggest * 4 * len(images) > MEMORY_BUDGET


def _save(path: Path, at: _Position, student: nn.Module, trainable: set[str], tuner,
          config: RetrainConfig, fingerprints: dict[str, str] | None,
          world_size: int = 1) -> None:  # fmt: skip
    state = student.state_dict()
    payload = {
        "stage": "blocks", "block": at.block, "epoch": at.epoch, "history": at.history,
        "world_size": world_size,  # a step's batch is batch_size x world_size
        "losses": at.losses, "optimizer": at.optimizer, "rounding": at.rounding,
        "config": config.to_dict(),
        "fingerprints": fingerprints or {},
        "params": {n: state[n].detach().cpu().clone() for n in sorted(trainable)},
        "codebooks": tuner.state() if tuner is not None else {},
    }  # fmt: skip
    write_payload(path, payload)


def _load(path: Path, student, tuner, config: RetrainConfig, fingerprints,
          world_size: int = 1) -> _Position:  # fmt: skip
    """Restore a block-wise checkpoint's weights; refuses another run's."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        stage = payload.get("stage")
    except Exception as e:  # torch.load and a damaged payload raise many types
        raise QretrainFileError(
            f"checkpoint {str(path)!r} is unreadable or incomplete ({type(e).__name__}: {e}); "
            "remove it to start fresh"
        ) from e
    if stage != "blocks":
        raise QretrainError(f"checkpoint {str(path)!r} is not a block-wise checkpoint; remove it")
    check_same_run(payload, path, config, fingerprints)
    if payload.get("world_size", 1) != world_size:
        raise QretrainError(f"checkpoint {str(path)!r} was written by "
                            f"{payload.get('world_size', 1)} processes; resume with as many "
                            f"(this run has {world_size})")  # fmt: skip
    state = student.state_dict()
    if not all(isinstance(payload.get(k), int) and not isinstance(payload[k], bool)
               and payload[k] >= 0 for k in ("block", "epoch")):  # fmt: skip
        raise QretrainFileError(f"checkpoint {str(path)!r}: block and epoch must be ints >= 0; "
                                "remove it to start fresh")  # fmt: skip
    if not isinstance(payload.get("params"), dict):
        raise QretrainFileError(f"checkpoint {str(path)!r}: params must map names to tensors; "
                                "remove it to start fresh")  # fmt: skip
    for name, value in payload["params"].items():  # no broadcasting, no NaN
        if name not in state:
            raise QretrainFileError(f"checkpoint {str(path)!r} names {name!r}, which this "
                                    "model does not have; remove it to start fresh")  # fmt: skip
        check_tensor(value, state[name], f"params {name!r}", path)
    with torch.no_grad():
        for name, value in payload["params"].items():
            state[name].copy_(value)
    if tuner is not None:
        tuner.load_state(payload["codebooks"])
    return _Position(payload["block"], payload["epoch"], payload["history"], payload["losses"],
                     payload["optimizer"], payload.get("rounding"))  # fmt: skip
