"""What a model expects as input: channels, size, resizing and normalisation.

Datasets fit their images to a contract, so a user never repeats a model's
preprocessing: ``fit`` turns a float image (C, H, W) in [0, 1] into what the model
wants.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from qretrain._memory import BYTES_PER_PIXEL, pixel_limit, suggest
from qretrain.errors import QretrainError
from qretrain.models.names import FACTS, INTERPOLATIONS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
# Pixels per side of a model's input. The largest a real classifier takes: 600
# (torchvision's EfficientNet-B7), 800 (timm's EfficientNet-L2); 1024 leaves room.
# A file states its contract, and a forward pass holds activations in proportion to
# its area: at 4096 one image of a small convolutional net took 2.4 GB.
MAX_SIZE = 1024
BT601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights, as PIL's convert("L")
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputContract:
    """Images become (channels, size, size) tensors, normalised by mean and std.

    ``resize``: the shorter side is first resized to this, then the centre ``size``
    x ``size`` crop is taken; None resizes straight to size. ``interpolation``:
    ``bilinear`` or ``bicubic`` (antialiased), as the model's training used.
    """

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise QretrainError(f"channels must be 1 or 3; got {self.channels}")
        if not 1 <= self.size <= MAX_SIZE:
            raise QretrainError(f"size must be an int in [1, {MAX_SIZE}] (pixels per side; no "
                                f"classifier takes more); got {self.size}")  # fmt: skip
        if self.resize is not None and not self.size <= self.resize <= 2 * MAX_SIZE:
            raise QretrainError(
                f"resize must be None or in [size, {2 * MAX_SIZE}]; got {self.resize}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise QretrainError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                                f"got {self.interpolation!r}")  # fmt: skip
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise QretrainError("mean and std need one value per channel")
        if not all(math.isfinite(m) for m in self.mean):
            raise QretrainError(f"mean must be finite; got {self.mean}")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise QretrainError(f"std must be finite and > 0; got {self.std}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def _mode(self) -> TF.InterpolationMode:
        return TF.InterpolationMode(self.interpolation)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["interpolation"] == "bilinear":  # files written before it existed stay the same
            del d["interpolation"]
        return d

    def describe(self) -> str:
        """``64 px (centre crop of 73), mean (0.5, ...), std (...)``: for messages."""
        how = (f"centre crop of {self.resize}, {self.interpolation}" if self.resize is not None
               else f"resized to it, {self.interpolation}")  # fmt: skip
        numbers = lambda values: "(" + ", ".join(f"{v:.4g}" for v in values) + ")"  # noqa: E731
        return (
            f"{self.channels}x{self.size}x{self.size} ({how}), mean {numbers(self.mean)}, "
            f"std {numbers(self.std)}"
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputContract:
        """From ``to_dict``'s form (read from a file: every field is checked)."""
        fields = {"channels", "size", "mean", "std", "resize", "interpolation"}
        if set(d) - fields or not {"channels", "size", "mean", "std"} <= set(d):
            raise QretrainError(f"a contract has the fields {sorted(fields)}; got {sorted(d)}")
        if not all(isinstance(d[k], list) and len(d[k]) <= 3 for k in ("mean", "std")):
            raise QretrainError("contract mean and std must be lists of 1 or 3 numbers")
        return cls(
            channels=_int(d["channels"], "channels"),
            size=_int(d["size"], "size"),
            mean=tuple(_number(v, "mean") for v in d["mean"]),
            std=tuple(_number(v, "std") for v in d["std"]),
            resize=None if d.get("resize") is None else _int(d["resize"], "resize"),
            interpolation=d.get("interpolation", "bilinear"),
        )

    def fit(self, image: torch.Tensor) -> torch.Tensor:
        """image (C, H, W) float in [0, 1], C in {1, 3} -> (channels, size, size)."""
        if image.shape[0] != self.channels:
            if image.shape[0] == 1:
                image = image.expand(3, -1, -1)
            else:  # summed in place: bit-identical to (image * w).sum(0), a third the memory
                weights = torch.tensor(BT601)
                luma = image[0] * weights[0]
                luma += image[1] * weights[1]
                luma += image[2] * weights[2]
                image = luma.unsqueeze(0)
        if self.resize is not None:
            if min(image.shape[-2:]) != self.resize:
                _check_resized(*image.shape[-2:], self.resize)
                image = TF.resize(image, [self.resize], self._mode, antialias=True)
            image = TF.center_crop(image, [self.size, self.size])
        elif tuple(image.shape[-2:]) != (self.size, self.size):
            image = TF.resize(image, [self.size, self.size], self._mode, antialias=True)
        mean = torch.tensor(self.mean).reshape(-1, 1, 1)
        std = torch.tensor(self.std).reshape(-1, 1, 1)
        return ((image - mean) / std).contiguous()


def _check_resized(height: int, width: int, shorter: int) -> None:
    """Refuse to resize a long thin image whose shorter side becomes ``shorter``: a
    1 x 25,000,000 strip would become 256 x 6.4 billion pixels before the crop."""
    longer = int(shorter * max(height, width) / min(height, width))  # as TF.resize sizes it
    limit = pixel_limit()
    if longer * shorter > limit:
        raise QretrainError(
            f"a {width} x {height} image would be {longer:,} x {shorter} pixels once its shorter "
            f"side is resized to the model's {shorter}, more than the {limit:,} qretrain "
            f"allows: crop it nearer to square, or raise the limit (--max-memory SIZE, or "
            f"qretrain.memory_limit(BYTES) in Python, e.g. "
            f"{suggest(longer * shorter * BYTES_PER_PIXEL)})"
        )


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QretrainError(f"contract {what} must be an int; got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QretrainError(f"contract {what} must hold numbers; got {value!r}")
    return float(value)


def imagenet_contract(size: int = 224, resize: int | None = 256) -> InputContract:
    return InputContract(3, size, IMAGENET_MEAN, IMAGENET_STD, resize)


def settle_contract(base: InputContract | None, stated: InputContract | dict[str, Any] | None
                    ) -> tuple[InputContract | None, list[str]]:  # fmt: skip
    """The contract a model is used with, and which of its facts were not stated.

    ``stated`` is the user's: a whole ``InputContract``, or some of its fields as a
    mapping (``{"size": 64, "mean": [...], "std": [...]}``), the rest taken from
    ``base`` (the architecture's documented contract). A new size without a resize
    keeps ``base``'s ratio of resize to crop. Returns (contract, the names of
    ``size``, ``mean``, ``std``, ``resize`` that came from ``base``).
    """
    if isinstance(stated, InputContract):
        return stated, []
    if stated is None:
        return base, ([] if base is None else ["size", "mean", "std", "resize"])
    if not isinstance(stated, dict) or set(stated) - set(FACTS):
        raise QretrainError(f"a model's input facts are some of {', '.join(FACTS)}; got {stated!r}")
    if base is None and not {"size", "mean", "std"} <= set(stated):
        raise QretrainError("this model documents no input contract: state its size, mean and "
                            "std (--input-size, --mean, --std)")  # fmt: skip
    facts = dict(stated)
    if base is not None:
        if "resize" not in facts and "size" in facts and base.resize is not None:
            facts["resize"] = round(facts["size"] * base.resize / base.size)
        for name in FACTS:
            facts.setdefault(name, getattr(base, name))
    facts.setdefault("channels", len(facts["mean"]))
    for name in ("mean", "std"):  # one value stands for every channel
        values = tuple(facts[name])
        facts[name] = values * facts["channels"] if len(values) == 1 else values
    guessed = (
        [] if base is None else [f for f in ("size", "mean", "std", "resize") if f not in stated]
    )
    return InputContract(**facts), guessed
