"""The whole pipeline from one config file (``qretrain run``)."""

from qretrain.pipeline.config import ConfigError, DataRef, RunConfig
from qretrain.pipeline.run import final_table, run_pipeline

__all__ = ["ConfigError", "DataRef", "RunConfig", "final_table", "run_pipeline"]
