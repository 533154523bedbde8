"""Known deviations grouped by the entry of the known deviations that explains them: its reason,
how many results it explains and where (backends, ops, dtypes), most results first. A full default
run has about a thousand known failures from fifty entries: the reader reads fifty reasons and
opens the one they care about."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from softmax_suite.reports.semantics import DTYPES, OPS, ordered


def group_known(listed: Sequence[dict], labels: Mapping[str, str] | None = None) -> list[dict]:
    """The known failures of `listed` (html.failures' entries) by their entry's reason and link;
    each group {"id", "reason", "link", "count", "backends", "ops", "dtypes", "checks", "items"},
    the backends by their labels (default: backend/device)."""
    labels = labels or {}
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for item in listed:
        if item["expected"]:
            groups[(item["known"] or "no reason recorded", item.get("link") or "")].append(item)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [{"id": f"known-{i}", "reason": reason, "link": link, "count": len(items),
             "backends": sorted({labels.get(item["backend"], item["backend"]) for item in items}),
             "ops": ordered((item["op"] for item in items), OPS),
             "dtypes": ordered((item["dtype"] for item in items), DTYPES),
             "checks": sorted({item["check"] for item in items}), "items": items}
            for i, ((reason, link), items) in enumerate(ranked)]


def holders(groups: Sequence[dict]) -> dict[str, str]:
    """The group holding each known failure's anchor: a link to a result opens its group first."""
    return {item["anchor"]: group["id"] for group in groups for item in group["items"]}


def first_groups(groups: Sequence[dict]) -> dict[tuple[str, str, str], str]:
    """By (backend/device, op, dtype), the group of its known deviations that explains the most."""
    found: dict[tuple[str, str, str], str] = {}
    for group in groups:  # most results first
        for item in group["items"]:
            found.setdefault((item["backend"], item["op"], item["dtype"]), group["id"])
    return found
