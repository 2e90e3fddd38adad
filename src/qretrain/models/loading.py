"""Models from specs or files, and state dicts read without unpickling objects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qretrain.errors import QretrainError
from qretrain.models.specs import Origin, make_builder

# File suffix -> loader(path, trust_code=...): storage registers ".h5" (models is the
# bottom layer, so it cannot import storage).
_FILE_LOADERS: dict[str, Callable[..., nn.Module]] = {}


def register_file_loader(*suffixes: str):
    """Decorator: files ending in ``suffixes`` load through the decorated function."""

    def decorate(loader):
        for suffix in suffixes:
            _FILE_LOADERS[suffix] = loader
        return loader

    return decorate


def load_model(spec: str | Path, weights: str | Path | None = None, *,
               origin: Origin = Origin.USER, trust_code: bool = False,
               **kwargs: Any) -> nn.Module:  # fmt: skip
    """A model from a spec or a qretrain ``.h5`` file, optionally with a state dict.

    ``weights`` is a ``.pth`` state dict, read with ``torch.load(weights_only=True)``:
    never unpickled as arbitrary objects. ``origin`` says where ``spec`` was read
    (see ``qretrain.models.specs.Origin``); code named anywhere but by the user
    runs only with ``trust_code=True``, and so does code named inside a ``.h5`` file.
    """
    loader = _FILE_LOADERS.get(Path(str(spec)).suffix)
    if loader is not None:
        if kwargs:
            raise QretrainError(f"keyword arguments do not apply to a model file ({spec})")
        model = loader(spec, trust_code=trust_code)
    else:
        model = make_builder(str(spec), kwargs, origin, trust_code)()
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
        raise QretrainError(f"{source} does not fit the architecture: " + "; ".join(problems))


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
