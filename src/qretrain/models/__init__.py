"""Models: specs that name and rebuild architectures, and what a model holds."""

from qretrain.models.layers import (
    BN_KINDS,
    CLUSTERABLE,
    LAYER_TYPES,
    ParamKind,
    TensorInfo,
    describe_tensors,
    number_layers,
)
from qretrain.models.specs import (
    ArchSpec,
    build_model,
    get_arch,
    known_specs,
    load_model,
    register_builder,
    set_arch,
)

__all__ = [
    "BN_KINDS",
    "CLUSTERABLE",
    "LAYER_TYPES",
    "ArchSpec",
    "ParamKind",
    "TensorInfo",
    "build_model",
    "describe_tensors",
    "get_arch",
    "known_specs",
    "load_model",
    "number_layers",
    "register_builder",
    "set_arch",
]
