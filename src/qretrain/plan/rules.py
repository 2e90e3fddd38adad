"""One plan rule: which tensors it selects, and what it does to them.

Selectors combine with AND: a rule matches a tensor when every selector it sets
matches. ``name`` is an exact module name, an fnmatch glob when it holds any of
``*?[``, or a regular expression (full match) after a ``re:`` prefix; ``type`` is a
module class name, matched against the class and its bases; ``layers`` is a set of
layer numbers like ``"13-49"`` or ``"1,3,5-7"``; ``kinds`` lists tensor kinds.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from qretrain.cluster.options import Granularity, Method, parse_enum
from qretrain.cluster.tensor import MAX_K
from qretrain.errors import QretrainError
from qretrain.models.layers import BN_KINDS, ParamKind, TensorInfo

RULE_KEYS = ("k", "name", "type", "layers", "kinds", "method", "granularity")
KIND_GROUPS = {"bn": BN_KINDS}


class Specificity:
    """Precedence when several rules match one tensor: higher wins, then later wins."""

    DEFAULT = 0  # kinds only
    TYPE = 1
    LAYERS = 2
    PATTERN = 3
    EXACT_NAME = 4


@dataclass(frozen=True)
class Rule:
    """``k`` None means: leave the selected tensors alone (float32)."""

    k: int | None
    name: str | None = None
    type: str | None = None
    layers: str | None = None
    kinds: tuple[ParamKind, ...] = (ParamKind.WEIGHT,)
    method: Method | None = None
    granularity: Granularity | None = None
    _layer_set: frozenset[int] = field(default=frozenset(), repr=False, compare=False)
    _name_regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept plain strings for the enum fields, as the dict form has them.
        object.__setattr__(self, "kinds", parse_kinds(self.kinds))
        for key, enum_cls in (("method", Method), ("granularity", Granularity)):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, parse_enum(enum_cls, getattr(self, key), key))
        errors = self.check()
        if errors:
            raise QretrainError("\n".join(errors))
        layer_set = parse_layers(self.layers) if self.layers is not None else ()
        object.__setattr__(self, "_layer_set", frozenset(layer_set))
        object.__setattr__(self, "_name_regex", _compile_name(self.name))

    def check(self) -> list[str]:
        """Every problem with this rule's fields, as messages."""
        errors = []
        if self.k is not None and (
            isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K
        ):
            errors.append(f"k must be an int in [1, {MAX_K}] or null; got {self.k!r}")
        if self.layers is not None:
            try:
                parse_layers(self.layers)
            except ValueError as e:
                errors.append(str(e))
        if self.name is not None:
            try:
                _compile_name(self.name)
            except re.error as e:
                errors.append(f"name {self.name!r} is not a valid regular expression: {e}")
        if not self.kinds:
            errors.append("kinds must list at least one kind")
        return errors

    @property
    def specificity(self) -> int:
        if self.name is not None:
            return Specificity.EXACT_NAME if self._name_regex is None else Specificity.PATTERN
        if self.layers is not None:
            return Specificity.LAYERS
        if self.type is not None:
            return Specificity.TYPE
        return Specificity.DEFAULT

    def matches(self, info: TensorInfo, module_types: tuple[str, ...]) -> bool:
        """``module_types``: the class names of the tensor's module and its bases."""
        if info.kind not in self.kinds:
            return False
        if self.name is not None:
            if self._name_regex is None:
                if info.module_name != self.name:
                    return False
            elif not self._name_regex.fullmatch(info.module_name):
                return False
        if self.type is not None and self.type not in module_types:
            return False
        if self.layers is not None and info.layer not in self._layer_set:
            return False
        return True

    def describe(self) -> str:
        """Short text naming this rule's selectors, for messages and reports."""
        keys = ("name", "type", "layers")
        parts = [f"{key}={getattr(self, key)!r}" for key in keys if getattr(self, key) is not None]
        parts.append("kinds=[" + ", ".join(k.value for k in self.kinds) + "]")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"k": self.k}
        for key in ("name", "type", "layers"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["kinds"] = [k.value for k in self.kinds]
        if self.method is not None:
            d["method"] = self.method.value
        if self.granularity is not None:
            d["granularity"] = self.granularity.value
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Rule:
        """Parse one rule; every problem is reported at once, prefixed with ``where``."""
        if not isinstance(d, dict):
            raise QretrainError(f"{where}: must be a mapping; got {type(d).__name__}")
        errors = unknown_keys(d, RULE_KEYS, where)
        if "k" not in d:
            errors.append(f"{where}: needs k (an int in [1, {MAX_K}], or null to leave alone)")
        kwargs: dict[str, Any] = {"k": d.get("k")}
        for key in ("name", "type"):
            if d.get(key) is not None:
                if not isinstance(d[key], str) or not d[key]:
                    errors.append(f"{where}: {key} must be a non-empty string; got {d[key]!r}")
                else:
                    kwargs[key] = d[key]
        if d.get("layers") is not None:
            kwargs["layers"] = str(d["layers"])
        if "kinds" in d:
            try:
                kwargs["kinds"] = parse_kinds(d["kinds"])
            except ValueError as e:
                errors.append(f"{where}: {e}")
        errors += parse_options(d, where, kwargs)
        if not errors:
            try:
                return cls(**kwargs)
            except ValueError as e:
                errors += [f"{where}: {line}" for line in str(e).split("\n")]
        raise QretrainError("\n".join(errors))


def parse_options(d: dict, where: str, into: dict[str, Any]) -> list[str]:
    """Parse ``method`` and ``granularity`` of ``d`` into ``into``; return error messages."""
    errors = []
    for key, enum_cls in (("method", Method), ("granularity", Granularity)):
        if d.get(key) is not None:
            try:
                into[key] = parse_enum(enum_cls, d[key], key)
            except ValueError as e:
                errors.append(f"{where}: {e}")
    return errors


def unknown_keys(d: dict, allowed: tuple[str, ...], where: str) -> list[str]:
    """One message per key of ``d`` not in ``allowed``, naming the allowed ones."""
    return [
        f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})"
        for key in d
        if key not in allowed
    ]


def parse_kinds(value: Any) -> tuple[ParamKind, ...]:
    """A list (or comma-separated string) of kinds; ``bn`` stands for all four."""
    if isinstance(value, ParamKind):
        value = [value]
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise QretrainError(f"kinds must be a list; got {value!r}")
    kinds: list[ParamKind] = []
    for item in items:
        item = item.value if isinstance(item, ParamKind) else str(item).strip()
        if item in KIND_GROUPS:
            kinds += KIND_GROUPS[item]
            continue
        try:
            kinds.append(ParamKind(item))
        except ValueError:
            allowed = [k.value for k in ParamKind] + list(KIND_GROUPS)
            raise QretrainError(
                f"unknown kind {item!r} (allowed: {', '.join(allowed)})"
            ) from None
    return tuple(dict.fromkeys(kinds))


def parse_layers(text: str | int) -> set[int]:
    """``"13-49"``, ``"1,3,5-7"`` or ``14`` -> set of 1-based layer numbers."""
    numbers: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise QretrainError(
                f"layers {text!r} is not a list of numbers and ranges like '13-49' or '1,3,5-7'"
            )
        lo, hi = int(m[1]), int(m[2] or m[1])
        if lo < 1 or hi < lo:
            raise QretrainError(f"layers {text!r}: range {part!r} must satisfy 1 <= start <= end")
        numbers.update(range(lo, hi + 1))
    return numbers


def _compile_name(name: str | None) -> re.Pattern[str] | None:
    """None for an exact name; a compiled full-match regex for globs and ``re:``."""
    if name is None:
        return None
    if name.startswith("re:"):
        return re.compile(name[3:])
    if any(c in name for c in "*?["):
        return re.compile(fnmatch.translate(name))
    return None
