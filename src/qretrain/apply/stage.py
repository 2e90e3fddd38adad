"""``compress``: cluster a model as a plan says and save it, with one record.

The command line's ``qretrain compress`` and the pipeline's compress stage both run
this, so the record beside the file (``OUT.json`` / ``compress.json``) has one form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from qretrain._table import human_bytes
from qretrain.cluster.report import ClusterReport
from qretrain.apply.model import cluster_
from qretrain.apply.settings import CompressSettings
from qretrain.plan import Plan
from qretrain.storage import SaveResult, save


@dataclass(frozen=True)
class ClusteredFile:
    report: ClusterReport  # every tensor, clustered or skipped with the reason
    saved: SaveResult
    plan: Plan

    @property
    def reduction(self) -> float:
        return 1 - self.saved.file_bytes / self.report.original_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "layout": self.saved.layout.value,
            "file": self.saved.path.name,
            "file_bytes": self.saved.file_bytes,
            "float32_bytes": self.report.original_bytes,
            "reduction": self.reduction,
            "tensors_clustered": len(self.report.clustered),
            "tensors": len(self.report.records),
            "tensor_file_bytes": self.saved.tensor_bytes,
            "breakdown": self.saved.breakdown,
            "report": self.report.to_dict(),
        }

    def summary(self) -> str:
        return (
            f"{len(self.report.clustered)} of {len(self.report.records)} tensors clustered; "
            f"float32 {human_bytes(self.report.original_bytes)} -> file "
            f"{human_bytes(self.saved.file_bytes)} ({self.reduction:.2%} smaller, "
            f"{self.report.original_bytes / self.saved.file_bytes:.2f}x, "
            f"{self.saved.layout.value} layout)"
        )


def cluster_and_save(model: nn.Module, plan: Plan, path: str | Path,
             settings: CompressSettings = CompressSettings(), *,
             record_path: str | Path | None = None, extra: dict[str, Any] | None = None,
             data=None, progress: bool = True) -> ClusteredFile:  # fmt: skip
    """Cluster ``model`` in place with ``plan`` and save it to ``path``; the record
    (``record_path``, by default ``path`` with ``.json``) is committed with the file.
    ``extra`` adds fields to the record (the CLI records the model spec). ``data``:
    images for ``sensitive-kmeans`` rules (a callable is called only if one needs it)."""
    if settings.method is not None:
        plan = plan.with_method(settings.method)
    if callable(data):
        data = data() if plan.needs_data else None
    report = cluster_(model, plan, data=data, progress=progress)
    holder: dict[str, ClusteredFile] = {}

    def record(saved: SaveResult) -> dict[str, Any]:
        holder["result"] = ClusteredFile(report, saved, plan)
        return {**(extra or {}), **holder["result"].to_dict()}

    save(
        model,
        path,
        layout=settings.layout,
        fold_batchnorm=settings.fold_batchnorm,
        record=record,
        record_path=record_path,
    )
    return holder["result"]
