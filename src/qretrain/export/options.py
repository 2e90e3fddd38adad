"""The formats a model is exported in (torch-free: the command line offers them)."""

from __future__ import annotations

import enum


class Format(str, enum.Enum):
    SAFETENSORS = "safetensors"
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    COREML = "coreml"


FORMATS = tuple(f.value for f in Format)


class Deploy(str, enum.Enum):
    """What a plan is sized for: the qretrain file, or the artifact a device loads."""

    H5 = "h5"  # the packed .h5 file (every k from 1 to 256 stored exactly)
    COREML = "coreml"  # an ML program .mlpackage (lookup tables of 1, 2, 3, 4, 6 or 8 bits)


# The k each target stores exactly; absent: every k. Core ML keeps a table of 2^bits
# values for 1, 2, 3, 4, 6 or 8 bits, so k=32 would pay 6 bits and k=128 8 bits: no
# plan for it chooses them. (k=2 is 1 bit.)
EXACT_K = {Deploy.COREML: (2, 4, 8, 16, 64, 256)}
