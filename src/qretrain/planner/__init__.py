"""The automatic planner: the smallest plan within a quality budget, from a sweep.

It sits above ``qretrain.analysis`` (the sweep it reads), ``qretrain.plan`` (the plan
it writes) and ``qretrain.apply`` (which verifies the plan on data).
"""

from qretrain.planner.auto import AutoPlan, Pick, auto_plan
from qretrain.planner.settings import Metric, PlanSettings

__all__ = ["AutoPlan", "Metric", "Pick", "PlanSettings", "auto_plan"]
