"""Packages whose public names load on first use (PEP 562), like ``qretrain`` itself.

A sub-package's ``__init__`` says which of its modules defines each public name, and
imports none of them: importing ``qretrain.analysis.settings`` then runs the settings
module alone, not the sweep and torch behind it. That is how the command line reads
its arguments and checks a run config without loading torch::

    __getattr__, __dir__, __all__ = lazy_names(__name__, {
        "qretrain.analysis.settings": ("AnalyzeSettings", "Unit"),
        "qretrain.analysis.sweep": ("analyze",),
    })

The registries of model and dataset specs load what extends them the same way:
``SpecProviders`` imports the module that registers a spec's builder or loader the
first time such a spec is looked up.
"""

from __future__ import annotations

import importlib
import re
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


class SpecProviders:
    """Spec pattern (a regex, full match) -> the module that registers what specs
    matching it name. A registry calls ``load(spec)`` before it looks ``spec`` up and
    ``load()`` before it lists every form, so importing the registry imports none of
    the modules, and looking up one spec imports only those that may name it."""

    def __init__(self, modules: dict[re.Pattern[str], str] | None = None) -> None:
        self._modules: dict[re.Pattern[str], str] = dict(modules or {})

    def add(self, pattern: str, module: str) -> None:
        """Specs matching ``pattern`` are registered by importing ``module``."""
        self._modules[re.compile(pattern)] = module

    def load(self, spec: str | None = None) -> None:
        """Import the providers of ``spec`` (of every spec when None). A module imported
        before is found in ``sys.modules``, so each registers what it provides once."""
        for pattern, module in list(self._modules.items()):  # a provider may add more
            if spec is None or pattern.fullmatch(spec):
                importlib.import_module(module)

    def modules(self) -> list[str]:
        """The provider modules, each once, in the order they were first added."""
        return list(dict.fromkeys(self._modules.values()))

    def copy(self) -> SpecProviders:
        """An independent copy (a test adds providers to it, then puts it back)."""
        return SpecProviders(self._modules)
