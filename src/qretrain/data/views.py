"""Augmented views of a few hundred unlabeled images, for label-free retraining.

With a small pool, how many different inputs the teacher is asked about matters
more than how many files there are. A view is a random resized crop of one image
(area 25-100%, aspect 3:4 to 4:3) fitted to the model's contract, flipped half of
the time, and with probability ``mix`` mixed with a crop of a second image: by
mixup (a convex blend, weight uniform in [0.2, 0.8]) or cutmix (a box of the second
image pasted in), each half of the time. View i is a function of (seed, i) alone, so
the views are a fixed dataset: the teacher runs on each view once and retraining
caches its outputs as for any other set. Views carry no labels.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
import torchvision.transforms.functional as TF

from qretrain.data.sets import NO_LABEL, ImageSet
from qretrain.errors import QretrainError

MIN_AREA, MAX_AREA = 0.25, 1.0
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


@dataclass
class AugmentedViews(ImageSet):
    """``views`` views of ``base``'s images (see the module doc)."""

    base: ImageSet | None = field(default=None, repr=False)
    views: int = 0
    seed: int = 0
    mix: float = 0.5

    def __post_init__(self) -> None:
        if self.base is None or len(self.base) == 0:
            raise QretrainError("augmented views need a dataset with at least one image")
        if not isinstance(self.views, int) or self.views < 1:
            raise QretrainError(f"views must be an int >= 1; got {self.views!r}")
        if not 0 <= self.mix <= 1:
            raise QretrainError(f"mix must be in [0, 1]; got {self.mix!r}")
        if self.base.contract is None:
            raise QretrainError("augmented views need an input contract to fit crops to")

    def __len__(self) -> int:
        return self.views

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.views:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        image = self._crop(g)
        if float(torch.rand((), generator=g)) < self.mix:
            other = self._crop(g)
            if float(torch.rand((), generator=g)) < 0.5:
                weight = 0.2 + 0.6 * float(torch.rand((), generator=g))
                image = weight * image + (1 - weight) * other
            else:
                image = _cutmix(image, other, g)
        return image.contiguous(), NO_LABEL

    def _crop(self, g: torch.Generator) -> torch.Tensor:
        """A random resized crop of a random image, flipped half of the time, fitted."""
        raw = self.base.raw(int(torch.randint(len(self.base), (), generator=g)))
        height, width = raw.shape[-2:]
        area = (
            height * width * (MIN_AREA + (MAX_AREA - MIN_AREA) * float(torch.rand((), generator=g)))
        )
        ratio = math.exp(
            LOG_RATIO[0] + (LOG_RATIO[1] - LOG_RATIO[0]) * float(torch.rand((), generator=g))
        )
        h = min(height, max(1, round(math.sqrt(area / ratio))))
        w = min(width, max(1, round(math.sqrt(area * ratio))))
        top = int(torch.randint(height - h + 1, (), generator=g))
        left = int(torch.randint(width - w + 1, (), generator=g))
        contract = self.base.contract
        side = contract.resize or contract.size
        crop = TF.resized_crop(raw, top, left, h, w, [side, side], antialias=True)
        if float(torch.rand((), generator=g)) < 0.5:
            crop = crop.flip(-1)
        return contract.fit(crop)

    def _content(self) -> bytes:
        return hashlib.sha256(
            f"{self.base.fingerprint()} views={self.views} seed={self.seed} mix={self.mix}".encode()
        ).digest()

    def describe(self) -> str:
        return (f"{self.views} augmented views (seed {self.seed}, mix {self.mix}) of "
                f"{self.base.describe()}")  # fmt: skip


def _cutmix(image: torch.Tensor, other: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``image`` with a box of ``other`` pasted in: side fraction uniform in [0.3, 0.7]."""
    height, width = image.shape[-2:]
    side = 0.3 + 0.4 * float(torch.rand((), generator=g))
    h, w = max(1, round(height * side)), max(1, round(width * side))
    top = int(torch.randint(height - h + 1, (), generator=g))
    left = int(torch.randint(width - w + 1, (), generator=g))
    out = image.clone()
    out[..., top : top + h, left : left + w] = other[..., top : top + h, left : left + w]
    return out


def augmented(base: ImageSet, views: int, seed: int = 0, mix: float = 0.5) -> AugmentedViews:
    return AugmentedViews(f"{base.name} (views)", None, base.contract, base=base, views=views,
                          seed=seed, mix=mix)  # fmt: skip
