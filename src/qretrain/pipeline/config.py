"""The run config: one YAML file that says what ``qretrain run`` does, checked whole.

It is a tree of the stages' own settings, so a value is checked once, here, before
any stage runs, and every problem in the file is reported together. Unknown keys are
errors naming the key. A config takes one of two forms. The recipe's, what
``qretrain compress --target`` does, from one set of unlabeled images::

    output: out/case                 # required: folder for every file the run writes
    model: efficientnet-lite0        # required: a model spec (see `qretrain inspect`)
    model_args: {num_classes: 10}    # keyword arguments of the model builder
    weights: null                    # a state dict to load into the model (.pth, .safetensors)
    contract: {size: 64, mean: [0.5], std: [0.25], resize: null}   # the input facts
    data:
      unlabeled: my-images/          # required: shared out by the recipe (qretrain.recipe)
      evaluate: labeled-test/        # required: the final, held-out evaluation
      far_off: ...                   # with recipe.far_off: a far-off retraining set
    recipe: RecipeSettings + {conventional: bool, far_off: bool}
                                     # {target | max_drop, metric, recover, seed, epochs,
                                     #  signal, deploy, ...}
    evaluate: EvaluateSettings       # {batch_size}
    device: cpu                      # cpu, cuda or cuda:N, checked against the machine

The stages' own, where each stage's data and settings are given (every key optional
unless marked)::

    output, model, model_args, weights, contract   # as above
    data:                            # named datasets: a spec, or {spec, limit, seed, offset, views}
      analyze: ...                   # required with analyze: images the sweep measures on
      verify: ...                    # plan verification (default: the analyze set)
      retrain: ...                   # required with retrain: label-free retraining images
      evaluate: ...                  # required: the final, held-out evaluation
      far_off: ...                   # with retrain.far_off: a far-off retraining set
      guard: ...                     # the retraining guard's val_data (optional)
    analyze: AnalyzeSettings         # {ks, kinds, unit, select, method, seed, batch_size,
                                     #  precision, signal}; absent with plan.file
    plan: PlanSettings or {file: PLAN.yaml}   # {max_drop | target_size, metric, batch_size,
                                     #  refine, deploy}
    compress: CompressSettings       # {layout, method, fold_batchnorm}
    retrain: RetrainConfig + {conventional: bool, far_off: bool}   # absent: no retraining
    evaluate, device                 # as above

In both forms the comparison runs of the seed's paper are opt-in: ``conventional``
(the same images with labels, cross-entropy) and ``far_off`` (label-free on
``data.far_off``, guarded like the main run).

Checking a config imports the stages' settings modules only, not torch: a bad
config is refused at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from qretrain._settings import Settings, SettingsError, integer, optional, plain, setting, text
from qretrain.analysis.settings import AnalyzeSettings, Signal
from qretrain.apply.settings import CompressSettings
from qretrain.device import device_name
from qretrain.errors import QretrainError
from qretrain.metrics.settings import EvaluateSettings
from qretrain.models.names import FACTS
from qretrain.planner.settings import Metric, PlanSettings
from qretrain.recipe.settings import RecipeSettings
from qretrain.retrain.config import RetrainConfig

TOP_KEYS = ("output", "model", "model_args", "weights", "contract", "data", "recipe", "analyze",
            "plan", "compress", "retrain", "evaluate", "device")  # fmt: skip
DATA_NAMES = ("unlabeled", "analyze", "verify", "retrain", "evaluate", "far_off", "guard")
STAGE_KEYS = ("analyze", "plan", "compress", "retrain")  # the stages' own form only
STAGE_DATA = ("analyze", "verify", "retrain", "guard")
COMPARISONS = ("conventional", "far_off")
# What a run's retrain section may set: labels and caching are the pipeline's own.
RETRAIN_KEYS = ("objective", "block_epochs", "block_values", "epochs", "batch_size", "lr",
                "weight_decay", "loss", "temperature", "trainable", "bn_stats", "tune_centroids",
                "tune_assignments", "rounding_lambda", "seed")  # fmt: skip


class ConfigError(SettingsError):
    """A run config that cannot be run; lists every problem."""


@dataclass(frozen=True)
class DataRef(Settings):
    """A dataset spec and which of its images: ``limit`` of them from ``offset`` on in
    the permutation drawn from ``seed`` (all when ``limit`` is None); ``views``: that
    many augmented views of them instead (``data.views``)."""

    spec: str = setting("", text)
    limit: int | None = setting(None, optional(integer(1)))
    seed: int = setting(0, integer(0))
    offset: int = setting(0, integer(0))
    views: int | None = setting(None, optional(integer(1)))

    @classmethod
    def from_value(cls, value: Any, where: str) -> DataRef:
        return cls(value) if isinstance(value, str) else cls.from_dict(value, where)


@dataclass(frozen=True)
class PlanFile(Settings):
    """Plan from a file instead of a sweep."""

    file: str = setting("", text)


@dataclass(frozen=True)
class RunRetrain:
    """The retrain section: one RetrainConfig for every run, and which runs."""

    config: RetrainConfig
    conventional: bool = False  # the same images with labels, for comparison
    far_off: bool = False  # label-free on data.far_off too, guarded

    def to_dict(self) -> dict[str, Any]:
        settings = {k: v for k, v in self.config.to_dict().items() if k in RETRAIN_KEYS}
        return {**settings, "conventional": self.conventional, "far_off": self.far_off}


@dataclass(frozen=True)
class RunRecipe:
    """The recipe section: the recipe's settings, and which comparison runs."""

    settings: RecipeSettings
    conventional: bool = False
    far_off: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.settings.to_dict(), "conventional": self.conventional,
                "far_off": self.far_off}  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    output: Path
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    contract: dict[str, Any] | None = None  # the input facts stated (``settle_contract``)
    data: dict[str, DataRef] = field(default_factory=dict)
    recipe: RunRecipe | None = None  # the recipe's form; None: the stages' own
    analyze: AnalyzeSettings | None = None  # None: no sweep (an explicit plan file)
    plan: PlanSettings | PlanFile = PlanSettings(max_drop=1.0)
    compress: CompressSettings = CompressSettings()
    retrain: RunRetrain | None = None  # None: no retraining
    evaluate: EvaluateSettings = EvaluateSettings()
    device: str = "cpu"
    source: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "output": str(self.output),
            "model": self.model,
            "model_args": self.model_args,
            "weights": self.weights,
            "contract": self.contract,
            "data": {name: ref.to_dict() for name, ref in self.data.items()},
        }
        if self.recipe is not None:
            return d | {"recipe": self.recipe.to_dict(), "evaluate": self.evaluate.to_dict(),
                        "device": self.device}  # fmt: skip
        return d | {
            "analyze": self.analyze.to_dict() if self.analyze is not None else None,
            "plan": self.plan.to_dict(),
            "compress": self.compress.to_dict(),
            "retrain": self.retrain.to_dict() if self.retrain is not None else None,
            "evaluate": self.evaluate.to_dict(),
            "device": self.device,
        }

    def comparisons(self) -> list[str]:
        """The opt-in comparison runs asked for, in report order."""
        flags = self.recipe if self.recipe is not None else self.retrain
        return [name for name in COMPARISONS if flags is not None and getattr(flags, name)]

    def to_yaml(self) -> str:
        return yaml.safe_dump(plain(self.to_dict()), sort_keys=False)

    def with_device(self, device: str | None) -> RunConfig:
        """The command line's --device over the file's value (-o goes through ``load``)."""
        return self if device is None else replace(self, device=device_name(device))

    @classmethod
    def load(cls, path: str | Path, output: str | Path | None = None) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file {str(path)!r} does not exist"])
        try:
            raw = yaml.safe_load(path.read_text())
        except UnicodeDecodeError as e:
            raise ConfigError([f"config {str(path)!r} is not UTF-8 text ({e})"]) from None
        except yaml.YAMLError as e:
            raise ConfigError([f"config {str(path)!r} is not valid YAML: {e}"]) from e
        except RecursionError:
            raise ConfigError([f"config {str(path)!r} nests too deeply to be a run "
                               "config"]) from None  # fmt: skip
        if output is not None and isinstance(raw, dict):
            raw["output"] = str(output)
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str | None = None) -> RunConfig:
        """Check the whole config: every problem of every section, in one ConfigError."""
        where = f"config {source}" if source else "config"
        _check_size(raw, where)
        if not isinstance(raw, dict):
            raise ConfigError([f"{where} must be a mapping of sections"])
        errors = [f"{where}: unknown key {k!r} (known: {', '.join(TOP_KEYS)})"
                  for k in raw if k not in TOP_KEYS]  # fmt: skip

        def section(make, key: str, *args):
            try:
                return make(*args)
            except QretrainError as e:
                problems = e.problems if isinstance(e, SettingsError) else [str(e)]
                errors.extend(p if p.startswith(where) else f"{where}: {key}: {p}"
                              for p in problems)  # fmt: skip
                return None

        for key in ("output", "model"):
            if not isinstance(raw.get(key), str) or not raw.get(key):
                errors.append(f"{where}: {key!r} is required (a string)")
        if raw.get("weights") is not None and not isinstance(raw["weights"], str):
            errors.append(f"{where}: weights must be the path of a state dict (a string); "
                          f"got {raw['weights']!r}")  # fmt: skip
        model_args = raw.get("model_args") or {}
        if not isinstance(model_args, dict):
            errors.append(f"{where}: model_args must be a mapping")
        else:
            errors += [f"{where}: model_args: {p}" for p in _model_args_problems(model_args)]
        contract = raw.get("contract")
        if contract is not None:
            errors += [f"{where}: contract: {p}" for p in _contract_problems(contract)]
        data = section(_data_refs, "data", raw.get("data") or {}, where) or {}
        device = section(lambda: device_name(raw.get("device", "cpu")), "device")
        evaluate = section(EvaluateSettings.from_dict, "evaluate", raw.get("evaluate"))
        if "evaluate" not in data:
            errors.append(f"{where}: data.evaluate is required (the held-out evaluation set)")
        if "recipe" in raw:
            recipe = section(_recipe, "recipe", raw["recipe"])
            errors += _recipe_form_problems(raw, data, recipe, where)
            if errors:
                raise ConfigError(errors)
            return cls(output=Path(raw["output"]), model=raw["model"], model_args=model_args,
                       weights=raw.get("weights"), contract=contract, data=data, recipe=recipe,
                       evaluate=evaluate, device=device, source=source)  # fmt: skip
        if "unlabeled" in data:
            errors.append(f"{where}: data.unlabeled is shared out by the recipe: add a recipe "
                          "section (recipe: {target: 7x}), or name each stage's data")  # fmt: skip
        plan_raw = raw.get("plan") or {}
        plan_from_file = isinstance(plan_raw, dict) and "file" in plan_raw
        plan = section((PlanFile if plan_from_file else PlanSettings).from_dict, "plan",
                       plan_raw)  # fmt: skip
        analyze = None
        if not plan_from_file:
            analyze = section(AnalyzeSettings.from_dict, "analyze", raw.get("analyze"))
            if "analyze" not in data:
                errors.append(f"{where}: data.analyze is required to plan from a sweep")
            if analyze is not None and analyze.signal is Signal.FISHER and \
                    isinstance(plan, PlanSettings) and plan.metric is not Metric.KL:  # fmt: skip
                errors.append(f"{where}: analyze.signal fisher predicts each cell's KL and no "
                              f"{plan.metric.value}: set plan.metric kl, or analyze.signal "
                              "measured")  # fmt: skip
        compress = section(CompressSettings.from_dict, "compress", raw.get("compress"))
        retrain = None
        if raw.get("retrain") is not None:
            retrain = section(_retrain, "retrain", raw["retrain"])
            if "retrain" not in data:
                errors.append(f"{where}: data.retrain is required with a retrain section")
            if retrain is not None and retrain.far_off and "far_off" not in data:
                errors.append(f"{where}: retrain.far_off needs data.far_off")
            if retrain is not None and retrain.conventional and "retrain" in data \
                    and data["retrain"].views is not None:  # fmt: skip
                errors.append(f"{where}: retrain.conventional needs labels, and augmented "
                              "views (data.retrain.views) have none: set retrain.conventional "
                              "false, or drop the views")  # fmt: skip
        if errors:
            raise ConfigError(errors)
        return cls(output=Path(raw["output"]), model=raw["model"], model_args=model_args,
                   weights=raw.get("weights"), contract=contract, data=data, analyze=analyze,
                   plan=plan,
                   compress=compress, retrain=retrain, evaluate=evaluate, device=device,
                   source=source)  # fmt: skip


MAX_NODES = 10_000  # values in a config, aliases expanded: a real one has under 200
MAX_DEPTH = 16


def _check_size(raw: Any, where: str) -> None:
    """ConfigError when ``raw`` holds over MAX_NODES values or nests deeper than
    MAX_DEPTH, counted with YAML aliases expanded and stopping at the bound: nine
    lines of anchors expand to 10^9 values, which checking, messages (repr) and the
    stored config.yaml would otherwise expand in memory."""
    count, stack = 0, [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            raise ConfigError([f"{where} holds over {MAX_NODES:,} values or nests over "
                               f"{MAX_DEPTH} levels (YAML aliases expanded); a run config is "
                               "a few dozen keys"])  # fmt: skip
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]


# load_model's own parameters: passed in model_args they would collide with the
# values the run passes (a TypeError deep in the run), or switch off its checks.
LOADER_KEYS = ("spec", "weights", "origin", "trust_code")


def _model_args_problems(model_args: dict) -> list[str]:
    """What is wrong with the builder's keyword arguments (names only: their values
    are checked against the builder's signature when the model is built)."""
    problems = [f"keys must be names; got {k!r}" for k in model_args
                if not isinstance(k, str) or not k.isidentifier()]  # fmt: skip
    for key in LOADER_KEYS:
        if key in model_args:
            hint = ("name a state dict with the top-level key 'weights: FILE.pth'"
                    if key == "weights" else "remove it")  # fmt: skip
            problems.append(f"{key!r} is not a builder argument; {hint}")
    return problems


def _recipe(raw: Any) -> RunRecipe:
    if not isinstance(raw, dict):
        raise ConfigError(["must be a mapping (recipe: {target: 7x})"])
    flags = {k: raw[k] for k in COMPARISONS if k in raw}
    problems = [f"{k}: must be true or false; got {v!r}" for k, v in flags.items()
                if not isinstance(v, bool)]  # fmt: skip
    try:
        settings = RecipeSettings.from_dict({k: v for k, v in raw.items() if k not in COMPARISONS})
    except SettingsError as e:
        raise ConfigError(problems + e.problems) from None
    if problems:
        raise ConfigError(problems)
    return RunRecipe(settings, **flags)


def _recipe_form_problems(raw: dict, data: dict, recipe: RunRecipe | None, where: str) -> list[str]:
    """The recipe shares data.unlabeled out itself: the stages' own keys do not apply."""
    problems = [f"{where}: {key!r} belongs to the stages' own form; the recipe section sets "
                "what the recipe does" for key in STAGE_KEYS if key in raw]  # fmt: skip
    problems += [f"{where}: data.{name} belongs to the stages' own form; the recipe shares "
                 "data.unlabeled out itself" for name in STAGE_DATA if name in data]  # fmt: skip
    if "unlabeled" not in data:
        problems.append(f"{where}: data.unlabeled is required with a recipe section (the "
                        "images the recipe sweeps, verifies, retrains and guards on)")  # fmt: skip
    if recipe is not None and recipe.far_off and "far_off" not in data:
        problems.append(f"{where}: recipe.far_off needs data.far_off")
    if recipe is not None and recipe.conventional and data.get("unlabeled") \
            and data["unlabeled"].views is not None:  # fmt: skip
        problems.append(f"{where}: recipe.conventional needs labels, which augmented views "
                        "(data.unlabeled.views) do not have")  # fmt: skip
    return problems


def _contract_problems(contract: Any) -> list[str]:
    """Names and value types of the stated input facts (their values are checked
    when the model's contract is settled)."""
    if not isinstance(contract, dict):
        return [f"must be a mapping of some of {', '.join(FACTS)}; got {contract!r}"]
    problems = [
        f"unknown key {k!r} (known: {', '.join(FACTS)})" for k in contract if k not in FACTS
    ]
    for key in ("mean", "std"):
        values = contract.get(key)
        if values is not None and not (isinstance(values, list) and len(values) in (1, 3) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):  # fmt: skip
            problems.append(f"{key} must be a list of 1 or 3 numbers; got {values!r}")
    for key in ("size", "resize", "channels"):
        value = contract.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{key} must be an int; got {value!r}")
    return problems


def _retrain(raw: Any) -> RunRetrain:
    if not isinstance(raw, dict):
        raise ConfigError(["must be a mapping"])
    flags = {k: raw[k] for k in ("conventional", "far_off") if k in raw}
    bad = [f"{k}: must be true or false; got {v!r}" for k, v in flags.items()
           if not isinstance(v, bool)]  # fmt: skip
    unknown = [f"unknown key {k!r} (known: {', '.join(RETRAIN_KEYS)}, conventional, far_off)"
               for k in raw if k not in RETRAIN_KEYS + ("conventional", "far_off")]  # fmt: skip
    settings = {k: v for k, v in raw.items() if k in RETRAIN_KEYS}
    try:
        config = RetrainConfig.from_dict(settings)
    except SettingsError as e:
        raise ConfigError(unknown + bad + e.problems) from None
    if unknown or bad:
        raise ConfigError(unknown + bad)
    return RunRetrain(config, **flags)


def _data_refs(raw: Any, where: str) -> dict[str, DataRef]:
    if not isinstance(raw, dict):
        raise ConfigError([f"must map names ({', '.join(DATA_NAMES)}) to datasets"])
    refs, problems = {}, []
    for name, value in raw.items():
        if name not in DATA_NAMES:
            problems.append(f"unknown key {name!r} (known: {', '.join(DATA_NAMES)})")
            continue
        if not isinstance(value, (str, dict)):
            problems.append(f"{name} must be a spec string or a mapping")
            continue
        try:
            refs[name] = DataRef.from_value(value, name)
        except SettingsError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return refs
