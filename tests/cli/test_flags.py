"""Every settings field a command exposes has its flag, with the field's name, default
and choices: a flag and its field cannot disagree (``qretrain.cli.flags``)."""

import argparse
import enum
import typing
from dataclasses import fields

import pytest

from qretrain.analysis.settings import AnalyzeSettings
from qretrain.apply.settings import CompressSettings
from qretrain.cli import compress_cmd
from qretrain.cli.flags import add_flags, flag_name, settings_from_args
from qretrain.cli.main import build_parser
from qretrain.metrics.settings import EvaluateSettings
from qretrain.planner.settings import Metric, PlanSettings
from qretrain.recipe.settings import RecipeSettings
from qretrain.retrain.config import Loss, RetrainConfig

# command -> the settings its flags make, each with the fields it has no flag for
EXPOSED = {
    "analyze": [(AnalyzeSettings, ())],
    "plan": [(PlanSettings, ())],
    "compress": [(CompressSettings, ()), (RecipeSettings, compress_cmd.RECIPE_NOT_FLAGS)],
    "evaluate": [(EvaluateSettings, ())],
    "retrain": [(RetrainConfig, ())],
}
# Flags that offer fewer values than their field takes, and why.
NARROWER = {
    ("retrain", "loss"): {Loss.CE.value},  # --labels is what cross-entropy means
    ("compress", "metric"): {Metric.ACCURACY.value},  # the recipe needs no labels
}
# Flags not named like their field, and why.
RENAMED = {
    ("compress", "fold_batchnorm"): "--keep-batchnorm",  # False when given, else the default
}


def command_parser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[name]


CASES = [(command, cls, f.name, f.name in skip) for command, pairs in EXPOSED.items()
         for cls, skip in pairs for f in fields(cls)]  # fmt: skip


@pytest.mark.parametrize("command, cls, name, unexposed", CASES,
                         ids=[f"{c}-{n}" for c, _, n, _ in CASES])  # fmt: skip
def test_every_field_has_its_flag(command, cls, name, unexposed):
    actions = {a.dest: a for a in command_parser(command)._actions}
    if unexposed:
        assert name not in actions, f"{name} has a flag: take it out of the list without one"
        return
    action = actions.get(name)
    assert action is not None, f"qretrain {command} has no flag for {cls.__name__}.{name}"
    default = cls.default(name)
    flag = RENAMED.get((command, name), flag_name(name, default))
    assert flag in action.option_strings, (flag, action.option_strings)
    parse = next(f for f in fields(cls) if f.name == name).metadata["parse"]
    assert parse(action.default) == default, (action.default, default)
    kind = typing.get_type_hints(cls)[name]
    kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        values = {m.value for m in kind} - NARROWER.get((command, name), set())
        assert set(action.choices) == values, (action.choices, values)
    else:
        assert action.choices is None


def test_the_parsed_defaults_make_each_settings_default():
    """Parsing only the required arguments gives each settings' own defaults."""
    required = {
        "analyze": ["m", "--data", "d", "-o", "out"],
        "evaluate": ["m", "--data", "d"],
        "retrain": ["s.h5", "--data", "d", "-o", "o.h5"],
        "compress": ["m", "--plan", "p.yaml", "-o", "o.h5"],
    }
    for command, argv in required.items():
        args = build_parser().parse_args([command, *argv])
        for cls, _ in EXPOSED[command]:
            if cls is RecipeSettings:  # needs a target or max_drop
                made = settings_from_args(cls, argparse.Namespace(**{**vars(args), "target": "7x"}))
                assert made == cls(target="7x"), cls
            else:
                assert settings_from_args(cls, args) == cls(), cls
    args = build_parser().parse_args(["plan", "sweep", "--max-drop", "1", "-o", "p.yaml"])
    assert settings_from_args(PlanSettings, args) == PlanSettings(max_drop=1.0)


def test_flags_set_what_they_name():
    args = build_parser().parse_args(["retrain", "s.h5", "--data", "d", "-o", "o.h5",
                                      "--weight-decay", "0.01", "--no-cache", "--loss", "mse",
                                      "--trainable", "last", "--epochs", "3"])  # fmt: skip
    config = settings_from_args(RetrainConfig, args)
    assert (config.weight_decay, config.cache, config.loss, str(config.trainable),
            config.epochs) == (0.01, False, Loss.MSE, "last", 3)  # fmt: skip
    args = build_parser().parse_args(["compress", "m", "--plan", "p.yaml", "-o", "o.h5",
                                      "--keep-batchnorm", "--layout", "paper"])  # fmt: skip
    assert settings_from_args(CompressSettings, args) == CompressSettings(
        layout="paper", fold_batchnorm=False
    )


def test_a_bool_field_on_by_default_is_a_no_switch_and_an_unknown_bool_is_refused():
    parser = argparse.ArgumentParser()
    add_flags(parser, RetrainConfig, "cache", "labels")
    assert vars(parser.parse_args(["--no-cache"])) == {"cache": False, "labels": False}
    with pytest.raises(TypeError, match="written out"):
        add_flags(argparse.ArgumentParser(), CompressSettings, "fold_batchnorm")
