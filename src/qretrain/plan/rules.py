"""One plan rule: which tensors it selects (a ``Selector``), and what it does to them.

The selector keys (``name``, ``type``, ``layers``, ``kinds``) are the one grammar of
``qretrain.models.selector``; a rule that names no ``kinds`` selects weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qretrain.cluster.options import Granularity, Method, parse_enum
from qretrain.cluster.tensor import MAX_K
from qretrain.errors import QretrainError
from qretrain.models.layers import ParamKind, TensorInfo
from qretrain.models.selector import Selector, Specificity, parse_kinds, parse_layers

RULE_KEYS = ("k", "name", "type", "layers", "kinds", "method", "granularity")
__all__ = ["RULE_KEYS", "Rule", "Specificity", "parse_kinds", "parse_layers"]


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
    selector: Selector = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        errors = []
        if self.k is not None and (
            isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K
        ):
            errors.append(f"k must be an int in [1, {MAX_K}] or null; got {self.k!r}")
        for key, enum_cls in (("method", Method), ("granularity", Granularity)):
            if getattr(self, key) is not None:
                try:
                    object.__setattr__(self, key, parse_enum(enum_cls, getattr(self, key), key))
                except QretrainError as e:
                    errors.append(str(e))
        try:
            selector = Selector(self.name, self.type, self.layers, self.kinds)
        except QretrainError as e:
            errors += str(e).split("; ")
        else:
            object.__setattr__(self, "selector", selector)
            object.__setattr__(self, "kinds", selector.kinds)
            object.__setattr__(self, "layers", selector.layers)
        if errors:
            raise QretrainError("\n".join(errors))

    @property
    def specificity(self) -> int:
        return self.selector.specificity

    def matches(self, info: TensorInfo, module_types: tuple[str, ...]) -> bool:
        """``module_types``: the class names of the tensor's module and its bases."""
        return self.selector.matches(info, module_types)

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
        kwargs: dict[str, Any] = {
            k: d[k] for k in ("name", "type", "kinds") if d.get(k) is not None
        }
        if d.get("layers") is not None:
            kwargs["layers"] = str(d["layers"])
        errors += parse_options(d, where, kwargs)
        if not errors:
            try:
                return cls(k=d.get("k"), **kwargs)
            except QretrainError as e:
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
