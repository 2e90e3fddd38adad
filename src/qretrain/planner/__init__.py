"""The automatic planner: the smallest plan within a quality budget, from a sweep.

It sits above ``qretrain.analysis`` (the sweep it reads), ``qretrain.plan`` (the plan
it writes) and ``qretrain.apply`` (which verifies the plan on data). Its names load
on first use (``qretrain._lazy``): ``settings`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.planner.auto": ("AutoPlan", "Pick", "auto_plan"),
    "qretrain.planner.settings": ("Metric", "PlanSettings"),
})  # fmt: skip
