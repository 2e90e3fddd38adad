"""One set of unlabeled images shared out between the recipe's stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from qretrain.data.sets import ImageSet
from qretrain.errors import QretrainError
from qretrain.recipe.settings import RecipeSettings

MIN_HELD_OUT = 50  # the guard's paired KL interval is resolvable from about here


@dataclass(frozen=True)
class Parts:
    """Views of one image set: ``held_out`` is disjoint from the other three, which
    may overlap (the sweep and the plan's verification see retraining images)."""

    held_out: ImageSet  # the guard decides on it; quality is reported on it
    sweep: ImageSet  # each layer clustered alone, measured on these
    verify: ImageSet  # the plan's measured drop
    retrain: ImageSet  # label-free retraining
    source: ImageSet = field(repr=False)  # the set shared out, labels and all
    indices: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def labeled(self, name: str) -> ImageSet:
        """Part ``name`` with the source's labels (the conventional comparison's)."""
        part = self.source.subset(self.indices[name])
        part.contract = self.source.contract
        return part

    def to_dict(self) -> dict[str, Any]:
        return {
            name: len(getattr(self, name)) for name in ("held_out", "sweep", "verify", "retrain")
        }

    def describe(self) -> str:
        return (f"{len(self.held_out)} held out, {len(self.sweep)} to sweep, "
                f"{len(self.verify)} to verify, {len(self.retrain)} to retrain")  # fmt: skip


def split(data: ImageSet, settings: RecipeSettings) -> Parts:
    """Share ``data`` out by a permutation drawn from ``settings.seed``.

    Labels, if the set has any, are withheld from every part: the recipe is
    label-free. Fewer than ``settings.min_images`` images are refused, since neither
    retraining nor the guard could tell anything from them.
    """
    n = len(data)
    if n < settings.min_images:
        raise QretrainError(
            f"{data.name}: {n} image{'s' if n != 1 else ''} are too few to retrain a model and "
            f"check the result; give at least {settings.min_images} unlabeled images of the "
            "kind the model sees (500-2,000 is typical)"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))
    held = min(settings.max_held_out, max(MIN_HELD_OUT, n // 5))
    rest = order[held:]
    sweep = rest[: settings.sweep_images]
    verify = rest[len(sweep) : len(sweep) + settings.verify_images]
    if len(verify) < MIN_HELD_OUT:  # too few left over: verify on the sweep's images
        verify = sweep
    retrain = rest[: settings.retrain_images]
    indices = {name: index.sort().values for name, index in
               (("held_out", order[:held]), ("sweep", sweep), ("verify", verify),
                ("retrain", retrain))}  # fmt: skip
    return Parts(*(_unlabeled(data, index) for index in indices.values()), source=data,
                 indices=indices)  # fmt: skip


def _unlabeled(data: ImageSet, index: torch.Tensor) -> ImageSet:
    part = data.subset(index)
    part.labels = None
    part.contract = data.contract
    return part
