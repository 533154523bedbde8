"""The report's first screen: per dtype and op, the backends from the most to the least accurate,
each beside its speed, so that "which backend for float16, and what does it cost" has an answer
at a glance.

Accuracy is read from the accuracy and invariants results: the share within their budgets first
(a known deviation is off its budget too: known, not good), then how much of its budget the closest
passing result used. Speed is the median fraction of the copy bandwidth over the sizes timed.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence

from softmax_suite.reports.charts import real
from softmax_suite.reports.semantics import DTYPES, OPS, backend_name, ordered
from softmax_suite.reports.verdict import describe, severity

UNEXPECTED = ("fail", "error")
JUDGED = ("pass", "known_failure", *UNEXPECTED)


def _finite(value: object) -> float | None:
    # Results files write non-finite numbers as text, and an integer past any float reads as one:
    # those say nothing to rank by.
    value = real(value)
    return value if value is not None and math.isfinite(value) else None


def labeller(records: Sequence[dict]) -> dict[str, str]:
    """A label per backend/device: the backend alone where every result ran on one device."""
    names = {backend_name(r) for r in records}
    single = len({r.get("device", "-") for r in records}) <= 1
    return {name: name.split("/")[0] if single else name for name in names}


def _speeds(timings: Sequence[dict]) -> dict[tuple[str, str, str], list[float]]:
    fractions: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for record in timings:
        fraction = _finite(record.get("roofline_fraction"))
        if record["status"] == "pass" and fraction:
            fractions[(backend_name(record), record["op"], record["dtype"])].append(fraction)
    return fractions


def standing(name: str, label: str, records: Sequence[dict], fractions: Sequence[float]) -> dict:
    """One backend's accuracy and speed for one op and dtype; `rank` orders these."""
    counts = {status: sum(r["status"] == status for r in records) for status in JUDGED}
    unexpected = [r for r in records if r["status"] in UNEXPECTED]
    total = len(records)
    ratios = [r for r in (_finite((rec.get("bound") or {}).get("ratio")) for rec in records
                          if rec["status"] == "pass") if r is not None]
    headroom = max(ratios, default=None)
    fraction = statistics.median(fractions) if fractions else None
    state = "fail" if unexpected else ("known" if counts["known_failure"] else "pass")
    worst = describe(max(unexpected, key=severity)) if unexpected else None
    title = [f"{label}: {counts['pass']} of {total} results within their error budgets"]
    if headroom is not None:
        title.append(f"the closest passing result used {headroom:.0%} of its budget")
    if counts["known_failure"]:
        title.append(f"{counts['known_failure']} known deviation{'s' * (counts['known_failure'] != 1)}")
    if unexpected:
        title.append(f"{len(unexpected)} unexpected, the worst {worst}")
    title.append(f"{fraction:.2f} of the copy bandwidth (median of {len(fractions)} sizes)"
                 if fraction is not None else "not timed")
    return {"name": name, "label": label, "state": state, "results": total, "within": counts["pass"],
            "known": counts["known_failure"], "unexpected": len(unexpected), "worst": worst,
            "headroom": headroom, "fraction": fraction, "title": "; ".join(title)}


def rank(entry: dict) -> tuple:
    """Nothing unexpected first, then the larger share within budget, then the most budget to
    spare; the faster among equals."""
    return (entry["unexpected"] > 0, -entry["within"] / max(entry["results"], 1),
            entry["headroom"] if entry["headroom"] is not None else 0.0,
            -(entry["fraction"] or 0.0), entry["label"])


def choices(judged: Sequence[dict], timings: Sequence[dict], capabilities: Sequence[dict] = (),
            known_groups: Mapping[tuple[str, str, str], str] | None = None) -> dict:
    """Per dtype: per op, the backends ranked (`rank`) with their standing, and the backends of
    the report that do not offer that op or dtype (with the capability table's reason).
    known_groups gives, by (backend/device, op, dtype), the id of the known deviation that its
    mark links to."""
    known_groups = known_groups or {}
    judged = [r for r in judged if r["status"] in JUDGED and r.get("dtype") in DTYPES]
    labels = labeller(judged)
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for record in judged:
        groups[(record["dtype"], record["op"], backend_name(record))].append(record)
    fractions = _speeds(timings)
    reasons = {(backend_name(e), e["op"], e["dtype"]): e["reason"] for e in capabilities
               if "any" not in (e["device"], e["op"], e["dtype"])}
    everyone = sorted(labels)
    tables = []
    for dtype in ordered((r["dtype"] for r in judged), DTYPES):
        present = sorted({name for (d, _, name) in groups if d == dtype})
        rows = []
        for op in ordered((r["op"] for r in judged if r["dtype"] == dtype), OPS):
            ranked = sorted(({**standing(name, labels[name], groups[(dtype, op, name)],
                                         fractions.get((name, op, dtype), [])),
                              "known_group": known_groups.get((name, op, dtype))}
                             for name in present if (dtype, op, name) in groups), key=rank)
            absent = [(labels[n], reasons.get((n, op, dtype), f"no {op} results"))
                      for n in present if (dtype, op, n) not in groups]
            rows.append({"op": op, "ranked": ranked, "absent": absent})
        missing = [(labels[n], next((why for (b, _, d), why in reasons.items() if b == n and d == dtype),
                                    f"no {dtype} results"))
                   for n in everyone if n not in present]
        tables.append({"dtype": dtype, "rows": rows, "absent": missing})
    return {"dtypes": tables, "timed": bool(fractions)}
