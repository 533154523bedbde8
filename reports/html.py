"""The HTML report: results files (and a baseline's gate findings) rendered into one offline file.

`build` turns records into the report's sections, `render` fills the Jinja2 template with
autoescape on (every string from a results file is text, never markup), `write_report` does both
for `softmax-suite report` and the end of `softmax-suite run`.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import jinja2
from markupsafe import Markup

from softmax_suite.ops import is_vjp
from softmax_suite.records import ULP_BIN_EDGES
from softmax_suite.reports import charts
from softmax_suite.reports.agreement import agreement_matrix
from softmax_suite.reports.attention import attention
from softmax_suite.reports.choice import choices, labeller
from softmax_suite.reports.deviations import first_groups, group_known, holders
from softmax_suite.reports.gate import FAIL, NOTE, WARN, Finding
from softmax_suite.reports.ladder import ladder, length_text
from softmax_suite.reports.packing import pack
from softmax_suite.reports.patterns import patterns
from softmax_suite.reports.results import (
    STATUSES,
    capabilities_of,
    loss_words,
    make_folder,
    rerun_command,
    status_counts,
)
from softmax_suite.reports.semantics import DTYPES, OPS, backend_name, ordered, semantics_table
from softmax_suite.reports.verdict import describe, severity

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Reproducers of unexpected results embed inputs up to this many bytes (the special-value cases,
# rows of 1000) and rebuild larger ones, and every known deviation's, from the catalogue,
# digest-checked: a default run's report has ~2000 reproducers, and embedded inputs are the one
# part of them that does not compress when packed.
REPORT_EMBED_LIMIT = 8 * 1024
STATUS_LABELS = {"pass": "passed", "fail": "failed", "known_failure": "known", "error": "error",
                 "unsupported": "unsupported", "skip": "skipped"}
BIN_LABELS = ("≤0.5", *(charts.size_label(e) for e in ULP_BIN_EDGES[1:]),
              f">{charts.size_label(ULP_BIN_EDGES[-1])}")
# The accuracy-against-speed chart's error axis ends here; a worse error is drawn at its top edge,
# marked. A wrong value near 1 stays far below it (float64's relative error of 1 is 2^53 ULP); past
# it lie the errors against ulp(0), the smallest subnormal, of a non-zero where the exact value is 0
# (1e-10 scores 7e34 ULP in float32, inf in float64), which would squash every other point into the
# bottom of the chart.
ULP_AXIS_LIMIT = 2.0**64
# The throughput charts' GB/s axis ends here (a petabyte per second, 50 times any cache's bandwidth
# today); past it lies a timing of about 0 s.
GB_PER_S_AXIS_LIMIT = 1e6


def check_of(record: dict) -> str:
    # Records written before the invariants check existed carry no "check" field.
    return record.get("check") or "accuracy"


class Details:
    """The table the report's script reads on click: one entry per explained element. Entries
    of a kind share one list of labels (its schema) and carry only their values, which keeps
    a full run's table small."""

    def __init__(self) -> None:
        self.schemas: dict[str, list[str]] = {}
        self.entries: list[list] = []

    def add(self, kind: str, title: str, rows: Sequence[tuple[str, object]],
            anchor: str | None = None) -> int:
        labels = self.schemas.setdefault(kind, [label for label, _ in rows])
        if len(labels) != len(rows):
            raise ValueError(f"details of kind {kind!r} with {len(rows)} rows, its schema has {len(labels)}")
        values = [None if value in (None, "", [], {}) else _plain(value) for _, value in rows]
        self.entries.append([kind, title, values, anchor])
        return len(self.entries) - 1

    def as_dict(self) -> dict:
        return {"schemas": self.schemas, "entries": self.entries}


def _plain(value: object) -> str:
    if isinstance(value, float):
        return charts.number(value, 4)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_plain, value)) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return str(value)


def _number(value: object) -> float | None:
    """A record's Number (softmax_suite.records): a JSON number, or "nan", "inf" or "-inf" as text
    (JSON has no such numbers); None for anything else."""
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return charts.real(value)


def _ulp(record: dict) -> float | None:
    """The record's max ULP error, infinite included; None where it measured none: no metric, or
    one that is no error (NaN, negative), which the heatmap would otherwise colour as rounded."""
    value = _number((record.get("metrics") or {}).get("max_ulp"))
    return value if value is not None and value >= 0 else None


def _row_label(record: dict) -> str:
    return f"{record['case']} / {record['cotangent']}" if record.get("cotangent") else record["case"]


# Two "worst" numbers describe a result, often of different elements: the element worst for its
# budget (metrics.worst: the one the judge's message names, and the verdict's) and the largest error
# of any element (metrics.max_ulp: the heatmap's colour). Their labels say which is which.
WORST_FOR_BUDGET = "worst for its budget (the message's): element"
LARGEST = "largest error, any element (ULP)"


def _worst_index(record: dict, index: object) -> object:
    # A reduced loss is one value: its index is [], which would show as nothing.
    return "[] (the loss: one value)" if index == [] and record.get("loss") else index


def _accuracy_rows(record: dict) -> list[tuple[str, object]]:
    metrics = record.get("metrics") or {}
    bound = record.get("bound") or {}
    worst = metrics.get("worst") or {}
    return [
        ("status", record["status"]), ("message", record.get("message")),
        # A loss's question beyond its logits: reduction, ignored rows, smoothing, class weights.
        ("loss", loss_words(record.get("loss"))),
        # The element's values in full: the digits are the point.
        (WORST_FOR_BUDGET, _worst_index(record, worst.get("index"))), ("its error (ULP)", worst.get("ulp")),
        ("its budget (ULP)", bound.get("budget_ulp")), ("its error / budget", bound.get("ratio")),
        ("got", _full(worst.get("got"))),
        ("exact", worst.get("exact")), ("correctly rounded", _full(worst.get("rounded"))),
        (LARGEST, metrics.get("max_ulp")), ("median ULP", metrics.get("p50_ulp")),
        ("99th percentile ULP", metrics.get("p99_ulp")),
        ("scaled error (u x natural scale)", metrics.get("max_scaled")),
        ("elements cancelling / underflowing",
         f"{metrics['n_cancellation']} / {metrics['n_underflow']}" if "n_cancellation" in metrics else None),
        ("categories", metrics.get("categories")), ("semantic differences", record.get("semantic")),
        ("shape", record.get("shape")),
        ("layout", record.get("layout") if record.get("layout") != "contiguous" else None),
        ("oracle", _certificate(record.get("oracle") or {})),
    ]


def _full(value: object) -> object:
    return repr(float(value)) if isinstance(value, (int, float)) else value


def _certificate(oracle: dict) -> str:
    """Which oracle tiers decided how many elements, and the highest mpmath precision used."""
    tiers = [f"{name.replace('_', '-')} {count}" for name, count in oracle.items()
             if name != "max_precision" and count]
    precision = f"; up to {oracle['max_precision']} bits" if oracle.get("mpmath") else ""
    return ", ".join(tiers) + precision


def verdict(results: list[dict], findings: Sequence[Finding] | None, partial: Sequence[str] = ()) -> dict:
    """The report's headline; partial names the files whose run did not finish."""
    counts = status_counts(results)
    regressed = sum(f.severity == FAIL for f in findings or ())
    unexpected = counts["fail"] + counts["error"]
    parts = [f"{counts[s]} {STATUS_LABELS[s]}" for s in STATUSES if counts.get(s)]
    if findings is not None:
        parts.append(f"{regressed} regressed against the baseline")
    return {"ok": not unexpected and not regressed, "counts": counts, "text": ", ".join(parts),
            "unexpected": unexpected, "regressed": regressed, "baseline": findings is not None,
            "partial": list(partial)}


def grid(records: list[dict], capabilities: Sequence[dict] = ()) -> dict:
    """Backend/device x op rows, dtype columns: status counts and the largest ULP error of each cell,
    or why the backend cannot be asked it (the runs' capability tables). An op the backend offers in
    no dtype has no row."""
    cells: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for record in records:
        cells[(backend_name(record), record["op"], record["dtype"])].append(record)
    cannot = {(backend_name(entry), entry["op"], entry["dtype"]): entry["reason"] for entry in capabilities
              if "any" not in (entry["device"], entry["op"], entry["dtype"])}
    names = sorted({name for name, _, _ in [*cells, *cannot]})
    ops = ordered((op for _, op, _ in [*cells, *cannot]), OPS)
    dtypes = ordered((d for _, _, d in [*cells, *cannot]), DTYPES)
    rows = []
    for name in names:
        for op in ops:
            if not any(r["status"] not in ("unsupported", "skip")
                       for dtype in dtypes for r in cells.get((name, op, dtype), ())):
                continue  # an op the backend was asked in no dtype: the first screen names it
            row = []
            for dtype in dtypes:
                if (name, op, dtype) in cannot and (name, op, dtype) not in cells:
                    row.append({"state": "unsupported", "text": f"unsupported: {cannot[(name, op, dtype)]}",
                                "largest": "", "colour": ""})
                    continue
                group = cells.get((name, op, dtype), [])
                counts = status_counts(group)
                worst = max((u for u in map(_ulp, group) if u is not None), default=None)
                state = next((s for s in ("error", "fail", "known_failure", "pass", "unsupported", "skip")
                              if counts.get(s)), "none")
                text = ", ".join(f"{counts[s]} {STATUS_LABELS[s]}" for s in STATUSES if counts.get(s))
                row.append({"state": state, "text": text or "not run",
                            "largest": charts.number(worst) if worst is not None else "",
                            "colour": charts.ulp_colour(worst) if worst is not None else ""})
            rows.append({"backend": name, "op": op, "cells": row})
    return {"dtypes": dtypes, "rows": rows}


def _cell_title(record: dict, name: str) -> str:
    ulp = _ulp(record)
    ratio = (record.get("bound") or {}).get("ratio")
    text = f"{name} {record['op']} {record['dtype']} {_row_label(record)}: {record['status']}"
    if ulp is not None:
        text += f", largest error {charts.number(ulp)} ULP"
    if isinstance(ratio, (int, float)):
        text += f", worst for its budget {charts.number(ratio)}x the budget"
    if record.get("failure") == "semantic":
        text += ", values of the wrong kind (NaN or inf for a number)"
    if record["status"] != "pass" and record.get("message"):
        text += f" ({record['message']})"
    return text


def heatmaps(records: list[dict], details: Details, anchors: dict[int, str]) -> list[dict]:
    """One heatmap per op: a panel per dtype, a row per case (and cotangent), a column per backend
    that answered it. A backend that was asked nothing of an op or dtype (not offered, not run) has
    no column there, and an op that no backend answered has no heatmap."""
    answered = [r for r in records if r["status"] not in ("unsupported", "skip")]
    offered = {(backend_name(r), r["op"], r["dtype"]) for r in answered}
    ops = ordered((r["op"] for r in answered), OPS)
    found = []
    for op in ops:
        mine = [r for r in records if r["op"] == op and (backend_name(r), op, r["dtype"]) in offered]
        rows = list(dict.fromkeys(_row_label(r) for r in mine))
        panels = []
        for dtype in ordered((r["dtype"] for r in mine), DTYPES):
            cells = {}
            for record in (r for r in mine if r["dtype"] == dtype):
                name = backend_name(record)
                key = details.add("accuracy", f"{op} · {dtype} · {_row_label(record)} · {name}",
                                  _accuracy_rows(record), anchors.get(id(record)))
                cells[(_row_label(record), name)] = charts.Cell(_ulp(record), record["status"],
                                                                _cell_title(record, name), key,
                                                                record.get("failure"))
            panels.append(charts.Panel(dtype, sorted({column for _, column in cells}), cells))
        found.append({"op": op, "vjp": is_vjp(op), "rows": len(rows),
                      "svg": charts.heatmap(rows, panels, f"largest ULP error of {op} per case and backend")})
    return found


def _bin_colours() -> list[str]:
    # Each bin in the colour of its upper edge, the last one past every stop.
    return [charts.ulp_colour(edge) for edge in ULP_BIN_EDGES] + [charts.ulp_colour(math.inf)]


def distributions(records: list[dict]) -> list[dict]:
    """Per forward/gradient, backend/device and dtype: the summed ULP histograms of the elements."""
    sums: dict[tuple[bool, str, str], list[int]] = {}
    worst: dict[tuple[bool, str, str], float] = {}
    unusable: dict[tuple[bool, str, str], int] = defaultdict(int)
    for record in records:
        histogram = (record.get("metrics") or {}).get("ulp_histogram")
        if not histogram:
            continue
        group = (is_vjp(record["op"]), backend_name(record), record["dtype"])
        total = sums.setdefault(group, [0] * len(BIN_LABELS))
        if not _is_histogram(histogram):
            unusable[group] += 1
            continue
        for i, count in enumerate(histogram):
            total[i] += count
        worst[group] = max(worst.get(group, 0.0), _ulp(record) or 0.0)
    colours = _bin_colours()
    sections = []
    for vjp in (False, True):
        groups = [g for g in sums if g[0] == vjp]
        if not groups:
            continue
        names = sorted({g[1] for g in groups})
        dtypes = ordered((g[2] for g in groups), DTYPES)
        rows = []
        for name in names:
            row = []
            for dtype in dtypes:
                counts = sums.get((vjp, name, dtype))
                if counts is None:
                    row.append(None)
                    continue
                total = sum(counts)
                titles = [f"{count} elements{f' ({count / total:.3%})' if total else ''} with error "
                          f"{_bin_range(i)} ULP" for i, count in enumerate(counts)]
                labels = [text if i % 5 == 0 else "" for i, text in enumerate(BIN_LABELS)]
                left_out = unusable[(vjp, name, dtype)]
                note = f"{left_out} result(s) left out: a histogram not of counts" if left_out else ""
                row.append({"svg": charts.histogram(counts, labels, colours,
                                                    f"ULP errors of {name} in {dtype}", titles, note),
                            "elements": total, "rounded": counts[0] / total if total else None,
                            "worst": charts.number(worst.get((vjp, name, dtype)))})
            rows.append({"backend": name, "cells": row})
        sections.append({"vjp": vjp, "dtypes": dtypes, "rows": rows})
    return sections


def _is_histogram(histogram: object) -> bool:
    """A metrics.ulp_histogram the report can add up: counts (integers >= 0), at most one per bin."""
    return (isinstance(histogram, list) and len(histogram) <= len(BIN_LABELS)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in histogram))


def _bin_range(i: int) -> str:
    if i == 0:
        return "≤ 0.5"
    if i == len(ULP_BIN_EDGES):
        return f"> {charts.number(ULP_BIN_EDGES[-1])}"
    return f"in ({charts.number(ULP_BIN_EDGES[i - 1])}, {charts.number(ULP_BIN_EDGES[i])}]"


def invariants(records: list[dict]) -> dict:
    """Backend/device rows, invariant columns: per dtype, of the cases an invariant applies to, how
    many held it. One that does not apply to a case (ok: null, with a note why) counts apart; a
    broken one of a known deviation is known, not a failure."""
    tally: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: dict.fromkeys(("held", "broken", "known", "na"), 0)))
    names: list[str] = []
    for record in records:
        for invariant, outcome in (record.get("invariants") or {}).items():
            names.append(invariant)
            count = tally[(backend_name(record), invariant)][record["dtype"]]
            ok = outcome.get("ok")
            count["na" if ok is None else "held" if ok else
                  "known" if record["status"] == "known_failure" else "broken"] += 1
    invariants_seen = list(dict.fromkeys(names))
    backends = sorted({name for name, _ in tally})
    dtypes = ordered((d for counts in tally.values() for d in counts), DTYPES)
    rows = []
    for name in backends:
        for invariant in invariants_seen:
            counts = tally.get((name, invariant))
            if counts:
                rows.append({"backend": name, "invariant": invariant,
                             "cells": [_invariant_cell(counts[d]) if d in counts else None for d in dtypes]})
    broken = [r for r in records if r["status"] in ("fail", "error", "known_failure")]
    return {"dtypes": dtypes, "rows": rows, "broken": len(broken)}


def _invariant_cell(count: dict[str, int]) -> dict:
    applied = count["held"] + count["broken"] + count["known"]
    state = ("na" if not applied else "differs" if count["broken"] else "known" if count["known"]
             else "agrees")
    text = f"{count['held']}/{applied}" if applied else "n/a"
    if applied and count["na"]:
        text += f" ({count['na']} n/a)"
    title = (f"held in {count['held']} of the {applied} cases it applies to"
             + (f", broken in {count['known']} known deviations" if count["known"] else "")
             + (f"; does not apply to {count['na']}" if count["na"] else ""))
    return {"text": text, "state": state, "title": title}


def semantics(records: list[dict], headers: list[dict]) -> list[dict]:
    """Per backend: the special-value table, and the flush-to-zero probe of the run headers as one
    line per dtype ("float32: flushes (7/7 subnormal results returned as 0)")."""
    table = semantics_table(records)
    probes: dict[str, dict[str, dict]] = defaultdict(dict)
    for header in headers:
        for run in header.get("merged_from") or [header]:
            for name, dtypes in (run.get("flush_probe") or {}).items():
                probes[name].update(dtypes)
    return [{"backend": name, "flush_to_zero": entry["flush_to_zero"],
             "probe": [f"{dtype}: {_probe_line(probes[name][dtype])}"
                       for dtype in ordered(probes.get(name, {}), DTYPES)],
             "ops": list(next(iter(entry["rows"].values()), {})),
             "rows": [{"input": label, "cells": list(cells.values())}
                      for label, cells in entry["rows"].items()]}
            for name, entry in table.items()]


def _probe_line(ops: dict[str, dict]) -> str:
    """One dtype's probe (softmax_suite.suites.flushing) grouped by verdict: 'flushes (softmax 7/7, ...)'."""
    verdicts: dict[str, list[str]] = defaultdict(list)
    for op, evidence in ops.items():
        if "subnormal" not in evidence or "measured_on" in evidence:
            continue  # not measured, or log_softmax and logsumexp, which take softmax's verdict
        item = f"{op} {evidence['returned_zero']}/{evidence['subnormal']}"
        if evidence.get("softmax_flushes") and 2 * evidence["returned_zero"] <= evidence["subnormal"]:
            item += " and its softmax's y"
        verdicts["flushes" if evidence["flushes"] else "keeps subnormals"].append(item)
    return "; ".join(f"{verdict} ({', '.join(items)} subnormal results returned as 0)"
                     for verdict, items in verdicts.items()) or "not measured"


def agreement(records: list[dict]) -> list[dict]:
    """Per dtype, the backend x backend share of shared comparisons answered bit for bit alike."""
    matrix = agreement_matrix(records)
    pairs: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for entry in matrix:
        group_of = {name: i for i, names in enumerate(entry["groups"]) for name in names}
        for a in group_of:
            for b in group_of:
                tally = pairs[entry["dtype"]][(a, b)]
                tally[0] += group_of[a] == group_of[b]
                tally[1] += 1
    tables = []
    for dtype in ordered(pairs, DTYPES):
        names = sorted({a for a, _ in pairs[dtype]})
        rows = []
        for a in names:
            cells = []
            for b in names:
                agree, total = pairs[dtype].get((a, b), (0, 0))
                share = agree / total if total else None
                cells.append({"text": f"{agree}/{total}" if total else "-",
                              "share": share, "self": a == b})
            rows.append({"backend": a, "cells": cells})
        tables.append({"dtype": dtype, "names": names, "rows": rows})
    return tables


def throughput(records: list[dict], details: Details) -> list[dict]:
    """Per device: per op and dtype, GB/s against elements per backend, the copy as roofline."""
    passed = [r for r in records if r["status"] == "pass" and r.get("gb_per_s") is not None]
    names = sorted({r["backend"] for r in passed})
    devices = sorted({r.get("device", "-") for r in passed})
    sections = []
    for device in devices:
        mine = [r for r in passed if r.get("device", "-") == device]
        charts_ = []
        for op in ordered((r["op"] for r in mine), OPS):
            for dtype in ordered((r["dtype"] for r in mine if r["op"] == op), DTYPES):
                series = []
                for i, name in enumerate(names):
                    group = [r for r in mine
                             if (r["op"], r["dtype"], r["backend"]) == (op, dtype, name)]
                    for family, marker in (("row", "circle"), ("batch", "square")):
                        # line_chart sorts the points by size and says what it cannot draw
                        points = [r for r in group if _family(r) == family]
                        if not points:
                            continue
                        keys = [details.add("throughput", r.get("nodeid") or name, _throughput_rows(r))
                                for r in points]
                        sizes = [_number(r.get("elements")) for r in points]
                        speeds = [_number(r["gb_per_s"]) for r in points]
                        copies = [_number((r.get("copy") or {}).get("gb_per_s")) for r in points]
                        series.append(charts.Series(f"{name} {family}s",
                                                    list(zip(sizes, speeds, strict=True)),
                                                    charts.colour(i), marker=marker, keys=keys))
                        series.append(charts.Series(f"{name} copy ({family}s): the roofline",
                                                    list(zip(sizes, copies, strict=True)),
                                                    charts.colour(i), dashed=True))
                charts_.append(charts.line_chart(series, f"{op} {dtype}", "elements", "GB/s",
                                                 _point_title, GB_PER_S_AXIS_LIMIT))
        sections.append({"device": device, "charts": charts_,
                         "legend": [(name, charts.colour(i)) for i, name in enumerate(names)]})
    return sections


def _family(record: dict) -> str:
    """'batch' for a timed shape of more than one row, else 'row' (a record with no shape too)."""
    shape = record.get("shape") or [1]
    return "batch" if isinstance(shape[0], int) and shape[0] > 1 else "row"


def _point_title(series: charts.Series, x: float, y: float) -> str:
    return f"{series.name}, {charts.size_label(x)} elements: {charts.number(y)} GB/s"


def _throughput_rows(record: dict) -> list[tuple[str, object]]:
    timing = record.get("timing") or {}
    return [("status", record["status"]), ("shape", record.get("shape")),
            ("median time (s)", timing.get("median_s")), ("min time (s)", timing.get("min_s")),
            ("rounds", timing.get("rounds")), ("first call (s)", record.get("first_call_s")),
            ("GB/s of minimal traffic", record.get("gb_per_s")),
            ("elements/s", record.get("elements_per_s")),
            ("copy GB/s (same size, same run)", (record.get("copy") or {}).get("gb_per_s")),
            ("fraction of the copy", record.get("roofline_fraction")),
            ("cache regime", record.get("cache_regime")), ("test", record.get("nodeid"))]


def trade_off(accuracy: list[dict], speed: list[dict], details: Details) -> dict:
    """One point per backend/device, op and dtype: the median roofline fraction over the sizes
    timed, against the worst ULP error over the accuracy cases that are not known deviations
    (those are counted in the hover text: a float64 deviation of 1e15 ULP would squash every
    other point to the bottom)."""
    worst: dict[tuple, float] = {}
    known: dict[tuple, int] = defaultdict(int)
    for record in accuracy:
        ulp = _ulp(record)
        group = (backend_name(record), record["op"], record["dtype"])
        if record["status"] == "known_failure":
            known[group] += 1
        elif ulp is not None:
            worst[group] = max(worst.get(group, 0.0), ulp)
    fractions: dict[tuple, list[float]] = defaultdict(list)
    for record in speed:
        fraction = _number(record.get("roofline_fraction"))
        if record["status"] == "pass" and fraction is not None:
            group = (backend_name(record), record["op"], record["dtype"])
            fractions[group].append(fraction)
    names = sorted({g[0] for g in fractions})
    markers = dict(zip(DTYPES, ("circle", "square", "diamond", "circle", "square", "diamond"), strict=True))
    points = []
    for group in sorted(set(worst) & set(fractions)):
        name, op, dtype = group
        # A NaN would make the median depend on the order; where all are NaN the chart says so.
        measured = [f for f in fractions[group] if not math.isnan(f)]
        fraction = statistics.median(measured) if measured else math.nan
        # A worst error under 1/8 ULP draws at 1/8: the log axis has no zero.
        ulp = max(worst[group], 0.125)
        title = (f"{name} {op} {dtype}: {charts.number(fraction)} of the copy (median of "
                 f"{len(fractions[group])} sizes), max {charts.number(worst[group])} ULP"
                 + (f" ({known[group]} known deviations left out)" if known[group] else ""))
        key = details.add("trade_off", f"{name} · {op} · {dtype}", [
            ("median fraction of the copy", fraction), ("fractions", fractions[group]),
            ("max ULP over the cases", worst[group]),
            ("known deviations left out", known[group] or None)])
        points.append(charts.Point(fraction, ulp, charts.colour(names.index(name)),
                                   markers.get(dtype, "circle"), title, key, hollow=dtype == "float64"))
    svg = charts.scatter(points, "accuracy against speed", "fraction of the copy bandwidth (faster: right)",
                         "max ULP error (lower is better)", ULP_AXIS_LIMIT)
    return {"svg": svg, "legend": [(name, charts.colour(i)) for i, name in enumerate(names)]}


# Makes a result's reproducer script given the bytes it may embed; raises ValueError with the reason
# where none can be made. The runner passes its own (runner.reproduce.snippet): it rebuilds inputs
# with the catalogue, which the report, reading results files only, never does.
Reproducer = Callable[[dict, int], str]


def failures(results: list[dict], reproducer: Reproducer | None = None) -> tuple[list[dict], dict[int, str]]:
    """Every failed, erring or known-failing result with its reproducer and what went wrong in a few
    words, unexpected ones first (the worst first); and the anchor of each by id(record)."""
    order = {"fail": 0, "error": 0, "known_failure": 1}
    chosen = sorted((r for r in results if r["status"] in order),
                    key=lambda r: (order[r["status"]], check_of(r), tuple(-v for v in severity(r)),
                                   r.get("nodeid", "")))
    listed, anchors = [], {}
    for i, record in enumerate(chosen):
        anchor = f"failure-{i}"
        anchors[id(record)] = anchor
        code, why = None, "no reproducer: the report was made without softmax-suite's catalogue"
        if reproducer is not None:
            try:
                # A known deviation's inputs are rebuilt from the catalogue: there are many of them
                # (1965 in a default run), and their embedded bits were half of the report.
                limit = REPORT_EMBED_LIMIT if record["status"] != "known_failure" else 0
                code, why = reproducer(record, limit), None
            except ValueError as error:
                why = str(error)
        known = record.get("known_deviation") or {}
        loss = loss_words(record.get("loss"))
        listed.append({"anchor": anchor, "status": record["status"], "check": check_of(record),
                       "nodeid": record.get("nodeid") or "/".join(
                           str(record.get(k)) for k in ("backend", "device", "dtype", "op", "case")),
                       "backend": backend_name(record), "op": record.get("op"), "dtype": record.get("dtype"),
                       "what": describe(record) + (f" · loss {loss}" if loss else ""),
                       "message": record.get("message", ""),
                       "known": known.get("reason"), "link": known.get("link"),
                       "snippet": code, "why_no_snippet": why, "rerun": rerun_command(record),
                       "expected": record["status"] == "known_failure"})
    return listed, anchors


def environments(headers: list[dict]) -> list[dict]:
    """One entry per run (merged files list the runs they came from)."""
    runs = []
    for header in headers:
        for run in header.get("merged_from") or [header]:
            command = run.get("command") or []
            environment = run.get("environment") or {}
            runs.append({
                "file": run.get("file") or header.get("file"), "started": run.get("started"),
                "command": shlex.join(map(str, command)) if isinstance(command, list) else str(command),
                "pytest_args": shlex.join(map(str, run.get("pytest_args") or [])),
                "cwd": run.get("cwd"),
                "facts": [(k, run.get(k)) for k in ("python", "platform", "machine", "cpu_count")
                          if run.get(k) is not None]
                + [(k, environment.get(k)) for k in ("cpu", "cores") if environment.get(k)]
                + [("settings", _plain(run.get("settings") or {}))],
                "backends": [{"name": name, "version": info.get("version"),
                              "devices": ", ".join(info.get("devices") or []) or "none",
                              "absent": [f"{device}: {why}"
                                         for device, why in (info.get("absent_devices") or {}).items()],
                              "threads": _plain((environment.get("devices") or {}).get(f"{name}/cpu", {}))}
                             for name, info in sorted((run.get("backends") or {}).items())],
                "versions": sorted((environment.get("versions") or {}).items()),
            })
    return runs


def baseline_section(findings: Sequence[Finding] | None) -> dict | None:
    if findings is None:
        return None
    order = {FAIL: 0, WARN: 1, NOTE: 2}
    shown = sorted(findings, key=lambda f: (order[f.severity], f.key))
    return {"findings": [f.as_dict() for f in shown],
            "counts": {s: sum(f.severity == s for f in findings) for s in (FAIL, WARN, NOTE)}}


def not_run(results: list[dict], capabilities: Sequence[dict] = ()) -> list[tuple[str, str]]:
    """(backend or backend/device, why) of the backends and devices that could not be asked anything:
    not installed, absent here, or asked by name only (the capability tables; older files recorded
    them as skips)."""
    found: dict[str, str] = {}
    for entry in capabilities:
        if entry["op"] == "any" and entry.get("option", "opt_in") == "opt_in":
            name = entry["backend"] if entry["device"] == "any" else backend_name(entry)
            found.setdefault(name, entry["reason"])
    for record in results:
        if record["status"] == "skip" and record.get("dtype") not in DTYPES:
            found.setdefault(backend_name(record), record.get("message") or "skipped")
    return sorted(found.items())


def build(headers: list[dict], results: list[dict], findings: Sequence[Finding] | None = None,
          reproducer: Reproducer | None = None) -> dict:
    """Every section of the report from the runs' headers and result records."""
    by_check: dict[str, list[dict]] = defaultdict(list)
    for record in results:
        if record.get("dtype") in DTYPES:
            by_check[check_of(record)].append(record)
    accuracy = by_check["accuracy"]
    details = Details()
    failed, anchors = failures(results, reproducer)
    judged = [*accuracy, *by_check["invariants"]]
    known = group_known(failed, labeller(judged))
    forward = [r for r in accuracy if not is_vjp(r["op"])]
    capabilities = capabilities_of(headers)
    return {
        "verdict": {**verdict(results, findings, [h.get("file") or "?" for h in headers if h.get("partial")]),
                    "entries": len(known)},
        "checks": {check: verdict([r for r in results if check_of(r) == check], None)
                   for check in sorted({check_of(r) for r in results})},
        "not_run": not_run(results, capabilities),
        "choice": choices(judged, by_check["throughput"], capabilities, first_groups(known)),
        "runs": environments(headers),
        "grid": grid(accuracy, capabilities),
        "heatmaps": heatmaps(accuracy, details, anchors),
        "legend": charts.ulp_legend(),
        "distributions": distributions(accuracy),
        "semantics": semantics(accuracy, headers),
        "attention": attention(accuracy, capabilities),
        # The length ladder and every bit pattern: from the results with a "ladder" or "pattern" field
        # (any dtype, float8 included); empty for files without them.
        "ladder": ladder(results, details.add),
        "patterns": patterns(results),
        "invariants": invariants(by_check["invariants"]),
        "agreement": agreement(accuracy),
        "throughput": throughput(by_check["throughput"], details),
        "trade_off": trade_off(accuracy, by_check["throughput"], details),
        "baseline": baseline_section(findings),
        "failures": failed,
        "unexpected": sum(not f["expected"] for f in failed),
        "known": known,
        "details": details.as_dict(),
        "counts": {"forward": len(forward), "gradients": len(accuracy) - len(forward)},
    }


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["number"] = charts.number
    environment.filters["percent"] = lambda share: "-" if share is None else f"{share:.1%}"
    environment.filters["length_text"] = length_text
    return environment


# Unexpected failures shown open, reproducer and all, when the report opens; the rest open on a click.
OPEN_FAILURES = 20


def _packed(environment: jinja2.Environment, model: dict) -> Markup:
    """The parts drawn on demand (packing), in two packs: "parts" (by the id of the element that
    shows each, its markup; the click-to-explain table; which known deviation holds each failure's
    anchor) and "reproducers" (half the bytes, unpacked only when one is opened)."""
    macros = environment.get_template("parts.html.j2").module
    markup = {f"heatmap-{h['op']}": str(h["svg"]) for h in model["heatmaps"]}
    markup.update({group["id"]: str(macros.deviation_results(group)) for group in model["known"]})
    drawn = environment.get_template("patterns.html.j2").module
    markup.update({f"patterns-{d['dtype']}": str(drawn.charts(d)) for d in model["patterns"]["dtypes"]})
    reproducers = {f"reproduce-{f['anchor']}": str(macros.reproducer(f)) for f in model["failures"]}
    packs = {"parts": pack({"markup": markup, "details": model["details"], "where": holders(model["known"])}),
             "reproducers": pack({"markup": reproducers})}
    # Base64 and JSON's own quotes only: safe inside a script element.
    return Markup(json.dumps(packs))


def render(model: dict, title: str = "softmax-suite report") -> str:
    """The report's HTML: the template with the model, styles and script inlined, and the parts
    drawn on demand packed."""
    environment = _environment()
    template = environment.get_template("report.html.j2")
    style = "".join((TEMPLATES / name).read_text() for name in ("report.css", "ladder.css"))
    return template.render(model=model, title=title, style=Markup(style),
                           script=Markup((TEMPLATES / "report.js").read_text()),
                           packed=_packed(environment, model), open_failures=OPEN_FAILURES)


def write_report(headers: list[dict], results: list[dict], output: str | Path,
                 findings: Sequence[Finding] | None = None, reproducer: Reproducer | None = None) -> Path:
    output = Path(output)
    make_folder(output)
    # errors="replace": a lone surrogate (a path decoded with surrogateescape, a "\udcff" in a
    # results file's JSON) has no UTF-8 and would leave no report at all; it is written as "?".
    output.write_text(render(build(headers, results, findings, reproducer)), encoding="utf-8",
                      errors="replace")
    return output
