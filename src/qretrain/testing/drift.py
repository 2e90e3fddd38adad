"""Comparing two runs that should give the same model.

On a CPU with AVX-512 a resumed, spilled or sharded block-wise run equals an
uninterrupted one to the bit. On AVX2 alone oneDNN picks its kernels by batch size and
alignment, so such runs drift by float rounding that training amplifies (up to 1.1e-3
in a weight of the tests' tiny ResNet), and a drift can even flip a learned assignment.
"""

from __future__ import annotations

import torch

EXACT = torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def assert_same(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    """``a`` equals ``b``: to the bit where EXACT, else within rounding's drift."""
    if EXACT:
        assert torch.equal(a, b), name
    else:
        a, b = a.double(), b.double()
        assert torch.allclose(a, b, rtol=1e-2, atol=3e-3), (name, float((a - b).abs().max()))
