"""The results file's schema (softmax_suite.records): docs/results.schema.json is the one the
TypedDicts make, every line of a real run is valid under it, and the writer and the reader refuse
a line that breaks it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from softmax_suite.records import SCHEMA_VERSION, json_schema, problem
from softmax_suite.reports.results import ResultsFileError, ResultsWriter, read_results

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "docs" / "results.schema.json"
REGENERATE = ('python -c "import json; from softmax_suite.records import json_schema; '
              "print(json.dumps(json_schema(), indent=2))\" > docs/results.schema.json")


def test_the_docs_schema_is_the_one_the_records_make() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), f"regenerate it: {REGENERATE}"


def test_every_line_of_a_real_run_is_valid(tmp_path: Path) -> None:
    # accuracy, invariants and throughput results, unsupported ops, the tables and the end line
    done = subprocess.run(
        [sys.executable, "-m", "softmax_suite.runner.cli", "run", "--out", str(tmp_path), "-n", "0",
         "--backend", "numpy,scipy,tests.lazy_backend:WaitingSoftmax", "--case", "glossary,nan",
         "--dtype", "float32,bfloat16", "--op", "softmax,logsumexp_vjp"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    lines = [json.loads(text) for name in ("results.jsonl", "throughput.jsonl")
             for text in (tmp_path / name).read_text().splitlines()]
    kinds = {line["kind"] for line in lines}
    checks = {line.get("check") for line in lines if line["kind"] == "result"}
    assert kinds == {"run", "result", "table", "end"} and checks == {"accuracy", "invariants", "throughput"}
    for line in lines:
        errors = [error.message for error in validator.iter_errors(line)]
        assert not errors, (line.get("nodeid"), errors[:3])
        assert problem(line) is None


def test_a_field_the_schema_does_not_name_is_refused_by_it() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    result = {"kind": "result", "status": "pass", "backend": "numpy", "op": "softmax"}
    assert validator.is_valid(result)
    assert not validator.is_valid({**result, "max_ulp_new": 1.0})
    assert not validator.is_valid({**result, "gb_per_s": "fast"})
    assert validator.is_valid({**result, "gb_per_s": "inf"})


def test_the_writer_refuses_a_line_it_could_not_read_back(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "r.jsonl", {"command": ["x"]})
    with pytest.raises(ValueError, match="'status' is 'passed'"):
        writer.write({"status": "passed", "backend": "numpy", "op": "softmax"})
    writer.write({"status": "pass", "backend": "numpy", "op": "softmax", "check": "accuracy"})
    writer.finish([{"status": "pass"}])
    writer.close()
    header, results = read_results(tmp_path / "r.jsonl")
    assert header["schema"] == SCHEMA_VERSION and len(results) == 1


def test_the_reader_names_the_line_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"kind": "run", "schema": SCHEMA_VERSION}) + "\n"
                    + json.dumps({"kind": "result", "status": "pass", "backend": "numpy", "op": "softmax",
                                  "axis": "last"}) + "\n")
    with pytest.raises(ResultsFileError, match=r"r.jsonl:2: a result line whose 'axis' is 'last'"):
        read_results(path)
