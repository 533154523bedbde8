"""The safe-length table: per backend and device, dtype and op, the longest row of the length
ladder (suites/ladder.py) it gets right and the first length where it fails, read from the
`ladder` field of the results ({"length": 65520, "rows": "uniform"}; docs/report.md).

The rule. A rung (one length) is right when every measured ladder accuracy result at that length
for that backend, device, dtype and op (every row kind, every cotangent) passed; it is wrong when any of
them failed, erred or is a known deviation (a known deviation is still a wrong answer: the table
says how long a row is *right*; it marks such a rung as known). Unsupported and skipped results
are not measured, and a rung with none measured is left out. "Safe up to L": the longest rung L
such that every measured rung up to L is right (none where the shortest rung is wrong); "fails
at F": the shortest wrong rung. A right rung above F makes the ladder not monotone, and is named.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from softmax_suite.reports.charts import number
from softmax_suite.reports.semantics import DTYPES, OPS, backend_name, ordered
from softmax_suite.reports.verdict import severity

MEASURED = ("pass", "fail", "known_failure", "error")
UNEXPECTED = ("fail", "error")
ROW_KINDS = ("uniform", "near_uniform", "random")
# A rung's state: right, wrong in a way that fails the run, wrong only in known deviations.
RIGHT, WRONG, KNOWN = "pass", "fail", "known"
# The semantic message of suites.judging: "... got -inf, the policy expects 11.09035..."
GOT = re.compile(r"got (\S+?),? the policy expects ([^\s;\]]+)")
# How many backend/op names the headline lists per dtype before "and n more".
NAMED = 6
# explain(kind, title, rows) -> the index of the rows in the report's click-to-explain table.
Explain = Callable[[str, str, Sequence[tuple[str, object]]], int]


def length_of(record: dict) -> int | None:
    """The ladder length of a result, or None: not a ladder result (older files, other cases), or
    a `ladder` field without a positive integer length."""
    ladder = record.get("ladder")
    length = ladder.get("length") if isinstance(ladder, dict) else None
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None


def rows_of(record: dict) -> str:
    rows = (record.get("ladder") or {}).get("rows")
    return rows if isinstance(rows, str) and rows else "?"


def length_text(length: int | None) -> str:
    """65520 as "65 520" (a narrow no-break space between the thousands: it never wraps)."""
    return "-" if length is None else f"{length:,}".replace(",", "\u202f")


SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def short_length(length: int) -> str:
    """A length for a table cell: past 2^16 a power of two (or one past it) as 2¹⁷, 2²⁴+1, where
    the digits would not fit; the rest as length_text writes them."""
    for extra, suffix in ((0, ""), (1, "+1")):
        power = (length - extra).bit_length() - 1
        if length - extra == 1 << power and power > 16:
            return "2" + str(power).translate(SUPERSCRIPT) + suffix
    return length_text(length)


def _number_text(text: str) -> str:
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def why(record: dict) -> str:
    """What one wrong result got wrong, in a few words: "-inf where 11.09" or "3 x nan_unexpected"
    (a semantic difference), "12 ULP, budget 4.6" (too far off), "error: ..." (raised, timed out)."""
    failure = record.get("failure")
    semantic = record.get("semantic") if isinstance(record.get("semantic"), dict) else {}
    if failure == "semantic" or (semantic and failure != "accuracy"):
        found = GOT.search(record.get("message") or "")
        if found:
            return f"{_number_text(found.group(1))} where {_number_text(found.group(2))}"
        if semantic:
            return ", ".join(f"{count} x {kind}" for kind, count in semantic.items())
    if failure == "accuracy":
        ulp = ((record.get("metrics") or {}).get("worst") or {}).get("ulp")
        budget = (record.get("bound") or {}).get("budget_ulp")
        if ulp is not None:
            return f"{number(ulp)} ULP, budget {number(budget)}"
    if failure == "invariant":
        broken = [name for name, held in (record.get("invariants") or {}).items()
                  if isinstance(held, dict) and not held.get("ok", True)]
        return "broke " + ", ".join(broken) if broken else "an invariant broke"
    message = (record.get("message") or failure or record.get("status") or "?").split(";")[0]
    message = message.removeprefix("known deviation: ")
    head = "error: " if record.get("status") == "error" or failure in ("error", "timeout", "crash") else ""
    return head + textwrap.shorten(message, 48, placeholder="...")


@dataclass(frozen=True)
class Rung:
    """One length's measured results of one backend, device, dtype and op."""

    length: int
    state: str
    results: tuple[dict, ...]

    @property
    def wrong(self) -> list[dict]:
        return [r for r in self.results if r["status"] != "pass"]

    def why(self) -> str:
        """The wrong row kinds and, for each, what its worst result got wrong."""
        by_rows: dict[str, list[dict]] = defaultdict(list)
        for record in self.wrong:
            by_rows[rows_of(record)].append(record)
        parts = []
        for rows in ordered(by_rows, ROW_KINDS):
            worst = max(by_rows[rows], key=_badness)
            known = " (known)" if worst["status"] == "known_failure" else ""
            parts.append(f"{rows}: {why(worst)}{known}")
        return "; ".join(parts)


def _badness(record: dict) -> tuple:
    # An unexpected result before a known one, then the worst by the verdict's measure.
    return record["status"] in UNEXPECTED, severity(record)


def rungs(records: Iterable[dict]) -> list[Rung]:
    """The measured rungs of one backend, device, dtype and op, shortest first: right when every
    measured result passed, known when every wrong one is a known deviation, else wrong."""
    by_length: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        length = length_of(record)
        if length is not None and record.get("status") in MEASURED:
            by_length[length].append(record)
    found = []
    for length in sorted(by_length):
        results = tuple(by_length[length])
        statuses = {r["status"] for r in results}
        state = RIGHT if statuses == {"pass"} else (WRONG if statuses & set(UNEXPECTED) else KNOWN)
        found.append(Rung(length, state, results))
    return found


@dataclass(frozen=True)
class Safety:
    """The safe-length rule's answer for one backend, device, dtype and op."""

    rungs: tuple[Rung, ...]

    @property
    def safe_up_to(self) -> int | None:
        """The longest rung L with every measured rung up to L right; None where the shortest is wrong
        (or nothing was measured)."""
        safe = None
        for rung in self.rungs:
            if rung.state != RIGHT:
                break
            safe = rung.length
        return safe

    @property
    def first_wrong(self) -> Rung | None:
        return next((rung for rung in self.rungs if rung.state != RIGHT), None)

    @property
    def fails_at(self) -> int | None:
        rung = self.first_wrong
        return rung.length if rung else None

    @property
    def right_again(self) -> list[int]:
        """The right rungs above the first wrong one (the ladder is then not monotone)."""
        fails_at = self.fails_at
        return [] if fails_at is None else [r.length for r in self.rungs
                                            if r.length > fails_at and r.state == RIGHT]

    @property
    def longest(self) -> int | None:
        return self.rungs[-1].length if self.rungs else None

    @property
    def state(self) -> str:
        """"none" (nothing measured), "pass" (every rung right), "fail" (some rung wrong unexpectedly)
        or "known" (wrong only in known deviations)."""
        if not self.rungs:
            return "none"
        states = {rung.state for rung in self.rungs}
        return WRONG if WRONG in states else (KNOWN if KNOWN in states else RIGHT)

    def verdict(self) -> str:
        """"safe up to 65 519, fails at 65 520 (uniform: -inf where 11.09)" and its variants."""
        if not self.rungs:
            return "not measured (unsupported or skipped at every length)"
        rung = self.first_wrong
        if rung is None:
            return f"safe to the longest tried ({length_text(self.longest)})"
        known = " (a known deviation)" if rung.state == KNOWN else ""
        text = f"fails at {length_text(rung.length)}{known} ({rung.why()})"
        if self.safe_up_to is not None:
            text = f"safe up to {length_text(self.safe_up_to)}, {text}"
        else:
            text += ": no length tried is right"
        again = self.right_again
        if again:
            text += f"; right again at {', '.join(map(length_text, again))} (not monotone)"
        return text


def safety(records: Iterable[dict]) -> Safety:
    return Safety(tuple(rungs(records)))


def _group(record: dict) -> tuple[str, str, str]:
    return backend_name(record), record.get("dtype") or "?", record.get("op") or "?"


def groups(records: Iterable[dict]) -> dict[tuple[str, str, str], Safety]:
    """The safety of each (backend/device, dtype, op) with ladder results."""
    by_group: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for record in records:
        # Accuracy only: an op's invariants may compare it with another op (exp(log_softmax) with
        # softmax), and a wrong softmax would make log_softmax look wrong.
        if length_of(record) is not None and record.get("check", "accuracy") == "accuracy":
            by_group[_group(record)].append(record)
    return {key: safety(found) for key, found in by_group.items()}


def _cell(name: str, dtype: str, op: str, found: Safety, lengths: list[int],
          explain: Explain | None) -> dict:
    sentence = f"{dtype} {op} on {name}: {found.verdict()}"
    rung = found.first_wrong
    mark = "⚑" if rung is not None and rung.state == KNOWN else "✗"
    if not found.rungs:
        first, second = "–", "not measured"
    elif rung is None:
        first, second = f"✓ ≤ {short_length(found.longest)}", "all right"
    elif found.safe_up_to is None:
        first, second = "none right", f"{mark} {short_length(rung.length)}"
    else:
        first, second = f"≤ {short_length(found.safe_up_to)}", f"{mark} {short_length(rung.length)}"
    measured = {r.length: r for r in found.rungs}
    strip = []
    for length in lengths:
        at = measured.get(length)
        state = at.state if at else "none"
        what = {RIGHT: "right", WRONG: "wrong", KNOWN: "wrong (known deviation)"}.get(state, "not measured")
        detail = f": {at.why()}" if at and at.state != RIGHT else ""
        strip.append({"state": state, "title": f"{length_text(length)}: {what}{detail}"})
    key = None
    if explain is not None and found.rungs:
        known = sorted({(r.get("known_deviation") or {}).get("reason") or "" for rung in found.rungs
                        for r in rung.wrong if r["status"] == "known_failure"} - {""})
        key = explain("ladder", f"{dtype} · {op} · {name}: how long a row", [
            ("verdict", found.verdict()),
            ("safe up to", length_text(found.safe_up_to) if found.safe_up_to else "no length tried"),
            ("fails at", length_text(rung.length) if rung else "no length tried"),
            ("wrong there", rung.why() if rung else None),
            ("right again above it (not monotone)", ", ".join(map(length_text, found.right_again))),
            ("every length measured", ", ".join(
                f"{length_text(r.length)} {'✓' if r.state == RIGHT else ('⚑' if r.state == KNOWN else '✗')}"
                for r in found.rungs)),
            ("known deviations", "; ".join(known)),
            ("results", f"{sum(len(r.results) for r in found.rungs)} measured over "
                        f"{len(found.rungs)} lengths"),
        ])
    return {"state": found.state, "first": first, "second": second, "again": bool(found.right_again),
            "title": sentence, "key": key, "rungs": strip}


def _headline(dtype: str, found: dict[tuple[str, str, str], Safety]) -> str:
    """One sentence per dtype: the shortest length any backend gets wrong, and who."""
    mine = {key: s for key, s in found.items() if key[1] == dtype and s.rungs}
    longest = max(s.longest for s in mine.values())
    wrong = {key: s for key, s in mine.items() if s.fails_at is not None}
    if not wrong:
        return f"{dtype}: every backend and op right at every length tried (up to {length_text(longest)})."
    shortest = min(s.fails_at for s in wrong.values())
    by_backend: dict[str, list[str]] = defaultdict(list)
    for (name, _, op), s in sorted(wrong.items(), key=lambda item: (item[0][0], OPS.index(item[0][2])
                                                                     if item[0][2] in OPS else len(OPS))):
        if s.fails_at == shortest:
            by_backend[name].append(op + (" ⚑" if s.first_wrong.state == KNOWN else ""))
    names = [f"{name} {', '.join(ops)}" for name, ops in by_backend.items()]
    count = sum(map(len, by_backend.values()))
    listed = "; ".join(names[:NAMED])
    if len(names) > NAMED:
        listed += f"; and {len(names) - NAMED} more backends"
    right = sum(s.fails_at is None for s in mine.values())
    return (f"{dtype}: the shortest row gotten wrong has {length_text(shortest)} elements "
            f"({count} backend/op{'s' if count != 1 else ''}: {listed}); {right} of {len(mine)} right at "
            f"every length tried.")


def ladder(records: Sequence[dict], explain: Explain | None = None) -> dict:
    """The section's model: {"tables": one per backend/device {"backend", "ops", "rows": [{"dtype",
    "cells"}], "unmeasured": its dtypes measured at no length, "state"}, "headline": a sentence per
    dtype, "lengths": every length measured, "unmeasured": backends measured at no length,
    "results": the number of ladder results measured}; no tables where no result is a ladder
    result. explain(kind, title, rows) adds a cell's details to the click-to-explain table and
    returns its index (html.Details.add)."""
    found = groups(records)
    if not found:
        return {"tables": [], "headline": [], "lengths": [], "unmeasured": [], "results": 0}
    lengths = sorted({rung.length for s in found.values() for rung in s.rungs})
    ops = ordered((op for _, _, op in found), OPS)
    dtypes = ordered((dtype for _, dtype, _ in found), DTYPES)
    tables, nowhere = [], []
    for name in sorted({name for name, _, _ in found}):
        rows, unmeasured = [], []
        for dtype in dtypes:
            cells = [_cell(name, dtype, op, found[(name, dtype, op)], lengths, explain)
                     if (name, dtype, op) in found else None for op in ops]
            if any(cell and cell["state"] != "none" for cell in cells):
                rows.append({"dtype": dtype, "cells": cells})
            elif any(cells):
                unmeasured.append(dtype)  # unsupported or skipped at every length of every op
        if not rows:
            nowhere.append(name)
            continue
        states = [c["state"] for row in rows for c in row["cells"] if c]
        tables.append({"backend": name, "ops": ops, "rows": rows, "unmeasured": unmeasured,
                       "state": WRONG if WRONG in states else (KNOWN if KNOWN in states else RIGHT)})
    headline = [_headline(dtype, found) for dtype in dtypes
                if any(key[1] == dtype and s.rungs for key, s in found.items())]
    return {"tables": tables, "headline": headline, "lengths": lengths, "unmeasured": nowhere,
            "results": sum(len(rung.results) for s in found.values() for rung in s.rungs)}
