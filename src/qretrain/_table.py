"""Plain-text tables for reports and the CLI."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: str = "") -> str:
    """Columns padded to their widest cell; ``right`` holds 'r' per right-aligned column."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        out = []
        for i, cell in enumerate(row):
            aligned = cell.rjust(widths[i]) if right[i : i + 1] == "r" else cell.ljust(widths[i])
            out.append(aligned)
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def human_bytes(n: float) -> str:
    """1536 -> '1.50 KiB'; bytes below 1 KiB as a whole number; GiB at most."""
    unit = "B"
    for larger in ("KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            break
        n, unit = n / 1024, larger
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
