"""The whole pipeline from one config file (``qretrain run``).

Its names load on first use (``qretrain._lazy``): ``config`` checks a run config
without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.pipeline.config": ("ConfigError", "DataRef", "RunConfig"),
    "qretrain.pipeline.run": ("final_table", "run_pipeline"),
})  # fmt: skip
