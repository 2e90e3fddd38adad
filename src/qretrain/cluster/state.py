"""The clustering a model carries: codebook and indices per clustered tensor.

``cluster_`` attaches it, ``save`` stores it, ``load`` restores it. It lives in one
attribute on the root module, so the model stays a plain ``nn.Module`` and
``copy.deepcopy`` copies it along.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from qretrain.cluster.tensor import ClusteredTensor

CLUSTERS_ATTR = "_qretrain_clusters"
PLANS_ATTR = "_qretrain_plans"


def clusters_of(model: nn.Module) -> dict[str, ClusteredTensor]:
    """State-dict name -> ClusteredTensor, for every tensor clustered so far."""
    clusters = getattr(model, CLUSTERS_ATTR, None)
    if clusters is None:
        clusters = {}
        object.__setattr__(model, CLUSTERS_ATTR, clusters)
    return clusters


def codebooks(model: nn.Module) -> Mapping[str, ClusteredTensor]:
    """State-dict name -> ClusteredTensor (codebook, sizes, indices, k, method), for
    every clustered tensor of ``model``: a read-only view, the public way to read them."""
    return MappingProxyType(clusters_of(model))


def plans_of(model: nn.Module) -> list[dict[str, Any]]:
    """The dict forms of the plans applied to ``model``, oldest first."""
    plans = getattr(model, PLANS_ATTR, None)
    if plans is None:
        plans = []
        object.__setattr__(model, PLANS_ATTR, plans)
    return plans
