"""Exports: a qretrain model in formats other tools read (see ``export``).

Its names load on first use (``qretrain._lazy``): ``options`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.export.formats": ("ExportResult", "export"),
    "qretrain.export.options": ("FORMATS", "Format"),
})  # fmt: skip
