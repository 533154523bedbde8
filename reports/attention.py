"""The report's attention section: each backend's declared convention for fully masked rows beside
what it returned, and the attention cases (a scale or a mask: docs/attention.md) by backend, so a
reader sees which kernel fails which tile layout."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from softmax_suite.reports.choice import labeller
from softmax_suite.reports.semantics import DTYPES, OPS, backend_name, ordered
from softmax_suite.reports.verdict import describe, severity

UNEXPECTED = ("fail", "error")
# What a returned convention looks like, per op: the "zero" convention's values are 0 and -inf.
LOGS = ("log_softmax", "logsumexp")
SHOWN = {(op, value): {"nan": "NaN", "other": "neither"}.get(value, "-inf" if op in LOGS else "0")
         for op in OPS for value in ("nan", "zero", "other")}


def is_attention(record: dict) -> bool:
    """A result of attention's forms: its case passed a scale or a mask."""
    return "scale" in record or "mask" in record


def attention(records: Sequence[dict], capabilities: Sequence[dict] = ()) -> dict:
    """{"conventions": per backend, "backends": labels, "rows": per case, "not_asked": backends' reasons};
    empty lists where no result asked attention's forms."""
    judged = ("pass", "known_failure", *UNEXPECTED)
    asked = [r for r in records if is_attention(r) and r.get("status") in judged]
    labels = labeller(asked)
    by_cell: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in asked:
        by_cell[(record["case"], labels[backend_name(record)])].append(record)
    backends = sorted({name for _, name in by_cell})
    cases = sorted({case for case, _ in by_cell})
    rows = [{"case": case, "about": _about(by_cell, case, backends),
             "cells": [_cell(by_cell.get((case, name), [])) for name in backends]} for case in cases]
    not_asked = sorted({f"{entry['backend']}: {entry['reason']}" for entry in capabilities
                        if entry.get("option") in ("scale", "mask")})
    return {"conventions": _conventions(asked, labels), "backends": backends, "rows": rows,
            "not_asked": not_asked}


def _about(by_cell: dict, case: str, backends: list[str]) -> str:
    """The case's scale and mask, as its records say (per dtype the scale is the one rounded into it)."""
    records = [r for name in backends for r in by_cell.get((case, name), [])]
    record = records[0]
    parts = []
    scales = sorted({float(r["scale"]) for r in records if "scale" in r})
    if len(scales) == 1:
        parts.append(f"scale {scales[0]:.6g}")
    elif scales:
        parts.append(f"scale {scales[0]:.6g} to {scales[-1]:.6g} (rounded into each dtype)")
    mask = record.get("mask")
    if mask:
        parts.append(f"{mask['masked']} of {mask['kept'] + mask['masked']} masked")
        if mask["fully_masked_rows"]:
            parts.append(f"{mask['fully_masked_rows']} rows fully masked")
    return ", ".join(parts)


def _cell(records: list[dict]) -> dict | None:
    """A backend's results on one case, every dtype, op and cotangent: its state and what it found."""
    if not records:
        return None
    unexpected = [r for r in records if r["status"] in UNEXPECTED]
    known = sum(r["status"] == "known_failure" for r in records)
    state = "fail" if unexpected else ("known" if known else "pass")
    text = f"✗ {len(unexpected)}" if unexpected else (f"⚑ {known}" if known else "✓")
    dtypes = ordered({r["dtype"] for r in records}, DTYPES)
    title = [f"{len(records)} results in {', '.join(dtypes)}"]
    if known:
        title.append(f"{known} known deviation{'s' * (known != 1)}")
    if unexpected:
        title.append(f"{len(unexpected)} unexpected, the worst {describe(max(unexpected, key=severity))}")
    return {"state": state, "text": text, "title": "; ".join(title)}


def _conventions(records: Sequence[dict], labels: dict[str, str]) -> list[dict]:
    """Per backend: the convention it declared, and what each op returned on fully masked rows."""
    declared: dict[str, set[str]] = defaultdict(set)
    returned: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for record in records:
        name = labels[backend_name(record)]
        if record.get("fully_masked"):
            declared[name].add(record["fully_masked"])
        if record.get("fully_masked_returned"):
            returned[name][record["op"]].add(record["fully_masked_returned"])
    rows = []
    for name in sorted(declared):
        convention = ", ".join(sorted(declared[name]))
        cells = []
        for op in ordered(returned[name], OPS):
            found = ", ".join(sorted(returned[name][op]))
            # The VJPs' answer is 0 under either convention (docs/attention.md); logsumexp's -inf.
            expected = "zero" if op.endswith("_vjp") or op == "logsumexp" else convention
            shown = ", ".join(SHOWN[(op, value)] for value in sorted(returned[name][op]))
            cells.append({"op": op, "returned": shown, "agrees": found == expected})
        rows.append({"backend": name, "declared": convention, "cells": cells})
    return rows
