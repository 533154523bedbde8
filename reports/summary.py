"""The plain-text summary of a run: one row per backend and device, one column block per dtype."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from reports.results import status_counts

SHORT = {"pass": "ok", "fail": "fail", "known_failure": "known", "error": "err",
         "unsupported": "unsup", "skip": "skip"}


def _cell(results: list[dict]) -> str:
    counts = status_counts(results)
    parts = [f"{counts[s]} {SHORT[s]}" for s in SHORT if counts.get(s)]
    worst = [r["metrics"]["max_ulp"] for r in results
             if r.get("metrics", {}).get("max_ulp") is not None and r["status"] != "skip"]
    if worst:
        parts.append(f"worst {max(worst):.3g} ulp")
    return ", ".join(parts)


def format_summary(results: Iterable[dict]) -> str:
    """A backend x dtype table of status counts and the worst ULP error."""
    grid: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    dtypes: list[str] = []
    for result in results:
        grid[(result["backend"], result.get("device", "-"))][result.get("dtype", "-")].append(result)
        if result.get("dtype", "-") not in dtypes:
            dtypes.append(result.get("dtype", "-"))
    if not grid:
        return "no results"
    order = ["float16", "bfloat16", "float32", "float64"]
    dtypes.sort(key=lambda d: order.index(d) if d in order else len(order))
    header = ["backend", *dtypes]
    rows = [[f"{backend} ({device})", *(_cell(cells.get(d, [])) for d in dtypes)]
            for (backend, device), cells in sorted(grid.items())]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
