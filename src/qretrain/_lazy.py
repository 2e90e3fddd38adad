"""Packages whose public names load on first use (PEP 562), like ``qretrain`` itself.

A sub-package's ``__init__`` says which of its modules defines each public name, and
imports none of them: importing ``qretrain.analysis.settings`` then runs the settings
module alone, not the sweep and torch behind it. That is how the command line reads
its arguments and checks a run config without loading torch::

    __getattr__, __dir__, __all__ = lazy_names(__name__, {
        "qretrain.analysis.settings": ("AnalyzeSettings", "Unit"),
        "qretrain.analysis.sweep": ("analyze",),
    })
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose public names are never replaced by its sub-modules: importing
    ``qretrain.recipe.compress`` (the module) leaves ``qretrain.recipe.compress`` the
    function that module defines, as an eager ``from ... import`` in ``__init__`` did."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_lazy_names", ()):
            return  # the import system binding a sub-module: the public name keeps its value
        super().__setattr__(name, value)


def lazy_names(
    package: str, modules: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose public names are
    defined in ``modules`` (module name -> the names it defines)."""
    where = {name: module for module, names in modules.items() for name in names}
    module = sys.modules[package]
    module._lazy_names = frozenset(where)
    module.__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        source = where.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *where})

    return __getattr__, __dir__, sorted(where)
