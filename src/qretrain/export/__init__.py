"""Exports: a qretrain model in formats other tools read (see ``export``)."""

from qretrain.export.formats import FORMATS, ExportResult, export

__all__ = ["FORMATS", "ExportResult", "export"]
