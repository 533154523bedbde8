"""The capability table: what a backend cannot answer is decided before collection, once per (backend,
device, op, dtype) with why, and is never a test item; the verdict, the report and the gate read it."""

from __future__ import annotations

import json

import pytest

from softmax_suite.reports import gate as gate_rules
from softmax_suite.reports.gate import GateRules
from softmax_suite.reports.html import build
from softmax_suite.reports.results import capabilities_of
from softmax_suite.reports.verdict import format_verdict
from softmax_suite.runner.cli import main

pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp("capabilities")
    # scipy has no VJPs; cupy is not installed here (or has no bfloat16 where it is).
    # The four standard dtypes: what numpy and scipy answer in float8 is tests/test_float8.py's.
    code = main(["run", "--backend", "numpy,scipy", "--case", "glossary", "--throughput", "off", "-n", "0",
                 "--dtype", "float16,bfloat16,float32,float64", "--out", str(out)])
    assert code == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return lines[0], [line for line in lines if line["kind"] == "result"]


def test_only_answerable_questions_are_items(run) -> None:
    _, records = run
    assert {r["status"] for r in records} <= {"pass", "known_failure"}
    # numpy: 3 forward ops, 3 VJPs x the glossary's 4 cotangent kinds, 3 invariants, in 4 dtypes;
    # scipy: the 3 forward ops and their invariants only.
    assert sum(r["backend"] == "numpy" for r in records) == 4 * (3 + 3 * 4 + 3)
    assert sum(r["backend"] == "scipy" for r in records) == 4 * (3 + 3)


def test_the_table_holds_each_unanswerable_question_once_with_why(run) -> None:
    header, _ = run
    table = header["capabilities"]
    # scipy's 3 VJPs in 4 dtypes, each once (not once per case, cotangent or check).
    assert len(table) == 3 * 4
    assert {(e["backend"], e["device"], e["op"]) for e in table} == {
        ("scipy", "cpu", op) for op in ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")}
    assert {e["reason"] for e in table} == {f"scipy has no {op}" for op in
                                            ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")}


def test_the_verdict_and_the_report_name_what_could_not_be_asked(run) -> None:
    header, records = run
    verdict = format_verdict(records, capabilities=header["capabilities"])
    assert "not run: scipy: softmax_vjp, log_softmax_vjp, logsumexp_vjp" in verdict
    model = build([header], records)
    # The report draws no row for an op a backend lacks; its first screen says so, with why, in
    # each of the 4 dtypes.
    assert not [row for row in model["grid"]["rows"]
                if row["backend"] == "scipy/cpu" and row["op"] == "softmax_vjp"]
    absent = [entry for table in model["choice"]["dtypes"] for row in table["rows"]
              if row["op"] == "softmax_vjp" for entry in row["absent"]]
    assert absent == [("scipy", "scipy has no softmax_vjp")] * 4
    # A backend that is not installed is one line of the report's not-run list, not an item.
    absent = {"backend": "cupy", "device": "any", "op": "any", "dtype": "any",
              "reason": "cupy is not installed"}
    model = build([{**header, "capabilities": [absent]}], records)
    assert model["not_run"] == [("cupy", "cupy is not installed")]


def test_the_gate_says_why_a_baseline_result_cannot_be_asked_here() -> None:
    entry = {"status": "pass", "metric": "max_ulp", "value": 0.5}
    baseline = {"accuracy/torch/cuda/float32/softmax/glossary": entry,
                "accuracy/torch/cpu/float32/softmax/glossary": entry}
    current = {"accuracy/torch/cpu/float32/softmax/glossary": entry}
    absent = [{"backend": "torch", "device": "cuda", "op": "any", "dtype": "any",
               "reason": "torch.cuda.is_available() is False"}]
    findings = gate_rules.gate(baseline, current, GateRules(), capabilities=absent)
    (finding,) = [f for f in findings if f.key.startswith("accuracy/torch/cuda")]
    assert finding.severity == gate_rules.WARN
    assert finding.rule == "cannot be asked here: torch.cuda.is_available() is False"
    # Without the table the same result is only "missing from the run".
    (plain,) = gate_rules.gate(baseline, current, GateRules())
    assert plain.rule == "missing from the run"


def test_a_merge_keeps_each_hosts_table(run) -> None:
    header, _ = run

    merged = {"kind": "run", "merged_from": [header, {**header, "capabilities": []}]}
    assert capabilities_of([merged]) == header["capabilities"]


def test_a_backend_without_a_copy_is_not_timed_and_rows_past_its_length_are_not_asked() -> None:
    from dataclasses import replace

    from softmax_suite.backends.numpy_backend import load
    from softmax_suite.runner.targets import Selection, capabilities, questions
    from softmax_suite.suites.cases import CASES
    from softmax_suite.suites.throughput import sweep

    numpy = load()
    shapes = sweep("quick")  # rows of 4096 and 2^20, and 4096 x 256
    selection = Selection(devices=(), dtypes=("float32",), cases=[CASES["glossary"]], cotangents=(),
                          shapes=shapes)
    timed = {q.target.case for q in questions("numpy", numpy, "softmax", "throughput", selection)}
    assert timed == {shape.name for shape in shapes}
    # A kernel whose rows stop at 4096 is timed at the sizes it takes; one without a copy is not timed.
    short = replace(numpy, max_length=4096)
    assert {q.target.case for q in questions("short", short, "softmax", "throughput", selection)} == {
        "row_n4k", "batch_4096x256"}
    uncopied = replace(numpy, copy=None)
    assert not list(questions("uncopied", uncopied, "softmax", "throughput", selection))
    (entry,) = capabilities("uncopied", uncopied, ["softmax"], selection)
    assert entry["option"] == "throughput"
    assert "no copy to measure the attainable bandwidth" in entry["reason"]


def test_the_tables_keep_a_backends_limits_apart() -> None:
    # One backend and device, three entries of op and dtype "any": its throughput, its row length and
    # its finite-only limit. Read back from a header they stay three, and the verdict groups the
    # backends that share them in one phrase.
    def limits(name: str) -> list[dict]:
        base = {"backend": name, "device": "cpu", "op": "any", "dtype": "any"}
        return [{**base, "option": "throughput", "reason": f"{name} has no copy"},
                {**base, "option": "length", "limit": 4096, "reason": f"{name} takes rows of at most 4096"},
                {**base, "option": "finite", "reason": f"{name} takes only finite kept entries"}]

    header = {"kind": "run", "schema": 1, "capabilities": limits("a") + limits("b")}
    entries = capabilities_of([header])
    assert len(entries) == 6
    verdict = " ".join(format_verdict([], capabilities=entries).split())
    assert "not run: a, b: not timed; rows over 4096; cases with inf or NaN" in verdict


def test_an_opt_in_backend_is_not_in_the_default_run_and_the_verdict_says_how_to_ask(tmp_path) -> None:
    # torch-compile compiles every op, dtype and option set (10 minutes cold on 2 cores): the
    # default run asks it only by name, and says so once, as a whole backend "not run".
    code = main(["run", "--case", "glossary", "--op", "softmax", "--dtype", "float32", "--throughput", "off",
                 "-n", "0", "--out", str(tmp_path)])
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    records = [line for line in lines if line["kind"] == "result"]
    ran = {r["backend"] for r in records}
    assert "numpy" in ran and "torch-compile" not in ran
    entries = [e for e in lines[0]["capabilities"] if e["backend"] == "torch-compile"]
    assert [(e["device"], e["op"], e["dtype"]) for e in entries] == [("any", "any", "any")]
    assert "--backend torch-compile" in entries[0]["reason"]
    assert "--backend torch-compile" in format_verdict(records, capabilities=lines[0]["capabilities"])
    assert ("torch-compile", entries[0]["reason"]) in build([lines[0]], records)["not_run"]
