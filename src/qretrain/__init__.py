"""qretrain: make pretrained PyTorch classifiers small by weight clustering, and win
their accuracy back without labels.

    model = qretrain.load_model("efficientnet-lite0")
    result = qretrain.compress(model, "my-unlabeled-images/", target="7x")
    result.save("lite0-7x.h5")
    print(result.summary())

``compress`` is the measured recipe in one call; beneath it, the steps stay public:
``analyze``, ``auto_plan``, ``cluster_``, ``retrain``, ``save``, ``load``, ``export``.

The names below load on first use (PEP 562), so ``import qretrain`` imports nothing
but the standard library: ``python -m qretrain`` can drop the working folder from
``sys.path`` before any third-party module is imported (``qretrain.__main__``), and
the command line answers ``--help`` without loading torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from qretrain._version import __version__ as __version__

# public name -> the module that defines it
_EXPORTS = {
    "AnalyzeSettings": "qretrain.analysis",
    "Sweep": "qretrain.analysis",
    "analyze": "qretrain.analysis",
    "ClusteredTensor": "qretrain.cluster",
    "ClusterReport": "qretrain.cluster",
    "Granularity": "qretrain.cluster",
    "Method": "qretrain.cluster",
    "cluster_tensor": "qretrain.cluster",
    "codebooks": "qretrain.cluster",
    "cluster_": "qretrain.apply",
    "compress": "qretrain.recipe",
    "Compressed": "qretrain.recipe",
    "RecipeSettings": "qretrain.recipe",
    "load_dataset": "qretrain.data",
    "memory_limit": "qretrain._memory",
    "keep_freed_memory": "qretrain._heap",
    "QretrainError": "qretrain.errors",
    "QretrainFileError": "qretrain.errors",
    "UntrustedCodeError": "qretrain.errors",
    "export": "qretrain.export",
    "EvalResult": "qretrain.metrics",
    "evaluate": "qretrain.metrics",
    "ArchSpec": "qretrain.models",
    "ParamKind": "qretrain.models",
    "build_model": "qretrain.models",
    "describe_tensors": "qretrain.models",
    "load_model": "qretrain.models",
    "InputContract": "qretrain.models.contract",
    "Plan": "qretrain.plan",
    "PlanError": "qretrain.plan",
    "Rule": "qretrain.plan",
    "AutoPlan": "qretrain.planner",
    "PlanSettings": "qretrain.planner",
    "auto_plan": "qretrain.planner",
    "RetrainConfig": "qretrain.retrain",
    "retrain": "qretrain.retrain",
    "Layout": "qretrain.storage",
    "load": "qretrain.storage",
    "save": "qretrain.storage",
}

__all__ = sorted([*_EXPORTS, "__version__"])
# Functions named like the sub-package that defines them: importing the sub-package
# would otherwise replace the function with the module (``qretrain.export``).
_FUNCTIONS_OVER_PACKAGES = frozenset({"export", "retrain"})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS_OVER_PACKAGES and isinstance(value, types.ModuleType):
            return  # the import system binding the sub-package: the function keeps the name
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """A public name, or a sub-package (``qretrain.models``), imported on first use."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif not name.startswith("_"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'qretrain' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'qretrain' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
