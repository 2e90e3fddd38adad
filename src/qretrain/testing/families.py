"""Architecture families through every stage at tiny input sizes: one table for the
coverage doc (``benchmarks/bench_families.py`` -> docs/ARCHITECTURES.md) and its tests
(``tests/models/test_families.py``).

Each family is built with random weights and 10 classes at a small input size (its
contract says so: ImageNet's mean and std), clustered by ``plan()`` (every conv,
linear and attention weight at k = 16), saved, reopened, retrained block-wise and by
output matching on a few random images, and exported to ONNX, Core ML and
TorchScript. Every stage ends as ``pass`` or as the one line that says why not.

The table builds each family as torchvision's builder does; the tests, where that
costs more than a few seconds on 2 cores, build a *small* one: the same torchvision
classes with fewer and narrower layers (``small_*`` below), the same code paths.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qretrain.apply import cluster_
from qretrain.cluster.state import clusters_of
from qretrain.data.sets import TensorImageSet
from qretrain.errors import QretrainError
from qretrain.export import export
from qretrain.export.check import one_line, probe_inputs
from qretrain.models import build_model
from qretrain.models.contract import IMAGENET_MEAN, IMAGENET_STD, InputContract
from qretrain.retrain import RetrainConfig, retrain
from qretrain.storage import load, save

K = 16


def plan(method: str = "kmeans") -> dict[str, Any]:
    """Every conv, linear and attention weight at k = K (tests take ``linear``, which
    costs nothing to compute: what they test is the architecture, not the method)."""
    return {"method": method, "rules": [{"kinds": ["weight"], "k": K}]}


class Branching(nn.Module):
    """A small CNN whose forward picks a convolution by the image's brightness: fx
    cannot trace it, and an exporter records one branch."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bright, self.dark = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.mean() > 0  # Python control flow on a tensor's value, below
        x = torch.relu(self.stem(x))
        x = self.bright(x) if bright else self.dark(x)
        return self.head(x.mean((2, 3)))


def branching(num_classes: int = 10) -> Branching:
    return Branching(num_classes)


# Small members of the families, for the tests: torchvision's classes, fewer and
# narrower layers (their configurations are objects, so they are built here).
def small_resnet(num_classes: int = 10) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


def small_convnext(num_classes: int = 10) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    widths = [(16, 32), (32, 64), (64, 128), (128, None)]
    return ConvNeXt([CNBlockConfig(a, b, 1) for a, b in widths], num_classes=num_classes)


def small_regnet(num_classes: int = 10) -> nn.Module:
    from torchvision.models.regnet import BlockParams, RegNet

    # from_init_params computes the stage widths with .tolist(), as regnet_x_400mf does:
    # reopening a file must survive that on the meta device.
    params = BlockParams.from_init_params(depth=6, w_0=16, w_a=16.0, w_m=2.0, group_width=8)
    return RegNet(params, num_classes=num_classes, stem_width=16)


def small_efficientnet(num_classes: int = 10) -> nn.Module:
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    stages = [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ]  # efficientnet_b0's, at a quarter of its width and depth
    setting = [MBConvConfig(*s, width_mult=0.25, depth_mult=0.25) for s in stages]
    return EfficientNet(setting, dropout=0.2, num_classes=num_classes)


TEN = {"num_classes": 10}


@dataclass(frozen=True)
class Family:
    """One architecture: how to build it, small, and what it is known not to do."""

    name: str
    spec: str
    kwargs: dict[str, Any] = field(default_factory=lambda: dict(TEN))
    small: tuple[str, dict[str, Any]] | None = None  # (spec, kwargs) for tests; None: as is
    size: int = 32  # pixels per side of the tiny runs
    untraceable: bool = False  # a data-dependent branch: no blocks, exports refused

    @property
    def contract(self) -> InputContract:
        return InputContract(3, self.size, IMAGENET_MEAN, IMAGENET_STD)

    def arch(self, small: bool = False) -> tuple[str, dict[str, Any]]:
        """(spec, kwargs) of the family's model, or of its small member."""
        return self.small if small and self.small is not None else (self.spec, self.kwargs)

    def build(self, small: bool = False, seed: int = 0) -> nn.Module:
        spec, kwargs = self.arch(small)
        torch.manual_seed(seed)
        return build_model(spec, contract=self.contract, **kwargs).eval()


def trusts_code(spec: str) -> bool:
    """Whether reopening a file of ``spec`` needs trust_code (it names code)."""
    return not spec.startswith("torchvision:")


_HERE = "qretrain.testing.families"
_VIT = "torchvision.models.vision_transformer:VisionTransformer"
_SWIN = "torchvision.models.swin_transformer:SwinTransformer"
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("resnet18", "torchvision:resnet18", small=(f"{_HERE}:small_resnet", TEN)),
    Family("mobilenet_v2", "torchvision:mobilenet_v2",
           small=("torchvision:mobilenet_v2", {"width_mult": 0.25, **TEN})),
    Family("mobilenet_v3_small", "torchvision:mobilenet_v3_small",
           small=("torchvision:mobilenet_v3_small", {"width_mult": 0.25, **TEN})),
    Family("efficientnet_b0", "torchvision:efficientnet_b0",
           small=(f"{_HERE}:small_efficientnet", TEN)),
    Family("shufflenet_v2_x0_5", "torchvision:shufflenet_v2_x0_5"),
    Family("squeezenet1_1", "torchvision:squeezenet1_1"),
    Family("densenet121", "torchvision:densenet121", small=(
        "torchvision.models.densenet:DenseNet",
        {"growth_rate": 8, "block_config": [2, 2, 2, 2], "num_init_features": 16, **TEN})),
    Family("convnext_tiny", "torchvision:convnext_tiny", small=(f"{_HERE}:small_convnext", TEN)),
    Family("swin_t", "torchvision:swin_t", small=(_SWIN, {
        "patch_size": [4, 4], "embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2],
        "window_size": [4, 4], **TEN})),  # two blocks a stage: one has shifted windows
    Family("regnet_x_400mf", "torchvision:regnet_x_400mf", small=(f"{_HERE}:small_regnet", TEN)),
    Family("vit_small", _VIT, {
        "image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 64,
        "mlp_dim": 128, **TEN}),
    Family("untraceable_toy", f"{_HERE}:branching", untraceable=True),  # if x.mean() > 0
)}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    stage: str
    ok: bool
    note: str  # what passed (a ratio, a fallback), or the one line saying why not
    seconds: float

    def cell(self) -> str:
        if not self.ok:
            return f"fails: {self.note}"
        return f"pass ({self.note})" if self.note else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "ok": self.ok, "note": self.note,
                "seconds": round(self.seconds, 2)}  # fmt: skip


class Trial:
    """One family through the stages, in order; each stage uses what the one before
    it made (the clustered model, the reopened file)."""

    def __init__(self, family: Family, folder: str | Path, *, images: int = 8,
                 method: str = "kmeans", small: bool = False, seed: int = 0):  # fmt: skip
        self.family, self.folder, self.method = family, Path(folder), method
        self.trust_code = trusts_code(family.arch(small)[0])
        self.teacher = family.build(small, seed)
        g = torch.Generator().manual_seed(seed)
        pixels = torch.randint(0, 256, (images, 3, family.size, family.size), generator=g,
                               dtype=torch.uint8)  # fmt: skip
        self.data = TensorImageSet("random", None, family.contract, images=pixels)
        self.student: nn.Module | None = None
        self.reopened: nn.Module | None = None

    def run(self, stages: tuple[str, ...] | None = None) -> dict[str, Outcome]:
        """``stages`` (default: all, in STAGES order); a stage whose input is missing
        because an earlier one failed fails saying so."""
        stages = stages or tuple(STAGES)
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise QretrainError(f"stages must be among {', '.join(STAGES)}; got {unknown}")
        outcomes = {}
        for name in stages:
            start = time.perf_counter()
            try:
                ok, note = True, STAGES[name](self)
            except QretrainError as e:  # qretrain's own errors are one line already
                ok, note = False, str(e)
            except Exception as e:  # a row of the table: any failure is its one line
                ok, note = False, one_line(e)
            outcomes[name] = Outcome(name, ok, note, time.perf_counter() - start)
        return outcomes

    # The stages. Each returns its note, or raises.

    def compress(self) -> str:
        student = copy.deepcopy(self.teacher)
        cluster_(student, plan(self.method), warn_larger=False)
        saved = save(student, self.folder / "model.h5")
        self.student = student
        return f"{float32_bytes(student) / saved.file_bytes:.2f}x"

    def reopen(self) -> str:
        if self.student is None:
            raise RuntimeError("nothing to reopen: compress failed")
        self.reopened = load(self.folder / "model.h5", trust_code=self.trust_code)
        images = probe_inputs(self.family.contract, 2)
        with torch.no_grad():
            same = torch.allclose(self.reopened(images), self.student(images), rtol=1e-4,
                                  atol=1e-5)  # fmt: skip
        if not same:  # folded batch norm differs by rounding only
            raise RuntimeError("the reopened model computes other outputs than the saved one")
        return ""

    def blocks(self) -> str:
        config = RetrainConfig(objective="blocks", block_epochs=1, batch_size=len(self.data))
        result = self._retrain(config)
        blocks = result.record["blocks"]
        if "fallback" in blocks:
            return "fallback: " + blocks["fallback"].rpartition(": ")[2]
        return f"{len(blocks['blocks'])} blocks"

    def output(self) -> str:
        self._retrain(RetrainConfig(epochs=1, batch_size=len(self.data)))
        return ""

    def _retrain(self, config) -> Any:
        if self.reopened is None:
            raise RuntimeError("nothing to retrain: reopen failed")
        student = copy.deepcopy(self.reopened)
        result = retrain(student, self.teacher, self.data, config, progress=False)
        check_clustered(result.model)
        return result

    def _export(self, fmt: str, suffix: str) -> str:
        if self.reopened is None:
            raise RuntimeError("nothing to export: reopen failed")
        result = export(self.reopened, self.folder / f"model.{suffix}", fmt)
        return f"{result.float32_bytes / result.file_bytes:.2f}x"


STAGES: dict[str, Callable[[Trial], str]] = {
    "compress": Trial.compress,
    "reopen": Trial.reopen,
    "blocks": Trial.blocks,
    "output": Trial.output,
    "onnx": lambda t: t._export("onnx", "onnx"),
    "coreml": lambda t: t._export("coreml", "mlpackage"),
    "torchscript": lambda t: t._export("torchscript", "pt"),
}


def float32_bytes(model: nn.Module) -> int:
    """The model's floating-point tensors as float32."""
    return sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())


def check_clustered(model: nn.Module) -> None:
    """Every clustered tensor still holds at most K values (retraining kept them)."""
    state = model.state_dict()
    for name in clusters_of(model):
        if state[name].unique().numel() > K:
            raise RuntimeError(f"{name} holds more than {K} values after retraining")
