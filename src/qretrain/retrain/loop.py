"""``retrain``: win back a clustered model's quality, with or without labels.

Label-free (the seed's method): the student (clustered model) learns to reproduce
the teacher's (original model's) output vectors on unlabeled data. Conventional
(``labels=True``): cross-entropy on the data's labels. Either way clustered tensors
stay on their codebooks, and the teacher's outputs and the student's frozen-prefix
features are computed once and reused every epoch, so an epoch costs only the
trainable tail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from qretrain.cluster.state import clusters_of
from qretrain.data.batches import image_batches
from qretrain.distributed import Ranks
from qretrain.errors import QretrainError
from qretrain.metrics.quality import check_labels
from qretrain.models.fingerprint import model_fingerprint
from qretrain.models.footprint import batch_within_budget
from qretrain.models.specs import get_arch
from qretrain.progress import track
from qretrain.retrain.blocks import plan_blocks, reconstruct
from qretrain.retrain.centroids import CentroidTuner
from qretrain.retrain.checkpoint import load_checkpoint, save_checkpoint
from qretrain.retrain.config import BNStats, Objective, RetrainConfig
from qretrain.retrain.layout import channels_last
from qretrain.retrain.losses import output_loss
from qretrain.retrain.split import split_before_trainable
from qretrain.retrain.trainable import trainable_names
from qretrain.storage.fold import is_folded

logger = logging.getLogger(__name__)
MONITOR_MAX = 500  # images held out to monitor agreement when no val_data is given
# Without val_data the block stage scores its own first images, for the record only
# (nothing is chosen by it): 128 images cost 3 passes of 128, where 500 took ~100 s
# of a 240 s EfficientNet-Lite0 run.
BLOCK_MONITOR_MAX = 128


@dataclass
class RetrainResult:
    model: nn.Module  # the student, at its best epoch
    record: dict  # settings, per-epoch history, times, quality before and after

    def to_dict(self) -> dict:
        return self.record

    def summary(self) -> str:
        r = self.record
        text = (f"{r['monitor_metric']} on {r['monitor']}: {r['quality_before']:.2%} -> "
                f"{r['quality_after']:.2%}; {r['wall_seconds']:.1f} s")  # fmt: skip
        if "guard" in r:
            text += f"\nguard: {r['guard']} (best on the guard data: {r['val_best']:.2%})"
        return text


@dataclass
class _Cached:
    """Per input: what the trainable part consumes, the teacher's logits, the label."""

    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor | None
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> _Cached:
        targets = self.targets[index] if self.targets is not None else None
        return _Cached(tuple(t[index] for t in self.inputs), targets, self.labels[index])


def retrain(
    student: nn.Module,
    teacher: nn.Module | None,
    data: Dataset,
    config: RetrainConfig = RetrainConfig(),
    *,
    val_data: Dataset | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> RetrainResult:
    """Retrain ``student`` in place; returns it (best epoch) and the run record.

    ``val_data`` (labeled or not) guards the run: it is scored before training and
    after every epoch (accuracy with labels, agreement with the teacher without), and
    the best epoch is kept, never worse than the clustered start. ``checkpoint``
    saves after every epoch; ``resume`` continues from it and ends where an
    uninterrupted run with the same seed would. ``rank``/``world_size``: this
    process's place under torchrun (torch.distributed initialized, see
    ``distributed.init_from_env``): each process caches and trains on its own shard
    of ``data``; output matching keeps the models identical with DistributedDataParallel
    (``batch_size`` per process), block-wise reconstruction by summing each step's
    gradients over the processes (a step takes ``batch_size`` x world_size images, and
    ends as one process's with that batch would, up to float rounding).
    """
    start = time.perf_counter()
    _check_inputs(student, teacher, data, config)
    fingerprints = _fingerprints(student, teacher, data, val_data) if checkpoint else {}
    ranks = Ranks(rank, world_size)
    student.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    with channels_last(student, teacher):
        blocks = None
        if config.objective is not Objective.OUTPUT:
            blocks = _blocks_stage(student, teacher, data, config, val_data, checkpoint, resume,
                                   device, progress and ranks.leader, fingerprints,
                                   ranks)  # fmt: skip
        if config.objective is Objective.BLOCKS and "fallback" not in blocks:
            return _blocks_result(student, blocks, config, len(data), start, ranks)
        result = _retrain(student, teacher, ranks.shard(data), _output_config(config), val_data,
                          checkpoint, resume, device, progress and ranks.leader, ranks, start,
                          fingerprints)  # fmt: skip
    if blocks is not None:
        result.record["blocks"] = blocks
    return result


def _blocks_result(student, blocks: dict, config: RetrainConfig, images: int,
                   start: float, ranks: Ranks) -> RetrainResult:  # fmt: skip
    """The record of a blocks-only run, in the form of an output-matching one."""
    record = {
        "config": config.to_dict(),
        "trainable": blocks.pop("trainable"),
        "world_size": ranks.world_size,
        "train_images": images,
        "monitor": blocks["monitor"],
        "monitor_metric": blocks["monitor_metric"],
        "quality_before": blocks["quality_start"],
        "quality_after": blocks["quality_start"] if blocks.get("restored")
        else blocks["quality_blocks"],
        "history": [],
        "cached_prefix": False,
        "cache_seconds": 0.0,
        "wall_seconds": time.perf_counter() - start,
        "blocks": blocks,
    }  # fmt: skip
    if "guard" in blocks:
        record["guard"] = blocks["guard"]
        record["val_best"] = max(blocks["quality_start"], blocks["quality_blocks"])
    student.eval()
    return RetrainResult(student, record)


def _blocks_stage(student, teacher, data, config: RetrainConfig, val_data, checkpoint, resume,
                  device, progress, fingerprints, ranks: Ranks) -> dict:  # fmt: skip
    """Block-wise reconstruction (``retrain.blocks``), guarded like an epoch: with
    ``val_data``, a result worse than the clustered start is undone (scored over all
    ranks' shards of it, so every rank keeps or undoes alike)."""
    plan = plan_blocks(student, teacher)
    if plan is None:
        epochs = _output_config(config).epochs
        message = (f"cannot split {type(student).__name__} into blocks (fx cannot trace it, or "
                   f"fewer than two blocks hold clustered tensors): output matching instead, "
                   f"{epochs} epoch{'s' * (epochs != 1)}"
                   f"{' (block_epochs)' if config.objective is Objective.BLOCKS else ''}")  # fmt: skip
        logger.warning(message)
        return {"fallback": message}
    monitor = (
        val_data if val_data is not None else Subset(data, range(min(len(data), BLOCK_MONITOR_MAX)))
    )
    scored = len(monitor)
    monitor = _cache(student, teacher, ranks.shard(monitor, equal=False), None, config, device,
                     False)  # fmt: skip
    start_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    start_clusters = dict(clusters_of(student))
    before = _quality(student, monitor, device, ranks)
    example = get_arch(student).example_input() if get_arch(student) is not None else None
    trainable = set(trainable_names(student, config.trainable, example))
    path = block_checkpoint(checkpoint) if checkpoint is not None else None
    record = reconstruct(student, teacher, plan, data, config, trainable, device=device,
                         progress=progress, checkpoint=path, resume=resume,
                         fingerprints=fingerprints, ranks=ranks)  # fmt: skip
    after = _quality(student, monitor, device, ranks)
    record.update(
        quality_start=before,
        quality_blocks=after,
        trainable=sorted(trainable),
        monitor_metric=_metric_name(monitor),
        monitor="val_data" if val_data is not None else f"the first {scored} images",
    )
    if val_data is not None:
        if after < before:
            student.load_state_dict(start_state)
            clusters_of(student).clear()
            clusters_of(student).update(start_clusters)
            record["guard"] = ("block-wise retraining never beat the clustered start on "
                               "val_data; the start is kept")  # fmt: skip
        else:
            record["guard"] = "the block-wise result is kept"
        record["restored"] = after < before
    return record


def _output_config(config: RetrainConfig) -> RetrainConfig:
    """The settings of the output-matching stage. With objective ``blocks`` there is
    one only when the model cannot be split (the fallback): it runs ``block_epochs``
    passes, as many as each block would have had, not ``epochs``, which that
    objective does not use."""
    if config.objective is Objective.BLOCKS:
        return replace(config, epochs=config.block_epochs)
    return config


def block_checkpoint(checkpoint: str | Path) -> Path:
    """Where the block stage of a run checkpointing to ``checkpoint`` writes its own."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.blocks{checkpoint.suffix}")


def _fingerprints(student, teacher, data, val_data) -> dict[str, str]:
    """What a checkpoint must have started from to be resumed by this run."""
    prints = {"student": model_fingerprint(student)}
    if teacher is not None:
        prints["teacher"] = model_fingerprint(teacher)
    for what, ds in (("data", data), ("val_data", val_data)):
        if ds is not None:
            prints[what] = ds.fingerprint() if hasattr(ds, "fingerprint") else f"{len(ds)} images"
    return prints


def _retrain(student, teacher, data, config, val_data, checkpoint, resume, device, progress,
             ranks: Ranks, start, fingerprints) -> RetrainResult:  # fmt: skip
    arch = get_arch(student)
    example = arch.example_input() if arch is not None else None
    names = trainable_names(student, config.trainable, example)
    tuner = CentroidTuner(student) if config.tune_centroids else None
    grad_names = set(names) | (set(tuner.names) if tuner else set())
    for name, p in student.named_parameters():
        p.requires_grad_(name in grad_names)
    split = None
    if config.cache and config.bn_stats is BNStats.FROZEN and not config.tune_centroids:
        split = split_before_trainable(student, grad_names)
        if split is not None and not _per_sample(split, data, device):
            split = None
    head = split.suffix if split is not None else student

    cache_start = time.perf_counter()
    cached = _cache(student, teacher, data, split, config, device, progress)
    val = _cache(student, teacher, val_data, split, config, device, False) if val_data else None
    monitor, train = (val, cached) if val is not None else _held_out(cached, config.seed)
    cache_seconds = time.perf_counter() - cache_start

    params = [p for n, p in student.named_parameters() if n in names]
    optimizer = torch.optim.Adam(
        params + (tuner.parameters() if tuner else []), config.lr, weight_decay=config.weight_decay
    )
    history: list[dict] = []
    before = _quality(head, monitor, device, ranks)  # with val_data, the monitor is val_data
    best = None  # the guard's best epoch so far (epoch 0: the clustered start)
    if val is not None:
        best = {"epoch": 0, "score": before, "state": _snapshot(student, names, tuner)}
    first_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        first_epoch, history, best = load_checkpoint(
            checkpoint, student, names, tuner, optimizer, config, ranks.world_size, fingerprints
        )
        logger.info("resuming %s after epoch %d", checkpoint, first_epoch)
    elif resume:
        logger.info("no checkpoint at %s: starting fresh", checkpoint)
    trained = ranks.wrap(head, device)  # DDP averages gradients when several ranks run
    for epoch in range(first_epoch, config.epochs):
        epoch_start = time.perf_counter()
        loss = _train_epoch(trained, student, train, optimizer, tuner, config, epoch, device,
                            progress, ranks)  # fmt: skip
        seconds = time.perf_counter() - epoch_start
        entry = {
            "epoch": epoch + 1,
            "loss": loss,
            "monitor": _quality(head, monitor, device, ranks),
            "seconds": seconds,
            "samples_per_second": len(train) * ranks.world_size / seconds,
        }
        if best is not None and entry["monitor"] > best["score"]:
            best = {"epoch": epoch + 1, "score": entry["monitor"],
                    "state": _snapshot(student, names, tuner)}  # fmt: skip
        history.append(entry)
        logger.info(_describe(entry))
        if checkpoint is not None and ranks.leader:
            save_checkpoint(checkpoint, epoch + 1, student, names, tuner, optimizer, history,
                            best, config, ranks.world_size, fingerprints)  # fmt: skip
        ranks.barrier()
    if best is not None:
        _restore(student, best["state"], tuner)
    if tuner is not None:
        tuner.write_back()
    student.eval()
    after = _quality(head, monitor, device, ranks)
    record = {
        "config": config.to_dict(),
        "trainable": names,
        "world_size": ranks.world_size,
        "train_images": len(train) * ranks.world_size,
        "monitor": "val_data"
        if val_data is not None
        else f"{len(monitor) * ranks.world_size} held-out images",
        "monitor_metric": _metric_name(monitor),
        "quality_before": before,
        "quality_after": after,
        "history": history,
        "cached_prefix": split is not None,
        "cache_seconds": cache_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    if best is not None:
        record["best_epoch"] = best["epoch"]
        record["val_best"] = best["score"]
        record["guard"] = (
            "retraining never beat the clustered start on val_data; the start is kept"
            if best["epoch"] == 0
            else f"epoch {best['epoch']} kept"
        )
    return RetrainResult(student, record)


def _check_inputs(student, teacher, data, config: RetrainConfig) -> None:
    if len(data) == 0:
        raise QretrainError("the retraining data holds no images")
    labels = getattr(data, "labels", None)
    if labels is not None:  # train on, or monitor with, only classes the model has
        check_labels(torch.as_tensor(labels), _classes(student, data), "the retraining data")
    if config.labels:
        if labels is None or (labels < 0).any():
            raise QretrainError(
                "labels=True (conventional retraining) needs labeled data; D has none"
            )
    elif teacher is None:
        raise QretrainError("label-free retraining needs a teacher (the original model)")
    if config.bn_stats is BNStats.UPDATE:
        folded = [name for name, m in student.named_modules() if is_folded(m)]
        if folded:
            raise QretrainError(
                f"bn_stats 'update' needs batch norm as trained, but {folded[0]!r} (and "
                f"{len(folded) - 1} more) was saved folded: retrain with bn_stats 'frozen', "
                "or compress with fold_batchnorm false"
            )
    if teacher is not None:
        s, t = student.state_dict(), teacher.state_dict()
        if s.keys() != t.keys() or any(s[k].shape != t[k].shape for k in s):
            raise QretrainError(
                "teacher and student have different architectures: the student must be a "
                "clustered copy of the teacher"
            )


@torch.no_grad()
def _classes(model: nn.Module, data) -> int:
    """The model's number of outputs, from one image of ``data``."""
    was_training = model.training
    device = next(model.parameters()).device
    try:
        return model.eval()(data[0][0].unsqueeze(0).to(device)).shape[1]
    finally:
        model.train(was_training)


@torch.no_grad()
def _per_sample(split, data, device) -> bool:
    """Whether the prefix yields only per-sample tensors (cacheable image by image).

    fx turns ``x.size(0)`` into a plain int that the suffix reads: such a prefix
    cannot be cached per image, so the model then runs whole every epoch.
    """
    x = torch.stack([data[i][0] for i in range(min(2, len(data)))]).to(device)
    split.prefix.eval()
    ok = all(isinstance(f, torch.Tensor) and f.dim() > 0 and f.shape[0] == len(x)
             for f in split.prefix(x))  # fmt: skip
    if not ok:
        logger.info("the frozen prefix passes non-tensor values on; it is not cached")
    return ok


@torch.no_grad()
def _cache(student, teacher, data, split, config, device, progress) -> _Cached:
    """One pass over the data: prefix features (or inputs), teacher logits, labels."""
    inputs: list[list[torch.Tensor]] = []
    targets, labels = [], []
    if split is not None:
        split.prefix.eval()
    batch = 256
    if len(data):  # larger-than-ordinary inputs (a file's contract): batches within budget
        model = teacher if teacher is not None else student
        batch = batch_within_budget(model, tuple(data[0][0].shape), batch, "caching")
    loader = image_batches(data, batch)
    for x, y in track(loader, "Caching teacher outputs", unit="batches", enabled=progress):
        x = x.to(device)
        features = split.prefix(x) if split is not None else (x,)
        inputs.append([f.cpu() for f in features])
        if teacher is not None:
            targets.append(teacher(x).float().cpu())
        labels.append(y)
    return _Cached(
        tuple(torch.cat(parts) for parts in zip(*inputs)),
        torch.cat(targets) if targets else None,
        torch.cat(labels),
    )


def _held_out(cached: _Cached, seed: int) -> tuple[_Cached, _Cached]:
    """(monitor slice, training part): up to 500 images held out of the training data."""
    n = len(cached)
    if n < 20:  # too few to spare any: monitor on the training images themselves
        return cached, cached
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    held = min(MONITOR_MAX, n // 10)
    return cached.take(order[:held].sort().values), cached.take(order[held:].sort().values)


def _train_epoch(head, student, train: _Cached, optimizer, tuner, config, epoch, device,
                 progress, ranks: Ranks) -> float:  # fmt: skip
    # Seeds depend on (seed, epoch, rank) only, so a resumed run repeats an uninterrupted
    # one; each rank holds its own shard, so one shuffle seed serves all.
    torch.manual_seed(config.seed * 1_000_003 + epoch + 10_007 * ranks.rank)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed + epoch))
    _set_modes(head, student, config)
    total, batches = 0.0, 0
    steps = range(0, len(order), config.batch_size)
    for start in track(steps, f"epoch {epoch + 1}/{config.epochs}", unit="batches",
                       enabled=progress):  # fmt: skip
        batch = train.take(order[start : start + config.batch_size])
        logits = head(*(t.to(device) for t in batch.inputs))
        target = batch.labels if config.labels else batch.targets
        loss = output_loss(logits, target.to(device), config.loss, config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tuner is not None:
            tuner.collect_grads()
        optimizer.step()
        if tuner is not None:
            tuner.apply()
        total += loss.item()
        batches += 1
    total, batches = ranks.sum(total, batches)
    return total / max(batches, 1)


def _set_modes(head: nn.Module, student: nn.Module, config: RetrainConfig) -> None:
    head.train()
    student.train()
    if config.bn_stats is BNStats.FROZEN:
        for m in student.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


@torch.no_grad()
def _quality(head: nn.Module, cached: _Cached | None, device, ranks: Ranks) -> float | None:
    """Accuracy when the slice has labels, else agreement with the teacher's top-1,
    over all ranks' slices."""
    if cached is None or len(cached) == 0:
        return None
    was_training = head.training
    head.eval()
    hits = 0
    for start in range(0, len(cached), 512):
        batch = cached.take(torch.arange(start, min(len(cached), start + 512)))
        pred = head(*(t.to(device) for t in batch.inputs)).argmax(1).cpu()
        if (batch.labels >= 0).all():
            hits += (pred == batch.labels).sum().item()
        else:
            hits += (pred == batch.targets.argmax(1)).sum().item()
    head.train(was_training)
    hits, count = ranks.sum(hits, len(cached))
    return hits / count


def _metric_name(cached: _Cached) -> str:
    return "accuracy" if (cached.labels >= 0).all() else "agreement with the teacher"


def _snapshot(student: nn.Module, names: list[str], tuner) -> dict[str, torch.Tensor]:
    state = student.state_dict()
    keep = {n: state[n].detach().clone() for n in names}
    keep.update({n: b.detach().clone() for n, b in student.named_buffers()})
    if tuner is not None:
        keep.update(tuner.state())
    return keep


def _restore(student: nn.Module, snapshot: dict[str, torch.Tensor], tuner) -> None:
    state = student.state_dict()
    with torch.no_grad():
        for name, value in snapshot.items():
            if name in state:
                state[name].copy_(value)
    if tuner is not None:
        tuner.load_state(snapshot)


def _describe(entry: dict) -> str:
    parts = [f"epoch {entry['epoch']}: loss {entry['loss']:.4f}"]
    if entry["monitor"] is not None:
        parts.append(f"monitor {entry['monitor']:.2%}")
    parts.append(f"{entry['samples_per_second']:.0f} samples/s")
    return ", ".join(parts)
