"""The plain-text summary of a run: one row per backend and device, one column block per dtype."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from softmax_suite.reports.results import status_counts
from softmax_suite.reports.text import grid as text_grid

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


def _table(results: list[dict]) -> list[str]:
    """The lines of one backend x dtype table of status counts and the worst ULP error."""
    grid: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    dtypes: list[str] = []
    for result in results:
        grid[(result["backend"], result.get("device", "-"))][result.get("dtype", "-")].append(result)
        if result.get("dtype", "-") not in dtypes:
            dtypes.append(result.get("dtype", "-"))
    order = ["float16", "bfloat16", "float32", "float64"]
    dtypes.sort(key=lambda d: order.index(d) if d in order else len(order))
    header = ["backend", *dtypes]
    rows = [[f"{backend} ({device})", *(_cell(cells.get(d, [])) for d in dtypes)]
            for (backend, device), cells in sorted(grid.items())]
    return text_grid([header, *rows])


def format_summary(results: Iterable[dict]) -> str:
    """A backend x dtype table of status counts and the worst ULP error of the accuracy records,
    then, if any, the same table for the invariants records."""
    by_check: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        # Records written before the invariants check existed carry no "check" field.
        by_check[result.get("check") or "accuracy"].append(result)
    if not any(by_check.values()):
        return "no results"
    lines = _table(by_check["accuracy"]) if by_check["accuracy"] else ["no accuracy results"]
    for check in sorted(set(by_check) - {"accuracy"}):
        lines += ["", f"{check}:", *_table(by_check[check])]
    return "\n".join(lines)
