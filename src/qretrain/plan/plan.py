"""A plan: rules that say which tensors get clustered, with which k and method.

Precedence, when several rules match one tensor: the most specific rule wins, in
this order: an exact module name > a name pattern (glob or ``re:``) > layer
numbers > module type > kinds only. Among equally specific rules the later one
wins. A rule with ``k: null`` leaves what it wins alone.

Every rule must match at least one tensor of the model it is applied to; a rule
that matches nothing is an error naming the rule (usually a typo).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from qretrain.cluster.options import Granularity, Method, parse_enum
from qretrain.errors import QretrainError
from qretrain.models.layers import TensorInfo, describe_tensors, type_names
from qretrain.plan.rules import Rule, parse_options, unknown_keys

PLAN_KEYS = ("method", "granularity", "seed", "rules")


class PlanError(QretrainError):
    """A plan that cannot be read or does not fit the model; lists every problem."""


@dataclass(frozen=True)
class Choice:
    """What a plan does to one tensor."""

    k: int
    method: Method
    granularity: Granularity
    rule: int  # 1-based index of the winning rule


@dataclass(frozen=True)
class Decision:
    """One state-dict tensor, and the plan's verdict on it."""

    info: TensorInfo
    choice: Choice | None  # None: stays float32 (see reason)
    reason: str


@dataclass(frozen=True)
class Plan:
    """Rules plus the defaults for rules that name no method or granularity."""

    rules: tuple[Rule, ...] = ()
    method: Method = Method.KMEANS
    granularity: Granularity = Granularity.TENSOR
    seed: int = 0
    source: str | None = field(default=None, compare=False)  # file it came from

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "method", parse_enum(Method, self.method, "method"))
        object.__setattr__(
            self, "granularity", parse_enum(Granularity, self.granularity, "granularity")
        )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise PlanError(f"seed must be a non-negative int; got {self.seed!r}")

    # --- forms -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str | None = None) -> Plan:
        """Parse the dict form; all problems are reported together."""
        where = f"plan {source}" if source else "plan"
        if not isinstance(d, dict):
            raise PlanError(f"{where} must be a mapping with 'rules'; got {type(d).__name__}")
        errors = unknown_keys(d, PLAN_KEYS, where)
        raw_rules = d.get("rules")
        if not isinstance(raw_rules, list):  # [] is a plan too: a file with nothing clustered
            errors.append(f"{where}: 'rules' must be a list of rules")
            raw_rules = []
        rules = []
        for i, raw in enumerate(raw_rules, start=1):
            try:
                rules.append(Rule.from_dict(raw, f"rule {i}"))
            except ValueError as e:
                errors.append(str(e))
        kwargs: dict[str, Any] = {}
        errors += parse_options(d, where, kwargs)
        if "seed" in d:
            kwargs["seed"] = d["seed"]
        if errors:
            raise PlanError("\n".join(errors))
        return cls(rules=tuple(rules), source=source, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.value,
            "granularity": self.granularity.value,
            "seed": self.seed,
            "rules": [r.to_dict() for r in self.rules],
        }

    @classmethod
    def from_yaml(cls, text: str, source: str | None = None) -> Plan:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise PlanError(f"plan {source or ''} is not valid YAML: {e}".replace("  ", " ")) from e
        return cls.from_dict(data, source)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"plan file {str(path)!r} does not exist")
        return cls.from_yaml(path.read_text(), source=str(path))

    @classmethod
    def coerce(cls, plan: Plan | dict | str | Path) -> Plan:
        """A Plan from a Plan, its dict form, or a YAML file path."""
        if isinstance(plan, Plan):
            return plan
        if isinstance(plan, dict):
            return cls.from_dict(plan)
        if isinstance(plan, (str, Path)):
            return cls.load(plan)
        raise TypeError(f"plan must be a Plan, dict or YAML path; got {type(plan).__name__}")

    @property
    def needs_data(self) -> bool:
        """Whether clustering needs data: some rule (or the default) is sensitive-kmeans."""
        return self.method is Method.SENSITIVE or any(
            r.method is Method.SENSITIVE for r in self.rules)  # fmt: skip

    def with_method(self, method: Method | str) -> Plan:
        """This plan with another default method (rules naming one keep theirs)."""
        return replace(self, method=parse_enum(Method, method, "method"))

    # --- resolution --------------------------------------------------------------------
    def resolve(
        self, model: nn.Module, example_input: torch.Tensor | None = None
    ) -> list[Decision]:
        """One Decision per state-dict tensor of ``model``, in state-dict order.

        Raises PlanError naming every rule that matches no tensor.
        """
        infos = describe_tensors(model, example_input)
        matched = [False] * len(self.rules)
        types_of: dict[str, tuple[str, ...]] = {}
        decisions = []
        for info in infos:
            reason = info.unclusterable_reason()
            if reason is not None:
                decisions.append(Decision(info, None, f"not clusterable: {reason}"))
                continue
            if info.module_name not in types_of:
                module = model.get_submodule(info.module_name) if info.module_name else model
                types_of[info.module_name] = type_names(module)
            winner = None
            for i, rule in enumerate(self.rules):
                if rule.matches(info, types_of[info.module_name]):
                    matched[i] = True
                    if winner is None or rule.specificity >= self.rules[winner].specificity:
                        winner = i
            decisions.append(self._decide(info, winner))
        unmatched = [i for i, hit in enumerate(matched) if not hit]
        if unmatched:
            raise PlanError(
                "\n".join(
                    f"rule {i + 1} ({self.rules[i].describe()}) matches no clusterable tensor "
                    "of this model; `qretrain inspect MODEL` lists names, types and layer numbers"
                    for i in unmatched
                )
            )
        return decisions

    def _decide(self, info: TensorInfo, winner: int | None) -> Decision:
        if winner is None:
            return Decision(info, None, "no rule selects it")
        rule = self.rules[winner]
        if rule.k is None:
            return Decision(info, None, f"rule {winner + 1} leaves it alone (k: null)")
        choice = Choice(
            k=rule.k,
            method=rule.method or self.method,
            granularity=rule.granularity or self.granularity,
            rule=winner + 1,
        )
        return Decision(info, choice, f"rule {winner + 1}")
