"""Selectors: the one grammar that says which tensors or layers a setting means.

Plans' rules, the sweep's ``--select``, retraining's ``--trainable`` and the
automatic planner all select with it. A selector sets any of four keys, which
combine with AND (an unset key matches everything):

- ``name``: a module name, exact; an fnmatch glob when it holds any of ``*?[``; a
  regular expression (full match) after ``re:``. ``layers.1`` never matches
  ``layers11``;
- ``type``: a module class name, matched against the class and its bases;
- ``layers``: layer numbers as ``qretrain inspect`` prints them: ``13-49``, ``1,3,5-7``;
- ``kinds``: tensor kinds (``weight``, ``bias``, ``bn_weight``, ...; ``bn`` for all
  four batch-norm ones).

On the command line a selector is ``key=value`` parts joined by ``;``, e.g.
``name=classifier.*;kinds=weight``; a part without ``=`` is short for ``layers=``:
``13-49``. In YAML it is a mapping with the same keys.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qretrain.errors import QretrainError
from qretrain.models.names import BN_KINDS, ParamKind

if TYPE_CHECKING:
    from qretrain.models.layers import TensorInfo

SELECTOR_KEYS = ("name", "type", "layers", "kinds")
KIND_GROUPS = {"bn": BN_KINDS}
SYNTAX = ("a selector: key=value parts joined by ';' with keys name (exact, glob or "
          "re:REGEX), type (a module class), layers (like 13-49 or 1,3,5-7), kinds "
          "(like weight,bias); a bare part like 13-49 means layers=13-49")  # fmt: skip


class Specificity:
    """Precedence when several selectors match one tensor: higher wins."""

    DEFAULT = 0  # kinds only
    TYPE = 1
    LAYERS = 2
    PATTERN = 3
    EXACT_NAME = 4


@dataclass(frozen=True)
class Selector:
    """Which tensors (or layers): every key set must match. ``kinds=None``: any kind."""

    name: str | None = None
    type: str | None = None
    layers: str | None = None
    kinds: tuple[ParamKind, ...] | None = None
    _layer_set: frozenset[int] = field(default=frozenset(), repr=False, compare=False)
    _name_regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        errors = []
        for key in ("name", "type"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                errors.append(f"{key} must be a non-empty string; got {value!r}")
        if self.layers is not None:
            try:
                object.__setattr__(self, "layers", str(self.layers).replace(" ", ""))
                object.__setattr__(self, "_layer_set", frozenset(parse_layers(self.layers)))
            except QretrainError as e:
                errors.append(str(e))
        if isinstance(self.name, str):
            try:
                object.__setattr__(self, "_name_regex", _compile_name(self.name))
            except re.error as e:
                errors.append(f"name {self.name!r} is not a valid regular expression: {e}")
        if self.kinds is not None:
            try:
                object.__setattr__(self, "kinds", parse_kinds(self.kinds))
            except QretrainError as e:
                errors.append(str(e))
            else:
                if not self.kinds:
                    errors.append("kinds must list at least one kind")
        if errors:
            raise QretrainError("; ".join(errors))

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
        """Whether the tensor ``info`` is selected; ``module_types``: the class names of
        its module and their bases (``qretrain.models.layers.type_names``)."""
        if self.kinds is not None and info.kind not in self.kinds:
            return False
        return self.matches_module(info.module_name, info.layer, module_types)

    def matches_module(self, module_name: str, layer: int | None,
                       module_types: tuple[str, ...]) -> bool:  # fmt: skip
        """Whether a module (a layer, for the sweep) is selected; kinds are not asked."""
        if self.name is not None:
            if self._name_regex is None:
                if module_name != self.name:
                    return False
            elif not self._name_regex.fullmatch(module_name):
                return False
        if self.type is not None and self.type not in module_types:
            return False
        return self.layers is None or layer in self._layer_set

    @classmethod
    def parse(cls, text: str) -> Selector:
        """The command-line form: ``name=classifier.*;kinds=weight`` or ``13-49``."""
        if not isinstance(text, str) or not text.strip():
            raise QretrainError(f"expected {SYNTAX}; got {text!r}")
        fields: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = (key.strip(), value.strip()) if sep else ("layers", part)
            if key not in SELECTOR_KEYS or key in fields or not value:
                raise QretrainError(f"expected {SYNTAX}; got {text!r}")
            fields[key] = value
        return cls(**fields)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selector:
        """From a mapping holding (some of) SELECTOR_KEYS; other keys are the caller's."""
        fields = {k: d[k] for k in SELECTOR_KEYS if d.get(k) is not None}
        if "layers" in fields:
            fields["layers"] = str(fields["layers"])
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in ("name", "type", "layers")
                             if getattr(self, k) is not None}  # fmt: skip
        if self.kinds is not None:
            d["kinds"] = [k.value for k in self.kinds]
        return d

    def __str__(self) -> str:
        """The command-line form, which ``parse`` reads back."""
        return ";".join(f"{k}={','.join(v) if isinstance(v, list) else v}"
                        for k, v in self.to_dict().items()) or "all"  # fmt: skip


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
            raise QretrainError(f"unknown kind {item!r} (allowed: {', '.join(allowed)})") from None
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


def _compile_name(name: str) -> re.Pattern[str] | None:
    """None for an exact name; a compiled full-match regex for globs and ``re:``."""
    if name.startswith("re:"):
        return re.compile(name[3:])
    if any(c in name for c in "*?["):
        return re.compile(fnmatch.translate(name))
    return None
