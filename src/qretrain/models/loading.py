"""Models from specs or files, and state dicts read without unpickling objects."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qretrain.errors import QretrainError
from qretrain.models.contract import InputContract
from qretrain.models.fits import check_contract_fits
from qretrain.models.specs import Origin, make_builder

# File suffix -> loader(path, trust_code=...): storage registers ".h5" (models is the
# bottom layer, so it cannot import storage). The module that registers a suffix's
# loader is imported on the first such file, so a fresh ``load_model("x.h5")`` works.
_FILE_LOADERS: dict[str, Callable[..., nn.Module]] = {}
_FILE_PROVIDERS = {".h5": "qretrain.storage.h5", ".hdf5": "qretrain.storage.h5"}


def register_file_loader(*suffixes: str):
    """Decorator: files ending in ``suffixes`` load through the decorated function."""

    def decorate(loader):
        for suffix in suffixes:
            _FILE_LOADERS[suffix] = loader
        return loader

    return decorate


def load_model(spec: str | Path, weights: str | Path | None = None, *,
               contract: InputContract | dict | None = None, origin: Origin = Origin.USER,
               trust_code: bool = False, **kwargs: Any) -> nn.Module:  # fmt: skip
    """A model from a spec or a qretrain ``.h5`` file, optionally with a state dict.

    ``weights`` is a ``.pth`` state dict, read with ``torch.load(weights_only=True)``
    (never unpickled as arbitrary objects), or a ``.safetensors`` file. ``kwargs``
    go to the architecture's builder (``num_classes=10``); ``contract`` states the
    input the weights were trained with, whole (an ``InputContract``) or in part
    (``{"size": 64, "mean": [...], "std": [...]}``, the rest from the architecture's
    documented contract, with a warning naming what was guessed). Both are stored
    with the model, so its files reopen with them. ``origin`` says where ``spec``
    was read (see ``qretrain.models.specs.Origin``); code named anywhere but by the
    user runs only with ``trust_code=True``, and so does code named inside a file.
    """
    suffix = Path(str(spec)).suffix
    if suffix not in _FILE_LOADERS and suffix in _FILE_PROVIDERS:
        importlib.import_module(_FILE_PROVIDERS[suffix])
    loader = _FILE_LOADERS.get(suffix)
    if loader is not None:
        if kwargs or contract is not None:
            raise QretrainError(
                f"{spec} is a model file, which states its own architecture and input "
                "contract: keyword arguments and input facts apply to model specs only"
            )
        model = loader(spec, trust_code=trust_code)
        check_contract_fits(model, repr(str(spec)))  # stated apart, so they may not agree
    else:
        model = make_builder(str(spec), kwargs, origin, trust_code, contract=contract,
                             own_weights=weights is not None)()  # fmt: skip
    if weights is not None:
        load_state_dict_file(model, weights)
    return model.eval()


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a ``.pth`` state dict safely into ``model``, with errors that name keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for bad or unsafe pickles
            raise QretrainError(
                f"cannot read {str(path)!r} as a state dict with weights_only=True "
                f"(qretrain never unpickles arbitrary objects): {e}"
            ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise QretrainError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    check_fits(model, state, repr(str(path)))
    model.load_state_dict(state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise QretrainError(
            f"reading {str(path)!r} needs safetensors: pip install safetensors"
        ) from e
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise QretrainError(f"cannot read {str(path)!r} as a safetensors file: {e}") from e


def check_fits(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """Raise QretrainError listing missing, unexpected and mis-shaped tensors, if any.

    ``state`` maps names to tensors or to shapes (tuples), so a file's declared
    shapes can be checked before anything is decoded.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {_shape(state[k])} (model: {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and _shape(state[k]) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", misshaped)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise QretrainError(f"{source} does not fit the architecture: " + "; ".join(problems)
                            + _classes_hint(misshaped, state, expected))  # fmt: skip


def _classes_hint(misshaped: list[str], state: dict[str, Any], expected: dict[str, Any]) -> str:
    """When only the classifier's outputs differ, name the class count to give."""
    names = [m.split(" ")[0] for m in misshaped]
    if not names or len(names) > 2 or len({n.rsplit(".", 1)[0] for n in names}) != 1:
        return ""
    counts = {_shape(state[n])[0] for n in names} if all(_shape(state[n]) for n in names) else set()
    same_rest = all(_shape(state[n])[1:] == tuple(expected[n].shape)[1:] for n in names)
    if len(counts) != 1 or not same_rest:
        return ""
    n = counts.pop()
    return f" (its classifier has {n} outputs: pass --num-classes {n}; Python: num_classes={n})"


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
