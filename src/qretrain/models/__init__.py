"""Models: specs that name and rebuild architectures, and what a model holds.

Its names load on first use (``qretrain._lazy``): the torch-free modules (``names``,
``forms``, ``selector``) import without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.models.names": ("BN_KINDS", "ParamKind"),
    "qretrain.models.layers": ("CLUSTERABLE", "LAYER_TYPES", "TensorInfo", "describe_tensors",
                               "number_layers"),
    "qretrain.models.loading": ("check_fits", "load_model", "load_state_dict_file"),
    "qretrain.models.specs": ("ArchSpec", "Builder", "Origin", "build_model", "get_arch",
                              "known_specs", "register_builder", "set_arch"),
})  # fmt: skip
