"""Command-line flags made from settings fields, so that a setting's name, default,
choices and help are written once, beside the field (``qretrain._settings``).

``add_flags(parser, RetrainConfig, "epochs", "lr")`` adds ``--epochs`` and ``--lr``:
each flag is its field's name with dashes, its default the field's, an enum field's
choices its values, a bool field a switch (``--labels``; ``--no-cache`` for one that
is on by default), its help the field's ``help``. A command overrides what it must
(a metavar, a narrower set of choices). ``settings_from_args`` makes the settings
back from the parsed arguments, where they are checked, once, like any settings.
"""

from __future__ import annotations

import argparse
import enum
import types
import typing
from dataclasses import fields
from typing import Any, TypeVar

from qretrain._settings import Settings, plain

S = TypeVar("S", bound=Settings)


def flag_name(name: str, default: Any = None) -> str:
    """``--batch-size`` for ``batch_size``; ``--no-cache`` for a switch on by default."""
    return ("--no-" if default is True else "--") + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser | argparse._ActionsContainer, cls: type[Settings],
              *names: str, **overrides: dict[str, Any]) -> None:  # fmt: skip
    """Add a flag for each field of ``cls`` named, its dest the field's name;
    ``overrides[name]`` replaces what the field gives (``flag=`` the flag itself)."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for name in names:
        default, help = cls.default(name), known[name].metadata.get("help")
        override = overrides.get(name, {})
        # A flag whose action is written out (--keep-batchnorm) takes only the default.
        arguments = ({"default": default, "help": help} if "action" in override
                     else _arguments(hints[name], default, help))  # fmt: skip
        arguments.update(override)
        flag = arguments.pop("flag", flag_name(name, default))
        parser.add_argument(flag, dest=name, **arguments)


def settings_from_args(cls: type[S], args: argparse.Namespace, where: str = "") -> S:
    """``cls`` from the parsed arguments that carry its fields' names (the rest keep
    their defaults), every problem reported together."""
    given, names = vars(args), cls.keys()
    return cls.from_dict({name: given[name] for name in names if name in given}, where)


def _arguments(hint: Any, default: Any, help: str | None) -> dict[str, Any]:
    kind = _without_none(hint)
    if kind is bool and isinstance(default, bool):
        return {"action": "store_false" if default else "store_true", "help": help}
    arguments: dict[str, Any] = {"default": _text(default), "help": help}
    if typing.get_origin(kind) is None and isinstance(kind, type) and issubclass(kind, enum.Enum):
        arguments["choices"] = [member.value for member in kind]
    elif kind in (int, float):
        arguments["type"] = kind
    elif kind is bool:
        raise TypeError(f"a bool field with default {default!r} needs its flag written out")
    return arguments  # anything else is text, which the field's parser reads


def _without_none(hint: Any) -> Any:
    """``int`` for ``int | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _text(default: Any) -> Any:
    """The default as typed on a command line: ``1,2,4`` for a tuple, an enum's value."""
    value = plain(default)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value
