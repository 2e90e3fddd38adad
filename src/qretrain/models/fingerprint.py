"""Fingerprints: SHA-256 digests that tell whether two runs saw the same thing."""

from __future__ import annotations

import hashlib

from torch import nn


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every state-dict name and tensor."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
