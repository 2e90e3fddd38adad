"""Models: specs that name and rebuild architectures, and what a model holds."""

from qretrain.models import builders  # noqa: F401  (registers the built-in specs)
from qretrain.models.layers import (
    BN_KINDS,
    CLUSTERABLE,
    LAYER_TYPES,
    ParamKind,
    TensorInfo,
    describe_tensors,
    number_layers,
)
from qretrain.models.loading import check_fits, load_model, load_state_dict_file
from qretrain.models.specs import (
    ArchSpec,
    Builder,
    Origin,
    build_model,
    get_arch,
    known_specs,
    register_builder,
    set_arch,
)

__all__ = [
    "BN_KINDS",
    "CLUSTERABLE",
    "LAYER_TYPES",
    "ArchSpec",
    "Builder",
    "Origin",
    "ParamKind",
    "TensorInfo",
    "build_model",
    "check_fits",
    "describe_tensors",
    "get_arch",
    "known_specs",
    "load_model",
    "load_state_dict_file",
    "number_layers",
    "register_builder",
    "set_arch",
]
