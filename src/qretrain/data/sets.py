"""Datasets that yield images already fitted to a model's input contract.

Two sources: images held in memory (IDX, .npz, CSV; Fashion-MNIST's 60k images are
47 MB as uint8) and image files decoded on access (folders, ImageNet-sized photos).
Either way ``ds[i]`` is ``(x, y)``: x (C, H, W) float as the model wants it, y the
label or -1 when the set has none.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from qretrain.data.readers import as_nchw, open_image, read_image
from qretrain.errors import QretrainError
from qretrain.models.contract import InputContract

logger = logging.getLogger(__name__)
NO_LABEL = -1


@dataclass
class ImageSet(Dataset):
    """Base: a name, optional labels (N,) int64, and a contract to fit images to."""

    name: str
    labels: torch.Tensor | None
    contract: InputContract | None = None
    skipped: int = 0  # unreadable files left out
    class_names: list[str] | None = field(default=None, repr=False)

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def raw(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.raw(i)
        if self.contract is not None:
            image = self.contract.fit(image)
        return image, int(self.labels[i]) if self.labels is not None else NO_LABEL

    def fingerprint(self) -> str:
        """SHA-256 of the images, labels and contract: equal only for the same data."""
        digest = hashlib.sha256(self._content())
        if self.labels is not None:
            digest.update(self.labels.numpy().tobytes())
        digest.update(repr(self.contract).encode())
        return digest.hexdigest()

    def _content(self) -> bytes:
        raise NotImplementedError

    def describe(self) -> str:
        labels = "labeled" if self.labeled else "unlabeled"
        skipped = f", {self.skipped} unreadable skipped" if self.skipped else ""
        return f"{self.name}: {len(self)} images, {labels}{skipped}"


@dataclass
class TensorImageSet(ImageSet):
    """Images in memory: uint8 (N, C, H, W), or float in [0, 1]."""

    images: torch.Tensor = None

    def __post_init__(self) -> None:
        _check_labels(self.name, len(self.images), self.labels)

    def __len__(self) -> int:
        return len(self.images)

    def raw(self, i: int) -> torch.Tensor:
        image = self.images[i]
        return image.float() / 255 if image.dtype == torch.uint8 else image

    def _content(self) -> bytes:
        return hashlib.sha256(self.images.contiguous().numpy().tobytes()).digest()

    def subset(self, index: torch.Tensor) -> TensorImageSet:
        labels = self.labels[index] if self.labels is not None else None
        return TensorImageSet(self.name, labels, self.contract, self.skipped, self.class_names,
                              images=self.images[index])  # fmt: skip


@dataclass
class FileImageSet(ImageSet):
    """Image files decoded on access; unreadable ones were dropped when listing."""

    paths: list[Path] = None

    def __post_init__(self) -> None:
        _check_labels(self.name, len(self.paths), self.labels)

    def __len__(self) -> int:
        return len(self.paths)

    def raw(self, i: int) -> torch.Tensor:
        image = read_image(self.paths[i])
        if image is None:
            raise QretrainError(
                f"{self.paths[i]} became unreadable after it was listed (changed while in "
                "use?); list the images again"
            )
        return image

    def _content(self) -> bytes:
        # Paths, sizes and modification times: a changed file changes the fingerprint
        # without reading every image.
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.paths]
        return repr(stats).encode()

    def subset(self, index: torch.Tensor) -> FileImageSet:
        labels = self.labels[index] if self.labels is not None else None
        return FileImageSet(self.name, labels, self.contract, self.skipped, self.class_names,
                            paths=[self.paths[i] for i in index.tolist()])  # fmt: skip


@dataclass
class JoinedImageSet(ImageSet):
    """Several sets one after the other (say a pool and synthetic inputs), each fitted
    by its own contract; labeled only when every part is."""

    parts: list[ImageSet] = None

    def __post_init__(self) -> None:
        if not self.parts:
            raise QretrainError("joining datasets needs at least one; got none")
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} of {len(self)}")
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        x, y = self.parts[part][i - int(self._starts[part])]
        return x, y if self.labels is not None else NO_LABEL

    def _content(self) -> bytes:
        return " ".join(p.fingerprint() for p in self.parts).encode()

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)

    def subset(self, index: torch.Tensor) -> JoinedImageSet:
        """The images at ``index`` (sorted, as ``fit_and_subset`` passes them), each
        part keeping its own contract; parts left without an image drop out."""
        parts = []
        for part, start, end in zip(self.parts, self._starts[:-1], self._starts[1:]):
            local = index[(index >= start) & (index < end)] - int(start)
            if len(local):
                parts.append(part.subset(local))
        return JoinedImageSet(self.name, self.labels[index] if self.labels is not None else None,
                              self.contract, parts=parts)  # fmt: skip


def joined(*parts: ImageSet) -> JoinedImageSet:
    """``parts`` as one set, in order (ds[i] is part 0's images first)."""
    labels = None
    if parts and all(p.labels is not None for p in parts):
        labels = torch.cat([p.labels for p in parts])
    return JoinedImageSet(" + ".join(p.name for p in parts), labels, parts=list(parts))


def tensor_set(name: str, images: np.ndarray, labels: np.ndarray | None) -> TensorImageSet:
    """From an image array (uint8 kept as is, to save memory) and optional labels."""
    t = as_nchw(images)
    if t.dtype != torch.uint8:  # float images: in [0, 1] already, or 0-255
        t = t.float()
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise QretrainError(
                f"{name} holds {bad} non-finite pixel values (NaN or infinite); images must "
                "be finite: fix or drop those images"
            )
        t = t / 255 if t.numel() and t.max() > 1.0 else t
    if len(t) == 0:
        raise QretrainError(f"{name} holds no images")
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)) if labels is not None else None
    return TensorImageSet(name, y, images=t)


def file_set(name: str, paths: list[Path], labels: list[int] | None,
             class_names: list[str] | None = None) -> FileImageSet:  # fmt: skip
    """From image files: each is opened once now, and unreadable ones are skipped."""
    keep, keep_labels, skipped = [], [], 0
    for i, path in enumerate(paths):
        if _readable(path):
            keep.append(path)
            if labels is not None:
                keep_labels.append(labels[i])
        else:
            skipped += 1
    if skipped:
        logger.warning("%s: skipped %d unreadable image file(s)", name, skipped)
    if not keep:
        raise QretrainError(f"{name} holds no readable images ({skipped} unreadable)")
    y = torch.tensor(keep_labels, dtype=torch.int64) if labels is not None else None
    return FileImageSet(name, y, None, skipped, class_names, paths=keep)


def _readable(path: Path) -> bool:
    """Whether the file decodes to the end. ``verify()`` alone passes a truncated JPEG;
    a draft-mode decode (JPEG at 1/8 scale) reads every byte at a fraction of the cost.
    An image larger than qretrain decodes is refused (QretrainError), not skipped: it is
    not broken, and the error says how to proceed."""
    try:
        with open_image(path) as img:
            img.draft(img.mode, (64, 64))
            img.load()
        return True
    except QretrainError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        logger.warning("skipping unreadable image %s: %s", path, e)
        return False


def _check_labels(name: str, n: int, labels: torch.Tensor | None) -> None:
    if labels is not None and len(labels) != n:
        raise QretrainError(f"{name}: {len(labels)} labels for {n} images; the counts must match")


def fit_and_subset(ds: ImageSet, contract: InputContract | None, limit: int | None,
                   seed: int, offset: int = 0) -> ImageSet:  # fmt: skip
    """A deterministic random subset of ``limit`` images (all when None), fitted.

    The subset is images ``offset .. offset + limit`` of a permutation drawn from
    ``seed``: the same seed with offsets 0 and ``limit`` gives two disjoint sets.
    """
    if offset < 0:
        raise QretrainError(f"offset must be >= 0; got {offset}")
    if offset and limit is None:
        raise QretrainError("offset needs a limit: it picks images offset .. offset + limit")
    if limit is not None:
        if limit < 1:
            raise QretrainError(f"limit must be a positive int; got {limit}")
        if offset + limit > len(ds) and offset:
            raise QretrainError(
                f"{ds.name}: offset {offset} + limit {limit} exceeds its {len(ds)} images"
            )
        if limit < len(ds):
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
            ds = ds.subset(order[offset : offset + limit].sort().values)
    ds.contract = contract
    return ds
