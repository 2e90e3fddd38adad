"""``cluster_(model, plan)``: cluster a model's tensors in place, as a plan says."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from qretrain.cluster.options import Granularity, Method
from qretrain.cluster.report import ClusterReport, TensorRecord
from qretrain.cluster.state import clusters_of, plans_of
from qretrain.cluster.tensor import ClusteredTensor, _cluster_many, check_values
from qretrain.apply.importance import fisher_importance
from qretrain.errors import QretrainError
from qretrain.models.layers import get_tensor
from qretrain.models.specs import get_arch
from qretrain.progress import track
from qretrain.plan import Decision, Plan

logger = logging.getLogger(__name__)


def cluster_(
    model: nn.Module,
    plan: Plan | dict | str | Path,
    *,
    example_input: torch.Tensor | None = None,
    data: Dataset | None = None,
    progress: bool = False,
    warn_larger: bool = True,
) -> ClusterReport:
    """Replace the tensors ``plan`` selects by their centroid values, in place.

    The model stays a plain ``nn.Module`` that runs as before; the codebooks and
    indices ride along on it for ``qretrain.save``. Everything is validated before
    the first tensor changes, so a bad plan or bad weights leave the model untouched.
    ``example_input`` (N, C, H, W) numbers layers in forward order; by default it
    comes from the model's recorded architecture when that knows its input shape.
    ``data``: unlabeled images, needed by rules with method ``sensitive-kmeans``
    (each weight's Fisher information: ``compress.importance``). ``warn_larger``:
    warn when clustering makes a tensor larger on disk than float32 (a plan worth
    changing; baselines that cluster every layer on purpose turn it off).

    Returns a report covering every state-dict tensor: clustered, or why not.
    """
    plan = Plan.coerce(plan)
    if example_input is None:
        arch = get_arch(model)
        example_input = arch.example_input() if arch is not None else None
    decisions = plan.resolve(model, example_input)
    chosen = [d for d in decisions if d.choice is not None]
    _validate(model, chosen)
    sensitive = [d.info.name for d in chosen if d.choice.method is Method.SENSITIVE]
    importance = {}
    if sensitive:
        if data is None:
            raise QretrainError(
                f"{len(sensitive)} tensor(s) use method 'sensitive-kmeans', which weighs each "
                f"weight by its Fisher information on data ({sensitive[0]}, ...): give data (compress "
                "--data D, cluster_(..., data=...)); nothing was changed"
            )
        importance = fisher_importance(model, data, sensitive, seed=plan.seed)
    clusters = clusters_of(model)
    unpaired = []  # pairs asked for, where the output channels do not pair up
    for d in track(chosen, "Clustering", unit="tensors", enabled=progress):
        tensor = get_tensor(model, d.info.name)
        k = d.choice.k  # the plan checked it; _validate checked the tensor
        clustered, decoded = _cluster_many(tensor, [k], d.choice.method, d.choice.granularity,
                                           plan.seed, importance.get(d.info.name))[k]  # fmt: skip
        with torch.no_grad():
            tensor.copy_(decoded)
        clusters[d.info.name] = clustered
        if d.choice.granularity is Granularity.PAIRS and clustered.vector == 1:
            unpaired.append(d.info.name)
        logger.debug("clustered %s to %d values", d.info.name, clustered.sizes.max().item())
    if unpaired:
        logger.info("%d tensor(s) of granularity 'pairs' have no pairs of output channels (one "
                    "dimension, or an odd first one) and got one codebook of k values each (%s)",
                    len(unpaired), ", ".join(unpaired[:3]))  # fmt: skip
    plans_of(model).append(plan.to_dict())
    if warn_larger:
        _warn_if_larger(chosen, clusters)
    return _report(decisions, clusters)


def _warn_if_larger(chosen: list[Decision], clusters: dict[str, ClusteredTensor]) -> None:
    """Say which tensors take more bytes clustered than as float32 (tiny kernels at a
    large k: the codebook outweighs the indices), so the plan can leave them out."""
    larger = [(d.info.name, clusters[d.info.name].packed_nbytes(), d.info.numel * 4)
              for d in chosen if clusters[d.info.name].packed_nbytes() > d.info.numel * 4]  # fmt: skip
    if larger:
        name, packed, raw = larger[0]
        logger.warning(
            "%d clustered tensor(s) take more bytes than as float32 (%s: %d bytes of indices "
            "and codebook against %d): give them k: null in the plan, or a smaller k",
            len(larger),
            name,
            packed,
            raw,
        )


def _validate(model: nn.Module, chosen: list[Decision]) -> None:
    errors = []
    for d in chosen:
        tensor = get_tensor(model, d.info.name)
        if d.choice.granularity is Granularity.PAIRS and d.choice.method is not Method.KMEANS:
            errors.append(f"{d.info.name}: granularity 'pairs' clusters with method 'kmeans' "
                          f"only; got {d.choice.method.value!r}")  # fmt: skip
            continue
        if tensor.dtype != torch.float32:
            errors.append(
                f"{d.info.name} is {tensor.dtype}; qretrain clusters float32 models "
                "(call model.float() first)"
            )
            continue
        try:
            check_values(tensor, d.info.name)
        except QretrainError as e:
            errors.append(str(e))
    if errors:
        raise QretrainError("nothing was changed:\n" + "\n".join(errors))


def _report(decisions: list[Decision], clusters: dict[str, ClusteredTensor]) -> ClusterReport:
    """Records for every tensor; earlier clusterings of the model count as clustered."""
    records = []
    for d in decisions:
        info, c = d.info, clusters.get(d.info.name)
        common = dict(
            name=info.name,
            kind=info.kind.value if info.kind else None,
            layer=info.layer,
            shape=info.shape,
            numel=info.numel,
            original_bytes=info.nbytes,
        )
        if c is None:
            records.append(
                TensorRecord(**common, clustered=False, reason=d.reason,
                             bits_per_weight=info.dtype.itemsize * 8, stored_bytes=info.nbytes)
            )  # fmt: skip
            continue
        stored = c.packed_nbytes()
        records.append(
            TensorRecord(
                **common,
                clustered=True,
                reason=d.reason if d.choice is not None else "clustered earlier",
                k=c.k,
                k_used=int(c.sizes.max()),
                method=c.method.value,
                granularity=c.granularity.value,
                sq_error=c.sq_error,
                bits_per_weight=stored * 8 / info.numel,
                stored_bytes=stored,
            )
        )
    return ClusterReport(tuple(records))
