"""Plain-text tables for the terminal: aligned columns under a ruled header row."""

from __future__ import annotations


def grid(rows: list[list[str]]) -> list[str]:
    """The lines of a table whose first row is the header, columns padded to their widest cell."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
