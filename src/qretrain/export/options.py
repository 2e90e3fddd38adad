"""The formats a model is exported in (torch-free: the command line offers them)."""

from __future__ import annotations

import enum


class Format(str, enum.Enum):
    SAFETENSORS = "safetensors"
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    COREML = "coreml"


FORMATS = tuple(f.value for f in Format)
