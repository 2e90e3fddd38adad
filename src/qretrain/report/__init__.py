"""Reports of a run folder: report.md and a self-contained report.html."""

from qretrain.report.render import write_report

__all__ = ["write_report"]
