"""Settings: frozen dataclasses checked once, where they are made.

A stage's settings class derives from ``Settings`` and declares each field with
``setting(default, parse, help)``. ``parse`` turns what a user wrote (a YAML value, a
command-line string, a Python value) into the field's type or raises; it is
idempotent, so already-parsed values pass. ``help`` says what the field does; the
command line makes the field's flag from it (``qretrain.cli.flags``).
``__post_init__`` parses every field and runs ``check`` (rules between fields),
collecting every problem into one ``SettingsError``; ``from_dict`` also rejects
unknown keys. After that, nothing downstream checks a setting again.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any, TypeVar

from qretrain.errors import QretrainError

T = TypeVar("T", bound="Settings")
Parse = Callable[[Any], Any]


class SettingsError(QretrainError):
    """Settings that cannot be used; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def setting(default: Any, parse: Parse, help: str | None = None) -> Any:
    """A dataclass field whose value goes through ``parse`` when the settings are made;
    ``help``: what it does (its command-line flag's help; ``%(default)s`` names the
    default there)."""
    metadata = {"parse": parse, "help": help}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: parse(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class Settings:
    """Mixin for frozen dataclasses of settings (see the module docstring)."""

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            parse = f.metadata.get("parse")
            if parse is None:
                continue
            try:
                object.__setattr__(self, f.name, parse(getattr(self, f.name)))
            except (QretrainError, ValueError, TypeError) as e:
                problems.append(f"{f.name}: {e}")
        if not problems:
            problems += self.check()
        if problems:
            raise SettingsError(problems)

    def check(self) -> list[str]:
        """Problems between fields, once each field is parsed; override as needed."""
        return []

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default: the one place defaults live (CLI flags read them here)."""
        f = next(f for f in fields(cls) if f.name == name)
        return f.default_factory() if f.default is MISSING else f.default

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]

    @classmethod
    def from_dict(cls: type[T], d: Any, where: str = "") -> T:
        """From a mapping of field names; unknown keys and every bad value are reported
        together, each prefixed with ``where``."""
        prefix = f"{where}: " if where else ""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise SettingsError([f"{prefix}must be a mapping; got {type(d).__name__}"])
        known = cls.keys()
        problems = [f"{prefix}unknown key {k!r} (known: {', '.join(known)})"
                    for k in d if k not in known]  # fmt: skip
        try:
            made = cls(**{k: v for k, v in d.items() if k in known})
        except SettingsError as e:
            problems += [prefix + p for p in e.problems]
        if problems:
            raise SettingsError(problems)
        return made

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.init}


def plain(value: Any) -> Any:
    """A JSON/YAML-ready form: enums by value, settings as dicts, tuples as lists,
    selectors and paths as their text."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)  # Selector, Trainable: their command-line form


# --- parsers ---------------------------------------------------------------------------
def integer(low: int | None = None, high: int | None = None) -> Parse:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise QretrainError(f"must be an int{_range(low, high)}; got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise QretrainError(f"must be an int{_range(low, high)}; got {value}")
        return value

    return parse


def number(above: float | None = None, at_least: float | None = None) -> Parse:
    def parse(value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise QretrainError(f"must be a finite number; got {value!r}")
        if above is not None and value <= above:
            raise QretrainError(f"must be > {above:g}; got {value!r}")
        if at_least is not None and value < at_least:
            raise QretrainError(f"must be >= {at_least:g}; got {value!r}")
        return float(value)

    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise QretrainError(f"must be true or false; got {value!r}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise QretrainError(f"must be a non-empty string; got {value!r}")
    return value


def choice(enum_cls: type[enum.Enum]) -> Parse:
    def parse(value: Any) -> enum.Enum:
        try:
            return enum_cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in enum_cls)
            raise QretrainError(f"must be one of {allowed}; got {value!r}") from None

    return parse


def optional(parse: Parse) -> Parse:
    def parse_optional(value: Any) -> Any:
        return None if value is None else parse(value)

    return parse_optional


def int_set(low: int, high: int) -> Parse:
    """A non-empty list of ints in [low, high] (or a comma-separated string) -> a
    sorted tuple without repeats."""

    def parse(value: Any) -> tuple[int, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise QretrainError(
                f"must be a non-empty list of ints in [{low}, {high}]; got {value!r}"
            )
        try:
            numbers = [int(v) if isinstance(v, str) else v for v in items]
        except ValueError:
            raise QretrainError(f"must be ints in [{low}, {high}]; got {value!r}") from None
        bad = [v for v in numbers
               if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high]  # fmt: skip
        if bad:
            raise QretrainError(f"must be ints in [{low}, {high}]; got {bad}")
        return tuple(sorted(set(numbers)))

    return parse


def subset_of(allowed: tuple[str, ...]) -> Parse:
    """A non-empty list (or comma-separated string) drawn from ``allowed``, in order."""

    def parse(value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise QretrainError(f"must be a non-empty list of {', '.join(allowed)}; got {value!r}")
        items = [str(v).strip() for v in items]
        bad = [v for v in items if v not in allowed]
        if bad:
            raise QretrainError(f"must be some of {', '.join(allowed)}; got {bad}")
        return tuple(dict.fromkeys(items))

    return parse


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    return f" >= {low}" if low is not None else ""
