"""Reference classifiers for 28x28 grayscale input (Fashion-MNIST sized).

Small stand-ins for the seed's two case studies that this machine can train and
retrain to completion:

- ``vgg_small``: plain conv blocks, then fully connected layers holding most of the
  parameters, as VGG-16's do;
- ``resnet_small``: a stem, residual stages of basic blocks with batch norm, global
  pooling and one linear layer, as ResNet-50 has.

Both are importable specs (``qretrain.zoo:vgg_small``) and carry their input contract.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from qretrain.errors import QretrainError
from qretrain.models import forms
from qretrain.models.contract import InputContract
from qretrain.models.specs import Builder, register_builder


class VGGSmall(nn.Module):
    """conv(w) conv(w) pool conv(2w) conv(2w) pool -> fc(hidden) fc(hidden) fc(classes)."""

    def __init__(self, num_classes: int = 10, width: int = 32, hidden: int = 512):
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(1, width), *conv(width, width), nn.MaxPool2d(2),
            *conv(width, 2 * width), *conv(2 * width, 2 * width), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) -> logits (N, num_classes)."""
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetSmall(nn.Module):
    """stem conv -> stages of basic blocks (widths w, 2w, 4w) -> avg pool -> fc."""

    def __init__(self, num_classes: int = 10, width: int = 16, blocks: int = 2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            layers = [BasicBlock(cin, cout, 1 if i == 0 else 2)]
            layers += [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) -> logits (N, num_classes)."""
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def vgg_small(num_classes: int = 10, width: int = 32, hidden: int = 512) -> VGGSmall:
    return VGGSmall(num_classes, width, hidden)


def resnet_small(num_classes: int = 10, width: int = 16, blocks: int = 2) -> ResNetSmall:
    return ResNetSmall(num_classes, width, blocks)


# Fashion-MNIST's pixel mean and standard deviation.
vgg_small.contract = resnet_small.contract = InputContract(1, 28, (0.2860,), (0.3530,))

# The factories ``qretrain.zoo:NAME`` names; files and records may name these only.
FACTORIES = {"vgg_small": vgg_small, "resnet_small": resnet_small}


@register_builder(r"qretrain\.zoo:(?P<name>\w+)", forms.ZOO)
def _zoo(match: re.Match[str]) -> Builder:
    factory = FACTORIES.get(match["name"])
    if factory is None:
        raise QretrainError(
            f"qretrain.zoo has no model {match['name']!r}; known: {', '.join(FACTORIES)}"
        )
    return Builder(factory, factory.contract)
