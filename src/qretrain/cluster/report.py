"""What ``cluster_`` did to every tensor of a model, as an object that prints and dumps."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from qretrain._table import format_table, human_bytes


@dataclass(frozen=True)
class TensorRecord:
    """One state-dict tensor after clustering.

    ``stored_bytes`` is the packed layout before gzip: bit-packed indices plus
    codebook for clustered tensors, the raw bytes otherwise.
    """

    name: str
    kind: str | None
    layer: int | None
    shape: tuple[int, ...]
    numel: int
    clustered: bool
    reason: str  # the rule that clustered it, or why it stayed as it was
    k: int | None = None
    k_used: int | None = None
    method: str | None = None
    granularity: str | None = None
    sq_error: float | None = None
    bits_per_weight: float = 32.0
    stored_bytes: int = 0
    original_bytes: int = 0


@dataclass(frozen=True)
class ClusterReport:
    records: tuple[TensorRecord, ...]

    @property
    def clustered(self) -> tuple[TensorRecord, ...]:
        return tuple(r for r in self.records if r.clustered)

    @property
    def original_bytes(self) -> int:
        return sum(r.original_bytes for r in self.records)

    @property
    def stored_bytes(self) -> int:
        return sum(r.stored_bytes for r in self.records)

    @property
    def reduction(self) -> float:
        """Share of bytes saved by the packed layout before gzip, in [0, 1)."""
        return 1 - self.stored_bytes / self.original_bytes if self.original_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_bytes": self.original_bytes,
            "stored_bytes": self.stored_bytes,
            "reduction": self.reduction,
            "clustered_tensors": len(self.clustered),
            "tensors": [asdict(r) for r in self.records],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self, only_clustered: bool = False) -> str:
        rows = []
        for r in self.records:
            if only_clustered and not r.clustered:
                continue
            rows.append(
                [
                    r.name,
                    r.layer or "",
                    r.kind or "",
                    r.numel,
                    r.k_used if r.clustered else "-",
                    r.method or "",
                    f"{r.sq_error:.4g}" if r.sq_error is not None else "",
                    f"{r.bits_per_weight:.2f}",
                    r.stored_bytes,
                    r.reason,
                ]
            )
        headers = [
            "tensor",
            "layer",
            "kind",
            "numel",
            "k",
            "method",
            "sq.err",
            "bits/w",
            "bytes",
            "why",
        ]
        return format_table(headers, rows, right="lrlrrlrrrl")

    def summary(self) -> str:
        n = len(self.clustered)
        return (
            f"{n} of {len(self.records)} tensors clustered; "
            f"{human_bytes(self.original_bytes)} -> {human_bytes(self.stored_bytes)} packed "
            f"before gzip ({self.reduction:.2%} smaller)"
        )

    def __str__(self) -> str:
        return self.table() + "\n" + self.summary()
