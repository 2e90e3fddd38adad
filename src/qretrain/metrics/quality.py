"""Quality of a model on a dataset: accuracy with labels, agreement without.

Agreement (share of inputs on which two models' top-1 predictions match) and the
mean KL divergence KL(reference || model) of their softmax outputs need no labels:
they measure how well a compressed model still behaves like its original.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from qretrain.data.batches import image_batches
from qretrain.errors import QretrainError
from qretrain.models.footprint import batch_within_budget
from qretrain.progress import track


@dataclass(frozen=True)
class EvalResult:
    images: int
    top1: float | None  # None without labels
    top5: float | None
    agreement: float | None  # None without a reference
    kl: float | None
    seconds: float

    def to_dict(self) -> dict:
        """Plain values; a non-finite figure (a model that outputs NaN) becomes None, so
        that the JSON form is valid JSON."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in asdict(self).items()}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        parts = [f"{self.images} images"]
        if self.top1 is not None:
            correct = round(self.top1 * self.images)
            parts.append(f"top-1 {self.top1:.2%} ({correct}/{self.images}), top-5 {self.top5:.2%}")
        if self.agreement is not None:
            parts.append(f"agreement {self.agreement:.2%}, mean KL {self.kl:.4g}")
        parts.append(f"{self.images / self.seconds:.1f} img/s" if self.seconds else "")
        return "; ".join(p for p in parts if p)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "Predicting",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, classes) float32 on the CPU and labels (N,) (-1 where unlabeled).

    Inputs larger than ordinary (``models.footprint``) run in smaller batches when
    ``batch_size`` of them would hold more activations than the memory budget."""
    was_training = model.training
    model.eval().to(device)
    logits, labels = [], []
    if len(data):  # the inputs' size follows the model's contract, which a file states
        shape = tuple(data[0][0].shape)
        batch_size = batch_within_budget(model, shape, batch_size, type(model).__name__)
    loader = image_batches(data, batch_size)
    for x, y in track(loader, desc, unit="batches", enabled=progress):
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    model.train(was_training)
    if not logits:
        raise QretrainError("the dataset holds no images")
    logits, labels = torch.cat(logits), torch.cat(labels)
    name = getattr(data, "name", None)
    check_labels(labels, logits.shape[1], f"dataset {name!r}" if name else "the dataset")
    return logits, labels


def check_labels(labels: torch.Tensor, classes: int, what: str) -> None:
    """QretrainError unless every label is a class of the model (0 .. classes - 1) or
    -1 (no label): any other number would silently turn top-1 off (a negative one
    reads as unlabeled) or count as wrong on every image (one past the classes)."""
    bad = (labels < -1) | (labels >= classes)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise QretrainError(
            f"labels of {what} must be classes 0 to {classes - 1} of the model (or -1 for "
            f"none); image {first} has {int(labels[first])}: fix the labels, or use data "
            "made for this model"
        )


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hits.float().mean().item()


def agreement(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return (logits.argmax(1) == reference.argmax(1)).float().mean().item()


def kl_per_input(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KL(softmax(reference) || softmax(logits)) per row of (N, classes) logits, (N,),
    in nats, in the inputs' dtype and differentiable in ``logits``."""
    log_p = torch.log_softmax(reference, dim=1)
    log_q = torch.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def mean_kl(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over inputs of KL(softmax(reference) || softmax(logits)), in nats."""
    return kl_per_input(logits.double(), reference.double()).mean().clamp(min=0).item()


def top1_drop(
    logits: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Top-1 points lost against ``reference`` on the same images, with a paired 95%
    bootstrap interval: (drop, low, high).

    Both models are scored on the same resampled images (``resamples`` draws of N
    images with replacement, seeded), so the interval is that of the difference,
    much narrower than two separate intervals. 500 images move top-1 in 0.2 points.
    """
    ours = (logits.argmax(1) == labels).float()
    base = (reference.argmax(1) == labels).float()
    low, high = _paired_interval(
        len(labels), lambda i: 100 * (base[i].mean(1) - ours[i].mean(1)), resamples, seed
    )
    return 100 * (base.mean() - ours.mean()).item(), low, high


def kl_change(
    before: torch.Tensor,
    after: torch.Tensor,
    reference: torch.Tensor,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Change of the mean KL(reference || model) from ``before`` to ``after`` logits on
    the same images, with a paired 95% bootstrap interval: (change, low, high), in
    nats. Negative: ``after`` is closer to the reference. Per-image KL is continuous,
    so 50-100 images resolve changes that agreement would need thousands for."""
    change = (kl_per_input(after.double(), reference.double())
              - kl_per_input(before.double(), reference.double()))  # fmt: skip
    low, high = _paired_interval(len(change), lambda i: change[i].mean(1), resamples, seed)
    return change.mean().item(), low, high


def _paired_interval(n: int, statistic, resamples: int, seed: int) -> tuple[float, float]:
    """The 95% bootstrap interval of ``statistic``: it maps (resamples, n) indices of
    the same n images (drawn with replacement from ``seed``) to one value per draw."""
    index = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    values = statistic(index)
    return float(values.quantile(0.025)), float(values.quantile(0.975))


def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    reference: nn.Module | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Top-1/top-5 when ``data`` has labels; agreement and KL against ``reference``."""
    start = time.perf_counter()
    logits, labels = predict(model, data, batch_size=batch_size, device=device,
                             progress=progress, desc="Evaluating")  # fmt: skip
    seconds = time.perf_counter() - start
    labeled = bool((labels >= 0).all())
    result = {"top1": None, "top5": None, "agreement": None, "kl": None}
    if labeled:  # predict has checked that every label is one of the model's classes
        result["top1"] = topk_accuracy(logits, labels, 1)
        result["top5"] = topk_accuracy(logits, labels, 5)
    if reference is not None:
        ref_logits, _ = predict(reference, data, batch_size=batch_size, device=device,
                                progress=progress, desc="Reference")  # fmt: skip
        if ref_logits.shape != logits.shape:
            raise QretrainError(
                f"model and reference disagree on outputs: {tuple(logits.shape[1:])} vs "
                f"{tuple(ref_logits.shape[1:])}"
            )
        result["agreement"] = agreement(logits, ref_logits)
        result["kl"] = mean_kl(logits, ref_logits)
    return EvalResult(images=len(labels), seconds=seconds, **result)
