"""The error-by-gap plot: every bit pattern of a narrow dtype (65536 of float16 or bfloat16, 256 of
a float8) as the varying entry x of short rows, its results binned by binade, read from the
`pattern` field of the results ({"row": "[0, x]", "by_gap": [{"binade", "count", "max_ulp",
"max_ratio", "semantic"}, ...]}; docs/report.md). A reader sees at which gap each backend's
accuracy breaks.

Per dtype, a chart per row kind and op, one line per backend/device: the largest ULP error in each
binade over the results of that backend, op and row kind (every cotangent of a VJP), the binades
over budget shaded and ringed, those with semantic differences marked; and in words, per line,
the binades where it breaks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from softmax_suite.reports import charts
from softmax_suite.reports.semantics import DTYPES, OPS, backend_name, ordered

ROW_KINDS = ("[0, x]", "[x, 0, 0, 0]", "[x, x-1, x-2, x-3]")
# What a row kind's binade measures: the gap max - min ([0, x] and [x, 0, 0, 0]: |x|), or x itself
# (the row's max, its gaps to the others at most 3).
QUANTITY = {"[0, x]": "gap", "[x, 0, 0, 0]": "gap", "[x, x-1, x-2, x-3]": "|x|"}


def pattern_of(record: dict) -> dict | None:
    """The result's `pattern` field where it has bins, else None (older files, other cases)."""
    pattern = record.get("pattern")
    if isinstance(pattern, dict) and isinstance(pattern.get("by_gap"), list):
        return pattern
    return None


def row_of(pattern: dict) -> str:
    row = pattern.get("row")
    return row if isinstance(row, str) and row else "?"


def _value(value: object) -> float | None:
    """A record's Number: a JSON number, or "nan", "inf", "-inf" as text; None for anything else."""
    if value in ("nan", "inf", "-inf"):
        return float(value)  # type: ignore[arg-type]
    return charts.real(value)


def _larger(a: float | None, b: float | None) -> float | None:
    """The larger of two measured values, a NaN only where neither is a number."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b if b is not None else a
    if b is None or math.isnan(b):
        return a
    return max(a, b)


@dataclass
class Merged:
    """One binade of one line, merged over its results (cotangents, files)."""

    count: int = 0
    ulp: float | None = None
    ratio: float | None = None
    semantic: int = 0
    results: int = 0
    kinds: set[str] = field(default_factory=set)

    def add(self, entry: dict, cotangent: str | None) -> None:
        count = charts.real(entry.get("count"))
        self.count += int(count) if count is not None and 0 <= count < math.inf else 0
        self.ulp = _larger(self.ulp, _value(entry.get("max_ulp")))
        self.ratio = _larger(self.ratio, _value(entry.get("max_ratio")))
        semantic = charts.real(entry.get("semantic"))
        self.semantic += int(semantic) if semantic is not None and 0 < semantic < math.inf else 0
        self.results += 1
        if cotangent:
            self.kinds.add(cotangent)

    @property
    def over(self) -> bool:
        return self.ratio is not None and not math.isnan(self.ratio) and self.ratio > 1

    def title(self) -> str:
        parts = [f"max {charts.number(self.ulp)} ULP" if self.ulp is not None else "nothing measured",
                 f"{charts.number(self.ratio)} of its budget" if self.ratio is not None else None,
                 "OVER BUDGET" if self.over else None,
                 f"{self.semantic} semantic difference{'s' * (self.semantic != 1)}" * bool(self.semantic),
                 f"{self.count} pattern{'s' if self.count != 1 else ''}"]
        if len(self.kinds) > 1:
            parts.append(f"the worst of {len(self.kinds)} cotangents")
        return ", ".join(p for p in parts if p)


def merged(records: Iterable[dict]) -> dict[object, Merged]:
    """The bins of these results (one backend, dtype, op and row kind) by binade; a bin that is no
    dict is dropped, one whose binade is no binade kept under it (the chart leaves it out, counted)."""
    bins: dict[object, Merged] = {}
    for record in records:
        for entry in pattern_of(record)["by_gap"]:
            if not isinstance(entry, dict):
                continue
            binade = entry.get("binade")
            key = binade if charts.is_binade(binade) else repr(binade)
            bins.setdefault(key, Merged()).add(entry, record.get("cotangent"))
    return bins


def _ranges(binades: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive binades as (first, last) runs."""
    runs: list[tuple[int, int]] = []
    for k in sorted(binades):
        if runs and k == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    return runs


def _span(first: int, last: int, quantity: str) -> str:
    return f"{charts.power_of_two(first)} ≤ {quantity} < {charts.power_of_two(last + 1)}"


def breaks(bins: dict[object, Merged], quantity: str = "gap") -> str | None:
    """Where a line breaks, in words: "over budget at 2¹¹ ≤ gap < 2¹⁶; semantic differences (3) at
    gap = 0"; None where every bin is within budget with no semantic difference."""
    parts = []
    kinds = (("over budget", lambda m: m.over), ("semantic differences", lambda m: m.semantic > 0))
    for what, chosen in kinds:
        keys = [k for k, m in bins.items() if chosen(m) and charts.is_binade(k)]
        if not keys:
            continue
        spans = [_span(a, b, quantity) for a, b in _ranges(k for k in keys if k is not None)]
        if None in keys:
            spans.insert(0, f"{quantity} = 0")
        count = sum(m.semantic for k, m in bins.items() if k in keys) if what.startswith("semantic") else 0
        parts.append(f"{what}{f' ({count})' if count else ''} at {', '.join(spans)}")
    return "; ".join(parts) or None


def patterns(records: Sequence[dict]) -> dict:
    """The section's model: {"dtypes": [{"dtype", "breaks": [text], "rows": [{"row", "quantity",
    "charts": [{"op", "svg", "breaks": [(backend, text)]}]}]}], "legend": [(backend, colour)],
    "results": n}; no dtypes where no result has a pattern."""
    by_line: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for record in records:
        pattern = pattern_of(record)
        if pattern is not None and record.get("status") not in ("unsupported", "skip"):
            key = (record.get("dtype") or "?", row_of(pattern), record.get("op") or "?", backend_name(record))
            by_line[key].append(record)
    if not by_line:
        return {"dtypes": [], "legend": [], "results": 0}
    names = sorted({key[3] for key in by_line})
    colours = {name: charts.colour(i) for i, name in enumerate(names)}
    sections = []
    for dtype in ordered((key[0] for key in by_line), DTYPES):
        rows, said = [], []
        for row in ordered((key[1] for key in by_line if key[0] == dtype), ROW_KINDS):
            quantity = QUANTITY.get(row, "the binned entry")
            made = []
            for op in ordered((key[2] for key in by_line if key[:2] == (dtype, row)), OPS):
                lines, broken = [], []
                for name in names:
                    found = by_line.get((dtype, row, op, name))
                    if not found:
                        continue
                    bins = merged(found)
                    lines.append(charts.BinLine(name, colours[name], [
                        charts.Bin(k if charts.is_binade(k) else "?", m.ulp, m.ratio, m.semantic, m.title())
                        for k, m in bins.items()]))
                    where = breaks(bins, quantity)
                    if where:
                        broken.append((name, where))
                        said.append(f"{name} {op} on {row}: {where}")
                svg = charts.binade_chart(lines, f"{op}, rows {row}", quantity)
                made.append({"op": op, "svg": svg, "breaks": broken})
            rows.append({"row": row, "quantity": quantity, "charts": made})
        sections.append({"dtype": dtype, "rows": rows, "breaks": said,
                         "count": sum(len(row["charts"]) for row in rows)})
    return {"dtypes": sections, "legend": [(name, colours[name]) for name in names],
            "results": sum(map(len, by_line.values()))}
