"""The cross-backend agreement matrix: which backends return bit-for-bit identical outputs for the
same question (equal output digests), beside each one's distance from the oracle."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import combinations

from softmax_suite.reports.semantics import DTYPES, OPS, backend_name, is_accuracy, ordered
from softmax_suite.reports.text import grid


def agreement_matrix(results: Iterable[dict]) -> list[dict]:
    """One entry per (op, dtype, case, cotangent) that two or more backends answered with an
    output: {"op", "dtype", "case", "cotangent", "groups": [[names with one digest], ...]
    (largest first), "max_ulp": {name: float | None}, "status": {name: str}}. Records
    without a digest (error, skip, unsupported) are left out; names are backend/device."""
    answers: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for record in results:
        if is_accuracy(record) and record.get("output_sha256"):
            key = (record["op"], record["dtype"], record["case"], record.get("cotangent"))
            # A name seen twice (merged results files) keeps its last record.
            answers[key][backend_name(record)] = record
    keys = [key for key, by_name in answers.items() if len(by_name) >= 2]
    ops = ordered((k[0] for k in keys), OPS)
    dtypes = ordered((k[1] for k in keys), DTYPES)
    cases = list(dict.fromkeys(k[2] for k in keys))
    keys.sort(key=lambda k: (ops.index(k[0]), dtypes.index(k[1]), cases.index(k[2]), k[3] or ""))
    matrix = []
    for key in keys:
        by_name = answers[key]
        digests: dict[str, list[str]] = defaultdict(list)
        for name in sorted(by_name):
            digests[by_name[name]["output_sha256"]].append(name)
        op, dtype, case, cotangent = key
        matrix.append({
            "op": op, "dtype": dtype, "case": case, "cotangent": cotangent,
            "groups": sorted(digests.values(), key=lambda names: (-len(names), names[0])),
            "max_ulp": {name: (r.get("metrics") or {}).get("max_ulp") for name, r in sorted(by_name.items())},
            "status": {name: r["status"] for name, r in sorted(by_name.items())},
        })
    return matrix


def _ratio(agree: int, total: int) -> str:
    return f"{agree}/{total}" if total else "-"


def format_agreement(matrix: list[dict]) -> str:
    """Two small tables: per op and dtype, in how many comparisons every backend agrees bit for
    bit; per pair of backends and dtype, in how many of the comparisons they share they agree."""
    if not matrix:
        return "no question answered by two or more backends: nothing to compare"
    ops = ordered((e["op"] for e in matrix), OPS)
    dtypes = ordered((e["dtype"] for e in matrix), DTYPES)
    unanimous: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    pairs: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for entry in matrix:
        tally = unanimous[(entry["op"], entry["dtype"])]
        tally[0] += len(entry["groups"]) == 1
        tally[1] += 1
        group_of = {name: i for i, names in enumerate(entry["groups"]) for name in names}
        for a, b in combinations(sorted(group_of), 2):
            for column in (entry["dtype"], "all"):
                pairs[(a, b)][column][0] += group_of[a] == group_of[b]
                pairs[(a, b)][column][1] += 1
    by_op = [["op", *dtypes]] + [[op, *(_ratio(*unanimous.get((op, d), (0, 0))) for d in dtypes)]
                                 for op in ops]
    by_pair = [["pair", *dtypes, "all"]] + [
        [f"{a} = {b}", *(_ratio(*counts.get(d, (0, 0))) for d in [*dtypes, "all"])]
        for (a, b), counts in sorted(pairs.items())]
    lines = ["bit-for-bit agreement, every backend alike (comparisons: case x cotangent "
             "answered by 2+ backends)", *grid(by_op),
             "", "bit-for-bit agreement by pair (of the comparisons both answered)", *grid(by_pair)]
    return "\n".join(lines)
