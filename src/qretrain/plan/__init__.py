"""Plans: which tensors get clustered, with which k, method and granularity."""

from qretrain.plan.plan import Choice, Decision, Plan, PlanError
from qretrain.plan.rules import Rule, Specificity, parse_kinds, parse_layers

__all__ = [
    "Choice",
    "Decision",
    "Plan",
    "PlanError",
    "Rule",
    "Specificity",
    "parse_kinds",
    "parse_layers",
]
